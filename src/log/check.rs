//! `tern check DATA_DIR`: an offline, read-only verification of every batch of every
//! segment (header, length, CRC, increasing offsets, and the records inside, decompressed
//! with a bound). It changes nothing; run it on a stopped tern or a copy of a data dir.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::batch::{self, BatchHeader, MAX_UNCOMPRESSED_BATCH};
use super::damage;

/// One problem found.
#[derive(Debug)]
pub struct Finding {
    pub segment: PathBuf,
    pub from_byte: u64,
    pub to_byte: u64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub segments: u64,
    pub batches: u64,
    pub bytes: u64,
    pub findings: Vec<Finding>,
}

/// Checks every `*.log` segment under `data_dir/topics/*/*/`.
pub fn check_data_dir(data_dir: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    let topics = data_dir.join("topics");
    let mut segments = Vec::new();
    for topic in std::fs::read_dir(&topics)? {
        let topic = topic?.path();
        if !topic.is_dir() {
            continue;
        }
        for partition in std::fs::read_dir(&topic)? {
            let partition = partition?.path();
            if !partition.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&partition)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "log") {
                    segments.push(path);
                }
            }
        }
    }
    segments.sort();
    for segment in segments {
        check_segment(&segment, &mut report)?;
    }
    Ok(report)
}

fn check_segment(path: &Path, report: &mut Report) -> std::io::Result<()> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    report.segments += 1;
    report.bytes += size;
    let mut findings = Vec::new();
    let intact = damage::verify(
        &file,
        0,
        size,
        |at, resume, reason| {
            findings.push(Finding {
                segment: path.to_path_buf(),
                from_byte: at,
                to_byte: resume,
                reason: reason.to_string(),
            })
        },
        |_| {},
    )?;
    report.batches += intact;
    // The records inside each intact batch, too (what consumers will decode).
    let mut position = 0u64;
    use std::os::unix::fs::FileExt;
    while position < size {
        if let Some(f) = findings.iter().find(|f| f.from_byte == position) {
            position = f.to_byte;
            continue;
        }
        let mut header = [0u8; batch::HEADER_LEN];
        if file.read_exact_at(&mut header, position).is_err() {
            break;
        }
        let Ok(h) = BatchHeader::parse(&header) else {
            break;
        };
        let mut bytes = vec![0u8; h.total_len()];
        file.read_exact_at(&mut bytes, position)?;
        if let Err(e) = batch::validate_records(
            &bytes,
            &h,
            MAX_UNCOMPRESSED_BATCH,
            crate::log::record_check::Rules::stored(h.last_offset_delta),
        ) {
            findings.push(Finding {
                segment: path.to_path_buf(),
                from_byte: position,
                to_byte: position + h.total_len() as u64,
                reason: format!("offsets {}..={}: {e}", h.base_offset, h.last_offset()),
            });
        }
        position += h.total_len() as u64;
    }
    report.findings.extend(findings);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Log, LogConfig};
    use std::os::unix::fs::FileExt;

    #[test]
    fn check_reports_a_flipped_byte_and_nothing_else() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = data.path().join("topics/t/0");
        let (mut log, _) = Log::open(&dir, LogConfig::default(), 0).expect("open");
        for _ in 0..3 {
            let b = crate::log::batch::tests::make_batch(5, b"payload");
            log.append(&batch::split_batches(&b).expect("batch"), 0)
                .expect("append");
        }
        log.close().expect("close");
        drop(log);
        let clean = check_data_dir(data.path()).expect("check");
        assert_eq!((clean.segments, clean.batches), (1, 3));
        assert!(clean.findings.is_empty(), "{:?}", clean.findings);
        let segment = dir.join("00000000000000000000.log");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("open");
        f.write_all_at(&[0xEE], 70).expect("flip");
        let damaged = check_data_dir(data.path()).expect("check");
        assert_eq!(damaged.findings.len(), 1, "{:?}", damaged.findings);
        assert_eq!(damaged.batches, 2);
    }
}
