//! `tern certs`: a private CA, the hub's certificate and one certificate per edge, as PEM
//! files (keys readable by the owner only). ECDSA P-256 keys; the CA signs for 10 years,
//! hubs and edges for the days asked (default 825).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use crate::config::validate_edge_name;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
const CA_COMMON_NAME: &str = "tern mirror CA";

#[derive(Debug, Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists; not overwriting it (move it away first)")]
    Exists { path: String },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path, source: std::io::Error) -> CertError {
    if source.kind() == std::io::ErrorKind::AlreadyExists {
        return CertError::Exists {
            path: path.display().to_string(),
        };
    }
    CertError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a new file (never replacing one) with `mode`, and fsyncs it.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| io_error(path, e))
}

/// The CA's parameters: rebuilt identically to sign with a stored CA key.
fn ca_params() -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "tern");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A CA ready to sign.
pub struct Ca {
    key: KeyPair,
}

impl Ca {
    /// Loads `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, CertError> {
        let path = dir.join(CA_KEY);
        let pem = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(Ca { key })
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CertError> {
        Ok(Issuer::new(ca_params()?, &self.key))
    }
}

/// Creates `ca.pem` and `ca.key` in `dir`; returns the CA.
pub fn create_ca(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let key = KeyPair::generate()?;
    let mut params = ca_params()?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(vec![cert_path, key_path])
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Hub,
    Edge,
}

/// A signed certificate and its key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Signs a certificate for `role` valid for `names` (DNS names or IP addresses) from
/// `not_before` to `not_after`. The first name is also the subject's common name.
pub fn issue(
    ca: &Ca,
    role: Role,
    names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, CertError> {
    let first = names
        .first()
        .ok_or_else(|| CertError::Invalid("a certificate needs at least one name".into()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e| CertError::Invalid(format!("`{name}`: {e}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Hub => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Edge => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Creates `<file_stem>.pem` and `<file_stem>.key` in `dir`, signed by the CA in `ca_dir`,
/// valid from yesterday for `valid_days`.
pub fn create(
    dir: &Path,
    ca_dir: &Path,
    role: Role,
    file_stem: &str,
    names: &[String],
    valid_days: i64,
) -> Result<Vec<PathBuf>, CertError> {
    if role == Role::Edge {
        validate_edge_name(file_stem).map_err(CertError::Invalid)?;
    }
    if valid_days < 1 {
        return Err(CertError::Invalid("--days must be at least 1".into()));
    }
    let ca = Ca::load(ca_dir)?;
    let now = OffsetDateTime::now_utc();
    let issued = issue(
        &ca,
        role,
        names,
        now - Duration::days(1),
        now + Duration::days(valid_days),
    )?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let cert_path = dir.join(format!("{file_stem}.pem"));
    let key_path = dir.join(format!("{file_stem}.key"));
    write_new(&key_path, &issued.key_pem, 0o600)?;
    write_new(&cert_path, &issued.cert_pem, 0o644)?;
    Ok(vec![cert_path, key_path])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A CA, a hub certificate for `localhost` and 127.0.0.1, and edge `gw-1`, in `dir`.
    pub(crate) fn site(dir: &Path) {
        create_ca(dir).expect("ca");
        let hub_names = ["localhost".to_string(), "127.0.0.1".to_string()];
        create(dir, dir, Role::Hub, "hub", &hub_names, 30).expect("hub");
        create(dir, dir, Role::Edge, "gw-1", &["gw-1".into()], 30).expect("edge");
    }

    #[test]
    fn a_ca_signs_hub_and_edge_certificates_that_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        site(dir.path());
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "keys are private");
        assert!(matches!(
            create_ca(dir.path()),
            Err(CertError::Exists { .. })
        ));
        assert!(create(
            dir.path(),
            dir.path(),
            Role::Edge,
            "Bad_Name",
            &["x".into()],
            30
        )
        .is_err());
        // The edge certificate chains to the CA and is valid for its own name only.
        let roots = crate::tls::load_roots(&dir.path().join(CA_CERT)).expect("roots");
        let edge = crate::tls::load_certs(&dir.path().join("gw-1.pem")).expect("edge cert");
        let leaf = webpki::EndEntityCert::try_from(&edge[0]).expect("parse");
        let anchors = roots.roots.to_vec();
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            rustls::pki_types::UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .expect("chains to the CA");
        let peer = || Some(Box::new(edge.clone()) as Box<dyn std::any::Any>);
        crate::tls::check_edge_identity(peer(), "gw-1").expect("own name");
        assert!(crate::tls::check_edge_identity(peer(), "gw-2").is_err());
        assert!(crate::tls::check_edge_identity(None, "gw-1").is_err());
    }
}
