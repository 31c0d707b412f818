//! Templates: the record key built from an MQTT topic (`{1}` = the first `+` level,
//! `{#}` = what `#` matched, `{topic}` = the whole MQTT topic), and the MQTT topic built
//! from a tern record (`devices/{key}/cmd`; also `{topic}` and `{partition}`).

use thiserror::Error;

use crate::filter::{Captures, TopicFilter};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "template `{template}` names `{{{level}}}` but filter `{filter}` has {have} `+` level(s)"
    )]
    NoSuchLevel {
        template: String,
        level: usize,
        filter: String,
        have: usize,
    },
    #[error("template `{template}` names `{{#}}` but filter `{filter}` has no `#`")]
    NoRest { template: String, filter: String },
    #[error("template `{template}`: unknown placeholder `{{{name}}}` (known: {known})")]
    Unknown {
        template: String,
        name: String,
        known: &'static str,
    },
    #[error("template `{0}` has an unclosed `{{`")]
    Unclosed(String),
    #[error("template `{0}` must not contain MQTT wildcards `+` or `#`")]
    Wildcard(String),
    #[error("template is empty")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Level(usize),
    Rest,
    Topic,
    Key,
    Partition,
}

fn parse(template: &str, allowed: &[&str]) -> Result<Vec<Part>, TemplateError> {
    if template.is_empty() {
        return Err(TemplateError::Empty);
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| TemplateError::Unclosed(template.to_string()))?;
        let name = &rest[open + 1..open + close];
        let known = allowed.join(", ");
        let part = match name {
            "topic" if allowed.contains(&"{topic}") => Part::Topic,
            "key" if allowed.contains(&"{key}") => Part::Key,
            "partition" if allowed.contains(&"{partition}") => Part::Partition,
            "#" if allowed.contains(&"{#}") => Part::Rest,
            n if allowed.contains(&"{1}") && n.parse::<usize>().is_ok_and(|i| i >= 1) => {
                Part::Level(n.parse().unwrap_or(1))
            }
            n => {
                return Err(TemplateError::Unknown {
                    template: template.to_string(),
                    name: n.to_string(),
                    known: if known.contains("{key}") {
                        "{key}, {topic}, {partition}"
                    } else {
                        "{1}..{n}, {#}, {topic}"
                    },
                })
            }
        };
        parts.push(part);
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// A record key built from the MQTT topic a message arrived on.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

impl KeyTemplate {
    /// Parses `template` and checks it against the levels `filter` can capture.
    pub fn parse(template: &str, filter: &TopicFilter) -> Result<KeyTemplate, TemplateError> {
        let parts = parse(template, &["{1}", "{#}", "{topic}"])?;
        for part in &parts {
            match part {
                Part::Level(level) if *level > filter.single_wildcards() => {
                    return Err(TemplateError::NoSuchLevel {
                        template: template.to_string(),
                        level: *level,
                        filter: filter.as_str().to_string(),
                        have: filter.single_wildcards(),
                    })
                }
                Part::Rest if !filter.has_rest() => {
                    return Err(TemplateError::NoRest {
                        template: template.to_string(),
                        filter: filter.as_str().to_string(),
                    })
                }
                _ => {}
            }
        }
        Ok(KeyTemplate { parts })
    }

    pub fn render(&self, topic: &str, captures: &Captures<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Level(i) => out.push_str(captures.singles.get(i - 1).copied().unwrap_or("")),
                Part::Rest => out.push_str(captures.rest.as_deref().unwrap_or("")),
                Part::Topic => out.push_str(topic),
                Part::Key | Part::Partition => {}
            }
        }
        out
    }
}

/// An MQTT topic built from a tern record.
#[derive(Debug, Clone)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, TemplateError> {
        if template.contains(['+', '#']) {
            return Err(TemplateError::Wildcard(template.to_string()));
        }
        let parts = parse(template, &["{key}", "{topic}", "{partition}"])?;
        Ok(TopicTemplate { parts })
    }

    pub fn uses_key(&self) -> bool {
        self.parts.contains(&Part::Key)
    }

    /// The MQTT topic for one record; `None` when the record cannot be named (no key for
    /// a `{key}` template, or a key that would make an invalid topic).
    pub fn render(&self, topic: &str, partition: i32, key: Option<&[u8]>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Topic => out.push_str(topic),
                Part::Partition => out.push_str(&partition.to_string()),
                Part::Key => {
                    let key = std::str::from_utf8(key?).ok()?;
                    if key.is_empty() || key.contains(['+', '#', '\0']) {
                        return None;
                    }
                    out.push_str(key);
                }
                Part::Level(_) | Part::Rest => {}
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_levels_rest_and_topic() {
        let filter = TopicFilter::parse("sensors/+/+/#").expect("valid");
        let topic = "sensors/hall/dev-3/a/b";
        let captures = filter.matches(topic).expect("matches");
        let render = |t: &str| {
            KeyTemplate::parse(t, &filter)
                .expect(t)
                .render(topic, &captures)
        };
        assert_eq!(render("{2}"), "dev-3");
        assert_eq!(render("{1}-{2}"), "hall-dev-3");
        assert_eq!(render("{#}"), "a/b");
        assert_eq!(render("{topic}"), topic);
    }

    #[test]
    fn key_templates_naming_missing_levels_are_refused() {
        let filter = TopicFilter::parse("sensors/+/temperature").expect("valid");
        let err = KeyTemplate::parse("{2}", &filter).expect_err("only one +");
        assert!(err.to_string().contains("has 1 `+` level"), "{err}");
        assert!(matches!(
            KeyTemplate::parse("{#}", &filter),
            Err(TemplateError::NoRest { .. })
        ));
        assert!(matches!(
            KeyTemplate::parse("{device}", &filter),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(
            KeyTemplate::parse("{1", &filter),
            Err(TemplateError::Unclosed(_))
        ));
    }

    #[test]
    fn mqtt_topics_from_records() {
        let t = TopicTemplate::parse("devices/{key}/cmd").expect("valid");
        assert_eq!(
            t.render("commands", 0, Some(b"lock-7")).as_deref(),
            Some("devices/lock-7/cmd")
        );
        assert_eq!(t.render("commands", 0, None), None, "no key, no topic");
        assert_eq!(t.render("commands", 0, Some(b"a/+")), None, "no wildcards");
        let t = TopicTemplate::parse("out/{topic}/{partition}").expect("valid");
        assert_eq!(t.render("cmd", 2, None).as_deref(), Some("out/cmd/2"));
        assert!(matches!(
            TopicTemplate::parse("devices/+/cmd"),
            Err(TemplateError::Wildcard(_))
        ));
        assert!(matches!(
            TopicTemplate::parse("devices/{1}/cmd"),
            Err(TemplateError::Unknown { .. })
        ));
    }
}
