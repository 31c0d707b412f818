//! Decoding untrusted request bodies. Together with the lazily-backed allocator
//! (`crate::alloc`) and the frame-size limit, this turns hostile length fields into a
//! clean error instead of an abort: sizes that overflow `isize` (possible on 32-bit ARM)
//! make `Vec` panic, and that panic is caught here.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use kafka_protocol::protocol::Decodable;

/// Installs a panic hook that stays quiet for panics this module catches (the request is
/// logged as malformed instead) and reports every other panic as before.
pub fn install_quiet_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !crate::alloc::is_decoding() {
            default(info);
        }
    }));
}

pub fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    crate::alloc::set_decoding(true);
    let outcome = catch_unwind(AssertUnwindSafe(|| T::decode(body, version)));
    crate::alloc::set_decoding(false);
    match outcome {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("the request declares sizes that cannot exist".to_string()),
    }
}
