//! SASL users of the Kafka listener: SCRAM credentials (salted and hashed, never the
//! password) in `<data_dir>/users.json`, written by `tern users` and re-read by a running
//! tern whenever the file changes, so adding a user needs no restart.

pub use tern_bridges::scram;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use scram::{Credential, Mechanism};

#[derive(Debug, Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid users file: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{0}")]
    Bad(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: BTreeMap<String, BTreeMap<Mechanism, Credential>>,
}

pub fn users_path(data_dir: &Path) -> PathBuf {
    data_dir.join("users.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UsersError + '_ {
    move |source| UsersError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<UsersFile, UsersError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UsersError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Replaces the file atomically and durably, readable only by its owner.
fn write(path: &Path, file: &UsersFile) -> Result<(), UsersError> {
    let text = serde_json::to_vec_pretty(file).map_err(|e| UsersError::Bad(e.to_string()))?;
    crate::durable_file::replace(path, &text).map_err(io(path))
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(|c| c.is_control())
}

/// Adds `user` (or replaces its credentials) for each mechanism.
pub fn add(
    data_dir: &Path,
    user: &str,
    password: &str,
    mechanisms: &[Mechanism],
    iterations: u32,
) -> Result<(), UsersError> {
    if !valid_user_name(user) {
        return Err(UsersError::Bad(format!(
            "{user:?} is not a valid user name"
        )));
    }
    if password.is_empty() {
        return Err(UsersError::Bad("the password is empty".into()));
    }
    if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&iterations) {
        return Err(UsersError::Bad(format!(
            "iterations must be between {} and {}",
            scram::MIN_ITERATIONS,
            scram::MAX_ITERATIONS
        )));
    }
    let path = users_path(data_dir);
    let mut file = read(&path)?;
    let mut credentials = BTreeMap::new();
    for &m in mechanisms {
        credentials.insert(
            m,
            Credential::new(m, password, iterations).map_err(UsersError::Bad)?,
        );
    }
    file.users.insert(user.to_string(), credentials);
    write(&path, &file)
}

/// Removes `user`; false if there was none.
pub fn delete(data_dir: &Path, user: &str) -> Result<bool, UsersError> {
    let path = users_path(data_dir);
    let mut file = read(&path)?;
    let existed = file.users.remove(user).is_some();
    if existed {
        write(&path, &file)?;
    }
    Ok(existed)
}

/// Every user with the mechanisms it has credentials for.
pub fn list(data_dir: &Path) -> Result<Vec<(String, Vec<Mechanism>)>, UsersError> {
    Ok(read(&users_path(data_dir))?
        .users
        .into_iter()
        .map(|(name, c)| (name, c.into_keys().collect()))
        .collect())
}

/// The users a running tern authenticates against, re-read when the file changes.
pub struct Users {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, UsersFile)>,
}

impl Users {
    pub fn open(data_dir: &Path) -> Users {
        Users {
            path: users_path(data_dir),
            cache: Mutex::new((None, UsersFile::default())),
        }
    }

    fn current(&self) -> UsersFile {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let Ok(mut cache) = self.cache.lock() else {
            return UsersFile::default();
        };
        if cache.0 != modified || modified.is_none() {
            match read(&self.path) {
                Ok(file) => *cache = (modified, file),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the users file; keeping the users read before")
                }
            }
        }
        cache.1.clone()
    }

    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.current().users.get(user)?.get(&mechanism).cloned()
    }

    /// SASL/PLAIN: checks the password against any stored SCRAM credential of the user.
    pub fn verify_plain(&self, user: &str, password: &str) -> bool {
        let file = self.current();
        let Some(credentials) = file.users.get(user) else {
            return false;
        };
        credentials
            .iter()
            .next()
            .is_some_and(|(m, c)| c.verify_password(*m, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_added_replaced_listed_deleted_and_seen_by_a_running_broker() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path());
        assert!(!users.verify_plain("alice", "pw"));
        add(
            dir.path(),
            "alice",
            "pw",
            &[Mechanism::Sha256, Mechanism::Sha512],
            4096,
        )
        .unwrap();
        assert!(users.verify_plain("alice", "pw"));
        assert!(users.credential("alice", Mechanism::Sha512).is_some());
        let text = std::fs::read_to_string(users_path(dir.path())).unwrap();
        assert!(
            !text.contains("\"pw\""),
            "the password itself is stored: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        add(dir.path(), "alice", "new", &[Mechanism::Sha512], 4096).unwrap();
        // A coarse file system clock may not show the change: force the re-read.
        if let Ok(mut c) = users.cache.lock() {
            c.0 = None;
        }
        assert!(users.verify_plain("alice", "new") && !users.verify_plain("alice", "pw"));
        assert_eq!(
            list(dir.path()).unwrap(),
            vec![("alice".to_string(), vec![Mechanism::Sha512])]
        );
        assert!(delete(dir.path(), "alice").unwrap());
        assert!(!delete(dir.path(), "alice").unwrap());
        assert!(add(dir.path(), "", "pw", &[Mechanism::Sha256], 4096).is_err());
        assert!(add(dir.path(), "bob", "pw", &[Mechanism::Sha256], 10).is_err());
    }
}
