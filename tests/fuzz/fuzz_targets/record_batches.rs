#![no_main]
//! See tern::fuzzing::record_batches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern::fuzzing::record_batches(data));
