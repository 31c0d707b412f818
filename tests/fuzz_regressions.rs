//! Replays the fuzz corpus and every crash the fuzzers found (tests/fuzz/regressions/)
//! through the same entry points the fuzz targets use: what once crashed tern, or
//! reached new code, must keep returning cleanly.
//!
//! `cargo test --test fuzz_regressions -- --ignored write_seeds` (re)writes the seed
//! inputs into tests/fuzz/corpus/.

use std::path::PathBuf;

/// A fuzz target: its name and its entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 4] = [
    ("kafka_request", tern::fuzzing::kafka_request),
    ("kafka_connection", tern::fuzzing::kafka_connection),
    ("record_batches", tern::fuzzing::record_batches),
    ("segment_recovery", tern::fuzzing::segment_recovery),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
        .collect()
}

#[test]
fn every_regression_and_corpus_input_returns_cleanly() {
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let corpus = inputs("corpus", target);
        assert!(
            !corpus.is_empty(),
            "tests/fuzz/corpus/{target} is empty: the corpus belongs in the repository"
        );
        for (path, bytes) in corpus.iter().chain(inputs("regressions", target).iter()) {
            let outcome = std::panic::catch_unwind(|| run(bytes));
            assert!(outcome.is_ok(), "{} made {target} panic", path.display());
            replayed += 1;
        }
    }
    println!("{replayed} inputs replayed");
}

#[test]
fn seeds_reach_past_the_first_checks() {
    // The seeds are valid inputs, not noise: every API × version, every codec.
    let requests = tern::fuzzing::seeds("kafka_request");
    assert!(requests.len() > 100, "{} request seeds", requests.len());
    let batches = tern::fuzzing::seeds("record_batches");
    assert_eq!(
        batches.len(),
        5,
        "one batch per codec (none, gzip, snappy, lz4, zstd)"
    );
    for b in &batches {
        let header = tern::log::batch::validate(b).expect("a seed batch is valid");
        let limit = tern::log::batch::uncompressed_limit(&header, 1 << 20);
        tern::log::batch::validate_records(
            b,
            &header,
            limit,
            tern::log::record_check::Rules::PRODUCED,
        )
        .expect("its records are valid");
    }
}

#[test]
#[ignore = "writes tests/fuzz/corpus; run by hand"]
fn write_seeds() {
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in tern::fuzzing::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), seed).unwrap();
        }
    }
}
