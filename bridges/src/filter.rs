//! MQTT topic filters (`sensors/+/temperature`, `doors/#`): validation by the MQTT rules
//! and matching that returns the levels the wildcards stood for.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("topic filter is empty")]
    Empty,
    #[error("topic filter `{0}`: `#` must be the last level and stand alone")]
    MisplacedHash(String),
    #[error("topic filter `{0}`: `+` must stand alone in its level")]
    MisplacedPlus(String),
    #[error("topic filter `{0}` contains a NUL character")]
    Nul(String),
    #[error("topic filter is longer than 65535 bytes")]
    TooLong,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: one level.
    One,
    /// `#`: this level and every one after it (also none).
    Rest,
}

#[derive(Debug, Clone)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

/// What a match captured: the topic levels each `+` stood for, in order, and what `#`
/// stood for (joined with `/`), if the filter has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captures<'t> {
    pub singles: Vec<&'t str>,
    pub rest: Option<String>,
}

impl TopicFilter {
    pub fn parse(text: &str) -> Result<TopicFilter, FilterError> {
        if text.is_empty() {
            return Err(FilterError::Empty);
        }
        if text.len() > 65535 {
            return Err(FilterError::TooLong);
        }
        if text.contains('\0') {
            return Err(FilterError::Nul(text.to_string()));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::Rest,
                "+" => Level::One,
                p if p.contains('#') => return Err(FilterError::MisplacedHash(text.to_string())),
                p if p.contains('+') => return Err(FilterError::MisplacedPlus(text.to_string())),
                p => Level::Exact(p.to_string()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            text: text.to_string(),
            levels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How many `+` levels the filter has (what a key template may name).
    pub fn single_wildcards(&self) -> usize {
        self.levels.iter().filter(|l| **l == Level::One).count()
    }

    pub fn has_rest(&self) -> bool {
        self.levels.last() == Some(&Level::Rest)
    }

    /// Matches a concrete topic name; `None` when it does not match.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let parts: Vec<&str> = topic.split('/').collect();
        // Topics starting with `$` (e.g. `$SYS`) are not matched by a leading wildcard.
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return None;
        }
        let mut captures = Captures {
            singles: Vec::new(),
            rest: None,
        };
        for (i, level) in self.levels.iter().enumerate() {
            match level {
                Level::Rest => {
                    captures.rest = Some(parts.get(i..).unwrap_or(&[]).join("/"));
                    return Some(captures);
                }
                Level::One => captures.singles.push(parts.get(i)?),
                Level::Exact(want) => {
                    if parts.get(i) != Some(&want.as_str()) {
                        return None;
                    }
                }
            }
        }
        (parts.len() == self.levels.len()).then_some(captures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_captures_one_level_each() {
        let f = TopicFilter::parse("sensors/+/temperature").expect("valid");
        let c = f.matches("sensors/dev-7/temperature").expect("matches");
        assert_eq!(c.singles, vec!["dev-7"]);
        assert!(f.matches("sensors/dev-7/humidity").is_none());
        assert!(f.matches("sensors/a/b/temperature").is_none());
        assert!(f.matches("sensors/temperature").is_none());
        assert_eq!(f.single_wildcards(), 1);
    }

    #[test]
    fn hash_matches_the_rest_and_the_parent() {
        let f = TopicFilter::parse("doors/#").expect("valid");
        assert_eq!(
            f.matches("doors/front/lock").expect("m").rest.as_deref(),
            Some("front/lock")
        );
        assert_eq!(
            f.matches("doors").expect("parent").rest.as_deref(),
            Some("")
        );
        assert!(f.matches("windows/front").is_none());
        assert!(TopicFilter::parse("#")
            .expect("all")
            .matches("$SYS/x")
            .is_none());
    }

    #[test]
    fn invalid_filters_are_refused_with_a_reason() {
        assert_eq!(TopicFilter::parse("").err(), Some(FilterError::Empty));
        assert!(matches!(
            TopicFilter::parse("a/#/b"),
            Err(FilterError::MisplacedHash(_))
        ));
        assert!(matches!(
            TopicFilter::parse("a/b#"),
            Err(FilterError::MisplacedHash(_))
        ));
        assert!(matches!(
            TopicFilter::parse("a/dev+/b"),
            Err(FilterError::MisplacedPlus(_))
        ));
    }
}
