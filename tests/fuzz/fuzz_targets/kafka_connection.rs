#![no_main]
//! See tern::fuzzing::kafka_connection.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern::fuzzing::kafka_connection(data));
