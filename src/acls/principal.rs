//! Who a connection is, in Kafka's terms. SASL listeners: `User:<sasl user>`. SSL
//! listeners that require a client certificate: `User:<subject DN>`, the DN written as
//! Java's `X500Principal.getName()` does (RFC 2253: most specific first,
//! `CN=door-7,OU=devices,O=acme`), then rewritten by `ssl_principal_mapping_rules` in
//! Kafka's syntax (`RULE:^CN=(.*?),OU=devices.*$/$1/L,DEFAULT`). Anyone else:
//! `User:ANONYMOUS`.

use regex::Regex;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Kafka's `ssl.principal.mapping.rules`: the first rule whose pattern matches the whole
/// DN rewrites it; DEFAULT keeps the DN as it is; no matching rule refuses the client.
#[derive(Debug, Clone)]
pub struct PrincipalMapping {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Rewrite {
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Default for PrincipalMapping {
    fn default() -> Self {
        PrincipalMapping {
            rules: vec![Rule::Default],
        }
    }
}

/// Reads up to an unescaped `/`; `\/` stands for `/`.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if text[i + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl PrincipalMapping {
    pub fn parse(text: &str) -> Result<PrincipalMapping, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        let group_reference = Regex::new(r"\$(\d+)").map_err(|e| e.to_string())?;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) =
                    until_slash(after).ok_or("a RULE needs RULE:pattern/replacement/")?;
                let (replacement, after) =
                    until_slash(after).ok_or("a RULE needs RULE:pattern/replacement/")?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern {pattern:?}: {e}"))?;
                // Java's `$1` is the regex crate's `${1}` (`$1a` would name a group "1a").
                let replacement = group_reference
                    .replace_all(&replacement, "$${$1}")
                    .into_owned();
                rules.push(Rule::Rewrite {
                    pattern,
                    replacement,
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "unexpected {:?}: rules are RULE:pattern/replacement/[L|U] or DEFAULT, separated by commas",
                    rest.chars().take(20).collect::<String>()
                ));
            }
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after.trim_start();
            } else if !rest.is_empty() {
                return Err(format!("expected a comma before {rest:?}"));
            }
        }
        if rules.is_empty() {
            return Err("no rules (DEFAULT keeps the certificate's DN)".into());
        }
        Ok(PrincipalMapping { rules })
    }

    /// The principal name for a certificate DN, or `None` when no rule applies.
    pub fn apply(&self, dn: &str) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            Rule::Default => Some(dn.to_string()),
            Rule::Rewrite {
                pattern,
                replacement,
                case,
            } => pattern.is_match(dn).then(|| {
                let name = pattern.replace(dn, replacement.as_str()).into_owned();
                match case {
                    Case::Keep => name,
                    Case::Lower => name.to_lowercase(),
                    Case::Upper => name.to_uppercase(),
                }
            }),
        })
    }
}

/// RFC 2253 keywords Java's `X500Principal` writes (any other attribute: its OID).
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject DN of a DER certificate, RFC 2253 style.
pub fn certificate_dn(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let rdns: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    match (keyword(&oid), attr.as_str()) {
                        (Some(k), Ok(v)) => format!("{k}={}", escape(v)),
                        (None, Ok(v)) => format!("{oid}={}", escape(v)),
                        (_, Err(_)) => {
                            let hex: String = attr
                                .attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            format!("{oid}=#{hex}")
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // Most specific first, as RFC 2253 (and Kafka) write it.
    Ok(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_style_rules_rewrite_the_dn() {
        let rules = PrincipalMapping::parse(
            r"RULE:^CN=(.*?),OU=devices,.*$/$1/L, RULE:^CN=([^,]*),OU=ops\/admin.*$/$1-admin/,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules.apply("CN=Door-7,OU=devices,O=acme").as_deref(),
            Some("door-7")
        );
        assert_eq!(
            rules.apply("CN=eve,OU=ops/admin,O=acme").as_deref(),
            Some("eve-admin")
        );
        assert_eq!(rules.apply("CN=x,O=other").as_deref(), Some("CN=x,O=other"));
        let strict = PrincipalMapping::parse(r"RULE:^CN=(.*?),O=acme$/$1/").unwrap();
        assert_eq!(strict.apply("CN=x,O=other"), None);
        assert!(PrincipalMapping::parse("RULE:^CN=(.*$/$1/").is_err());
        assert!(PrincipalMapping::parse("SOMETHING").is_err());
        assert!(PrincipalMapping::parse("").is_err());
    }

    #[test]
    fn the_dn_is_written_most_specific_first_with_escapes() {
        let mut params = rcgen_params();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "door-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_dn(cert.der()).unwrap(),
            r"CN=door-7,O=Acme\, Inc.,C=DE"
        );
        assert!(certificate_dn(b"not a certificate").is_err());
    }

    fn rcgen_params() -> rcgen::CertificateParams {
        rcgen::CertificateParams::new(vec!["door-7".to_string()]).unwrap()
    }
}
