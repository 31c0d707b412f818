#![no_main]
//! See tern::fuzzing::segment_recovery.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern::fuzzing::segment_recovery(data));
