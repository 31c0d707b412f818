//! The work an append does before the partition lock: limits, record validation with
//! bounded decompression, compression as the topic asks, LogAppendTime stamping.

use std::borrow::Cow;

use super::PreparedBatch;
use crate::log::batch::{self, BatchHeader, Codec};
use crate::log::record_check::Rules;
use crate::log::{CompressionPolicy, LogConfig, LogError};

/// Validates each batch against the topic's limits, checks its records (decompressing
/// with a bound: a decompression bomb is refused here), and compresses it as the topic
/// asks. Runs before the partition lock is taken: this is the expensive part of an append.
pub fn prepare<'a>(
    batches: &[(BatchHeader, &'a [u8])],
    config: &LogConfig,
    now_ms: i64,
) -> Result<Vec<PreparedBatch<'a>>, LogError> {
    let mut out = Vec::with_capacity(batches.len());
    for (header, bytes) in batches {
        let too_large = |size: usize| LogError::TooLarge {
            size,
            max: config.max_message_bytes,
        };
        if bytes.len() > config.max_message_bytes {
            return Err(too_large(bytes.len()));
        }
        let limit = batch::uncompressed_limit(header, config.max_message_bytes);
        let rules = Rules {
            thinned_up_to: None,
            keys_required: config.cleanup.compacts() && !header.is_control(),
        };
        batch::validate_records(bytes, header, limit, rules)
            .map_err(|e| LogError::InvalidRecords(e.to_string()))?;
        let source = header.codec();
        let target = match config.compression {
            _ if header.is_control() => None,
            CompressionPolicy::Producer => None,
            CompressionPolicy::Lz4 => (source == Codec::None).then_some(Codec::Lz4),
            CompressionPolicy::Exactly(codec) => (source != codec).then_some(codec),
        };
        let rewritten = match target {
            None => None,
            Some(codec) => {
                let out = batch::recompress(bytes, codec, limit)
                    .map_err(|e| LogError::InvalidRecords(e.to_string()))?;
                // lz4 by default only where it helps; an explicit codec always applies.
                let keep = config.compression != CompressionPolicy::Lz4 || out.len() < bytes.len();
                keep.then_some(out)
            }
        };
        let mut stored = match rewritten {
            Some(c) => {
                if c.len() > config.max_message_bytes {
                    return Err(too_large(c.len()));
                }
                Cow::Owned(c)
            }
            None => Cow::Borrowed(*bytes),
        };
        if config.log_append_time && !header.is_control() {
            // Kafka's LogAppendTime: the batch carries the broker's clock (its max
            // timestamp and the timestamp-type attribute); consumers use it for every record.
            batch::set_log_append_time(stored.to_mut(), now_ms);
        }
        let header = BatchHeader::parse(&stored)?;
        out.push((header, stored));
    }
    Ok(out)
}
