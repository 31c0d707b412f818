//! Decoding untrusted request bodies. Together with the lazily-backed allocator
//! (`crate::alloc`) and the frame-size limit, this turns hostile length fields into a
//! clean error instead of an abort: sizes that overflow `isize` (possible on 32-bit ARM)
//! make `Vec` panic, and that panic is caught here.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use kafka_protocol::protocol::Decodable;

pub fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(|| T::decode(body, version))) {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("the request declares sizes that cannot exist".to_string()),
    }
}
