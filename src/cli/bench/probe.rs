//! What the broker spent during a benchmark, read from outside it: CPU time and context
//! switches from `/proc/<pid>` (any broker on this machine), fsyncs from tern's
//! `/metrics`. Readings before and after the run give the figures per request.

use std::path::Path;

/// One reading of the broker's counters; absent figures stay `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub cpu_seconds: Option<f64>,
    pub context_switches: Option<u64>,
    /// Partition fsyncs done by group commit (`tern_fsync_partitions_total`).
    pub fsyncs: Option<f64>,
}

/// Where the broker's counters are read.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub pid: Option<u32>,
    /// tern's HTTP port (host:port), for `/metrics`.
    pub http: Option<String>,
}

impl Probe {
    pub async fn read(&self) -> Result<Reading, String> {
        let mut reading = Reading::default();
        if let Some(pid) = self.pid {
            let proc = Path::new("/proc").join(pid.to_string());
            reading.cpu_seconds = Some(cpu_seconds(&proc)?);
            reading.context_switches = Some(context_switches(&proc)?);
        }
        if let Some(http) = &self.http {
            let body = super::super::http::get(http, "/metrics")
                .await
                .map_err(|e| format!("{e:#}"))?;
            let text = String::from_utf8_lossy(&body);
            reading.fsyncs = metric(&text, "tern_fsync_partitions_total");
        }
        Ok(reading)
    }
}

/// utime + stime of every thread of the process (fields 14 and 15 of `stat`).
fn cpu_seconds(proc: &Path) -> Result<f64, String> {
    let stat = std::fs::read_to_string(proc.join("stat"))
        .map_err(|e| format!("cannot read {}: {e}", proc.join("stat").display()))?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected {}/stat: {stat}", proc.display()))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {i} in {}/stat", proc.display()))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(14)? + ticks(15)?) as f64 / hz)
}

/// Voluntary and involuntary context switches summed over the live threads.
fn context_switches(proc: &Path) -> Result<u64, String> {
    let tasks = proc.join("task");
    let entries =
        std::fs::read_dir(&tasks).map_err(|e| format!("cannot read {}: {e}", tasks.display()))?;
    let mut total = 0u64;
    for entry in entries.flatten() {
        // A thread may exit between listing and reading: skip it.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// What the broker spent between two readings.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spent {
    pub cpu_seconds: Option<f64>,
    pub context_switches: Option<u64>,
    pub fsyncs: Option<f64>,
}

pub fn spent(before: &Reading, after: &Reading) -> Spent {
    Spent {
        cpu_seconds: before
            .cpu_seconds
            .zip(after.cpu_seconds)
            .map(|(b, a)| a - b),
        context_switches: before
            .context_switches
            .zip(after.context_switches)
            .map(|(b, a)| a.saturating_sub(b)),
        fsyncs: before.fsyncs.zip(after.fsyncs).map(|(b, a)| a - b),
    }
}

/// CPU seconds this process (the benchmark client) has used.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(Path::new("/proc/self")).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_unlabelled_sample_and_ignores_comments_and_prefixes() {
        let text = "# HELP tern_fsync_partitions_total x\n\
                    tern_fsync_partitions_total_other 9\n\
                    tern_fsync_partitions_total 42\n";
        assert_eq!(metric(text, "tern_fsync_partitions_total"), Some(42.0));
        assert_eq!(metric(text, "missing"), None);
    }

    #[test]
    fn reads_this_process_cpu_and_context_switches() {
        let me = Path::new("/proc/self");
        assert!(cpu_seconds(me).expect("stat") >= 0.0);
        assert!(context_switches(me).expect("status") > 0);
    }
}
