//! The topics only the mirror writes: on a hub, the prefixes (`<edge><separator>`) of
//! mirrored edges; on an edge, the command topics the hub sends down. A Kafka producer
//! appending there would take offsets the mirrored records must get, and the copy would
//! stop matching its source. The list is kept in `<data_dir>/mirror-hub/edges` (one
//! prefix per line, or `=topic` for one topic; fsynced when first claimed), so the
//! protection holds while the link is down too.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Debug)]
pub struct MirrorNamespaces {
    path: PathBuf,
    prefixes: RwLock<BTreeSet<String>>,
}

impl MirrorNamespaces {
    /// Loads the prefixes recorded under `data_dir` (none if the file does not exist).
    pub fn load(data_dir: &Path) -> MirrorNamespaces {
        let path = data_dir.join("mirror-hub").join("edges");
        let prefixes = std::fs::read_to_string(&path)
            .map(|text| {
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        MirrorNamespaces {
            path,
            prefixes: RwLock::new(prefixes),
        }
    }

    /// True when `topic` lies in a mirrored edge's namespace.
    pub fn owns(&self, topic: &str) -> bool {
        // One pass, no key built: this runs on every produce.
        let prefixes = self.prefixes.read().unwrap_or_else(|p| p.into_inner());
        prefixes.iter().any(|p| match p.strip_prefix('=') {
            Some(exact) => exact == topic,
            None => topic.starts_with(p.as_str()),
        })
    }

    /// Records one topic durably (once).
    pub fn claim_topic(&self, topic: &str) -> std::io::Result<()> {
        self.claim(&format!("={topic}"))
    }

    /// Records `prefix` durably (once).
    pub fn claim(&self, prefix: &str) -> std::io::Result<()> {
        let mut prefixes = self.prefixes.write().unwrap_or_else(|p| p.into_inner());
        if prefixes.contains(prefix) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            crate::log::checkpoint::create_dir_durably(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // A torn earlier line is ended before ours (it then names no real prefix).
        file.write_all(format!("\n{prefix}\n").as_bytes())?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        prefixes.insert(prefix.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_prefixes_are_owned_and_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = MirrorNamespaces::load(dir.path());
        assert!(!ns.owns("gw-1.sensors"));
        ns.claim("gw-1.").expect("claim");
        ns.claim("gw-1.").expect("claim twice");
        assert!(ns.owns("gw-1.sensors") && !ns.owns("gw-10.sensors") && !ns.owns("sensors"));
        ns.claim_topic("commands").expect("claim a topic");
        assert!(ns.owns("commands") && !ns.owns("commands.all") && !ns.owns("command"));
        let again = MirrorNamespaces::load(dir.path());
        assert!(again.owns("gw-1.x") && again.owns("commands"));
    }
}
