//! The ACLs of a tern: `<data_dir>/acls.json`, written by CreateAcls/DeleteAcls and by
//! `tern acls`, each under a lock file so the two never lose each other's changes. A
//! running tern re-reads the file when it changes (checked at most once a second), so an
//! ACL added with the CLI applies without a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{AclBinding, AclFilter};

/// How stale a running tern's view of the file may be.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum AclStoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ACL file: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    acls: BTreeSet<AclBinding>,
}

pub fn acls_path(data_dir: &Path) -> PathBuf {
    data_dir.join("acls.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AclStoreError + '_ {
    move |source| AclStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<AclFile, AclStoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AclStoreError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AclFile::default()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Reads, changes and durably rewrites the file while holding its lock file.
fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut BTreeSet<AclBinding>) -> T,
) -> Result<(T, Vec<AclBinding>), AclStoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let lock_path = path.with_extension("json.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    // flock(2): released when `lock` is closed, also if this process dies.
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this function owns for the whole call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(&lock_path)(std::io::Error::last_os_error()));
    }
    let mut file = read(path)?;
    let before = file.acls.clone();
    let outcome = change(&mut file.acls);
    if file.acls != before {
        let text = serde_json::to_vec_pretty(&file).map_err(|e| AclStoreError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        crate::durable_file::replace(path, &text).map_err(io(path))?;
    }
    Ok((outcome, file.acls.into_iter().collect()))
}

fn insert_all(acls: &mut BTreeSet<AclBinding>, bindings: &[AclBinding]) -> usize {
    bindings
        .iter()
        .filter(|b| acls.insert((*b).clone()))
        .count()
}

fn remove_matching(acls: &mut BTreeSet<AclBinding>, filters: &[AclFilter]) -> Vec<Vec<AclBinding>> {
    filters
        .iter()
        .map(|f| {
            let gone: Vec<AclBinding> = acls.iter().filter(|a| f.matches(a)).cloned().collect();
            for a in &gone {
                acls.remove(a);
            }
            gone
        })
        .collect()
}

/// Adds bindings (already valid); returns how many were new.
pub fn add(data_dir: &Path, bindings: &[AclBinding]) -> Result<usize, AclStoreError> {
    Ok(update(&acls_path(data_dir), |acls| insert_all(acls, bindings))?.0)
}

/// Removes, for each filter, the bindings it matches; returns them per filter.
pub fn remove(
    data_dir: &Path,
    filters: &[AclFilter],
) -> Result<Vec<Vec<AclBinding>>, AclStoreError> {
    Ok(update(&acls_path(data_dir), |acls| remove_matching(acls, filters))?.0)
}

pub fn list(data_dir: &Path) -> Result<Vec<AclBinding>, AclStoreError> {
    Ok(read(&acls_path(data_dir))?.acls.into_iter().collect())
}

/// A running tern's view of the file.
pub struct AclStore {
    data_dir: PathBuf,
    cache: Mutex<Cached>,
}

struct Cached {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    acls: Arc<Vec<AclBinding>>,
}

impl AclStore {
    /// Opens the file; a file that cannot be read is an error here (tern refuses to
    /// start rather than run with ACLs it cannot see).
    pub fn open(data_dir: &Path) -> Result<AclStore, AclStoreError> {
        let path = acls_path(data_dir);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let acls = read(&path)?.acls.into_iter().collect();
        Ok(AclStore {
            data_dir: data_dir.to_path_buf(),
            cache: Mutex::new(Cached {
                checked: Some(Instant::now()),
                modified,
                acls: Arc::new(acls),
            }),
        })
    }

    /// The current bindings, re-read if the file changed (a broken file keeps the
    /// bindings read before, and says so).
    pub fn snapshot(&self) -> Arc<Vec<AclBinding>> {
        let Ok(mut cache) = self.cache.lock() else {
            return Arc::new(Vec::new());
        };
        if cache.checked.is_some_and(|c| c.elapsed() < RECHECK) {
            return Arc::clone(&cache.acls);
        }
        cache.checked = Some(Instant::now());
        let path = acls_path(&self.data_dir);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified != cache.modified {
            match read(&path) {
                Ok(file) => {
                    cache.acls = Arc::new(file.acls.into_iter().collect());
                    cache.modified = modified;
                    tracing::info!(acls = cache.acls.len(), "ACLs re-read");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the ACL file; keeping the ACLs read before")
                }
            }
        }
        Arc::clone(&cache.acls)
    }

    fn refresh(&self, acls: Vec<AclBinding>) {
        let modified = std::fs::metadata(acls_path(&self.data_dir))
            .and_then(|m| m.modified())
            .ok();
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Cached {
                checked: Some(Instant::now()),
                modified,
                acls: Arc::new(acls),
            };
        }
    }

    /// CreateAcls: adds the bindings; visible to the next request at once.
    pub fn add(&self, bindings: &[AclBinding]) -> Result<usize, AclStoreError> {
        let (added, now) = update(&acls_path(&self.data_dir), |acls| {
            insert_all(acls, bindings)
        })?;
        self.refresh(now);
        Ok(added)
    }

    /// DeleteAcls: removes what each filter matches; visible to the next request at once.
    pub fn remove(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, AclStoreError> {
        let (removed, now) = update(&acls_path(&self.data_dir), |acls| {
            remove_matching(acls, filters)
        })?;
        self.refresh(now);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acls::{Operation, PatternType, Permission, ResourceType};

    fn write_sensors(principal: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "sensors".into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn the_cli_and_a_running_broker_share_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = AclStore::open(dir.path()).unwrap();
        assert!(store.snapshot().is_empty());
        // Through the API: visible at once.
        assert_eq!(store.add(&[write_sensors("User:alice")]).unwrap(), 1);
        assert_eq!(store.add(&[write_sensors("User:alice")]).unwrap(), 0);
        assert_eq!(store.snapshot().len(), 1);
        // Through the CLI (the file): visible after the re-check interval.
        assert_eq!(add(dir.path(), &[write_sensors("User:bob")]).unwrap(), 1);
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(store.snapshot().len(), 2);
        let bob = AclFilter {
            principal: Some("User:bob".into()),
            ..AclFilter::default()
        };
        let removed = store.remove(&[bob]).unwrap();
        assert_eq!(removed, vec![vec![write_sensors("User:bob")]]);
        assert_eq!(list(dir.path()).unwrap(), vec![write_sensors("User:alice")]);
        assert_eq!(
            remove(dir.path(), &[AclFilter::default()]).unwrap()[0].len(),
            1
        );
    }

    #[test]
    fn a_broken_file_is_an_error_at_start_and_ignored_while_running() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(acls_path(dir.path()), b"{\"acls\": [").unwrap();
        assert!(matches!(
            AclStore::open(dir.path()),
            Err(AclStoreError::Invalid { .. })
        ));
        std::fs::remove_file(acls_path(dir.path())).unwrap();
        let store = AclStore::open(dir.path()).unwrap();
        store.add(&[write_sensors("User:alice")]).unwrap();
        std::fs::write(acls_path(dir.path()), b"not json").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(store.snapshot().len(), 1);
    }
}
