//! The compression codecs of Kafka record batches, with bounded output.
//!
//! Every decompression in tern goes through [`decoder`]: its output is capped, so that a
//! small batch announcing gigabytes (a "decompression bomb") fails with a clear error
//! instead of exhausting a gateway's memory. Callers stream through the reader where they
//! can (produce validation holds 64 KiB, not the batch) and materialise only what they
//! must, never beyond the cap. All codecs are pure Rust, so the ARM builds need no C.

use std::io::{self, Read, Write};

use thiserror::Error;

use super::batch::Codec;

/// Decoder memory for zstd windows: what Kafka clients' default levels use is far below.
const ZSTD_MAX_WINDOW: u64 = 8 * 1024 * 1024;
/// xerial's snappy framing, as the Java client writes it.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Block size when tern writes xerial snappy (what the Java client uses).
const SNAPPY_BLOCK: usize = 32 * 1024;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("{codec:?} data decompresses to more than {limit} bytes (a batch may not expand beyond that)")]
    TooLarge { codec: Codec, limit: u64 },
    #[error("corrupt {codec:?} data: {reason}")]
    Corrupt { codec: Codec, reason: String },
    #[error("{codec:?} compression failed: {reason}")]
    Compress { codec: Codec, reason: String },
}

/// A reader of the decompressed bytes of `input`, failing with [`CodecError::TooLarge`]
/// (as an `io::Error` whose inner error is the `CodecError`) past `limit` bytes.
pub fn decoder<'a>(
    codec: Codec,
    input: &'a [u8],
    limit: u64,
) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
    let corrupt = |reason: String| CodecError::Corrupt { codec, reason };
    let inner: Box<dyn Read + Send + 'a> = match codec {
        Codec::None => Box::new(input),
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Codec::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
        Codec::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new_with_max_window_size(input, ZSTD_MAX_WINDOW)
                .map_err(|e| corrupt(e.to_string()))?,
        ),
        Codec::Snappy => Box::new(SnappyReader::new(input, limit)?),
    };
    Ok(Box::new(Limited {
        inner,
        codec,
        limit,
        read: 0,
    }))
}

/// Decompresses `input` into memory, at most `limit` bytes.
pub fn decompress(codec: Codec, input: &[u8], limit: u64) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    decoder(codec, input, limit)?
        .read_to_end(&mut out)
        .map_err(|e| from_io(codec, e))?;
    Ok(out)
}

/// Turns an error from a [`decoder`] reader back into the codec error it carries.
pub fn from_io(codec: Codec, e: io::Error) -> CodecError {
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<CodecError>()) {
        Some(Ok(codec_error)) => *codec_error,
        Some(Err(other)) => CodecError::Corrupt {
            codec,
            reason: other.to_string(),
        },
        None => CodecError::Corrupt {
            codec,
            reason: format!("{kind}"),
        },
    }
}

/// Compresses `input` with `codec` in the framing Kafka clients read.
pub fn compress(codec: Codec, input: &[u8]) -> Result<Vec<u8>, CodecError> {
    let failed = |e: io::Error| CodecError::Compress {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Codec::None => Ok(input.to_vec()),
        Codec::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Codec::Lz4 => compress_lz4(input).map_err(|e| CodecError::Compress {
            codec,
            reason: e.to_string(),
        }),
        Codec::Zstd => Ok(ruzstd::encoding::compress_to_vec(
            input,
            ruzstd::encoding::CompressionLevel::Fastest,
        )),
        Codec::Snappy => {
            // xerial framing (magic, version 1, compatible 1, then length-prefixed raw
            // blocks): the Java client needs it, librdkafka and kafka-python read it.
            let mut out = Vec::with_capacity(input.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&1u32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(SNAPPY_BLOCK) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|e| CodecError::Compress {
                        codec,
                        reason: e.to_string(),
                    })?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
    }
}

type Lz4Encoder = lz4_flex::frame::FrameEncoder<Vec<u8>>;

thread_local! {
    /// Each thread's LZ4 frame encoder, kept between batches: a new one allocates 144 KiB
    /// (a 64 KiB block in, its worst case out, a 16 KiB hash table) — for a one-record
    /// batch a hundred times the bytes it compresses. A finished encoder starts its next
    /// frame from a clean state (`FrameEncoder` resets when a frame follows another), so
    /// the output is what a new encoder writes. What it holds stays with the thread: the
    /// async workers (a fixed few) and blocking threads, which tokio ends after 10 s idle —
    /// at most what the same compressions in flight allocated anyway.
    static LZ4_ENCODER: std::cell::RefCell<Option<Lz4Encoder>> =
        const { std::cell::RefCell::new(None) };
}

/// LZ4 frame with 64 KiB independent blocks: what the Java client and librdkafka both
/// write and read.
fn new_lz4_encoder() -> Lz4Encoder {
    let info = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max64KB)
        .block_mode(lz4_flex::frame::BlockMode::Independent);
    lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new())
}

fn compress_lz4(input: &[u8]) -> Result<Vec<u8>, lz4_flex::frame::Error> {
    // A reused encoder writes a frame only once it is given bytes; an empty input takes
    // a new one (which writes the empty frame).
    if input.is_empty() {
        return new_lz4_encoder().finish();
    }
    LZ4_ENCODER.with(|slot| {
        let mut slot = slot.borrow_mut();
        let encoder = slot.get_or_insert_with(new_lz4_encoder);
        // Room for the worst case (incompressible input plus framing): no regrowth.
        encoder
            .get_mut()
            .reserve(input.len() + input.len() / 255 + 64);
        let written = encoder
            .write_all(input)
            .map_err(lz4_flex::frame::Error::from)
            .and_then(|()| encoder.try_finish());
        let out = std::mem::take(encoder.get_mut());
        match written {
            Ok(()) => Ok(out),
            Err(e) => {
                // An encoder that failed mid-frame is not trusted with the next one.
                *slot = None;
                Err(e)
            }
        }
    })
}

/// Caps what a decoder may produce.
struct Limited<'a> {
    inner: Box<dyn Read + Send + 'a>,
    codec: Codec,
    limit: u64,
    read: u64,
}

impl Read for Limited<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Read at most one byte past the limit, to tell "exactly at" from "beyond".
        let room = (self.limit - self.read.min(self.limit)).saturating_add(1);
        let want = buf.len().min(room.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                CodecError::TooLarge {
                    codec: self.codec,
                    limit: self.limit,
                },
            ));
        }
        Ok(n)
    }
}

/// Snappy as Kafka clients write it: xerial-framed blocks, or one raw snappy buffer (what
/// the xerial reader also accepts). Each block's announced length is checked against the
/// limit before anything is allocated for it.
struct SnappyReader<'a> {
    rest: &'a [u8],
    raw: bool,
    block: Vec<u8>,
    at: usize,
    limit: u64,
    produced: u64,
}

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limit: u64) -> Result<SnappyReader<'a>, CodecError> {
        let xerial = input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC);
        Ok(SnappyReader {
            rest: if xerial {
                &input[XERIAL_HEADER_LEN..]
            } else {
                input
            },
            raw: !xerial,
            block: Vec::new(),
            at: 0,
            limit,
            produced: 0,
        })
    }

    fn next_block(&mut self) -> Result<bool, CodecError> {
        let corrupt = |reason: String| CodecError::Corrupt {
            codec: Codec::Snappy,
            reason,
        };
        if self.rest.is_empty() {
            return Ok(false);
        }
        let compressed: &[u8] = if self.raw {
            std::mem::take(&mut self.rest)
        } else {
            if self.rest.len() < 4 {
                return Err(corrupt("truncated xerial block length".to_string()));
            }
            let len = u32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]])
                as usize;
            let block = self
                .rest
                .get(4..4 + len)
                .ok_or_else(|| corrupt(format!("xerial block of {len} bytes is truncated")))?;
            self.rest = &self.rest[4 + len..];
            block
        };
        let announced =
            snap::raw::decompress_len(compressed).map_err(|e| corrupt(e.to_string()))? as u64;
        if self.produced + announced > self.limit {
            return Err(CodecError::TooLarge {
                codec: Codec::Snappy,
                limit: self.limit,
            });
        }
        self.block.resize(announced as usize, 0);
        let n = snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| corrupt(e.to_string()))?;
        self.block.truncate(n);
        self.produced += n as u64;
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.block.len() {
            match self.next_block() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in CODECS {
            let compressed = compress(codec, &input).expect("compress");
            let out = decompress(codec, &compressed, input.len() as u64).expect("decompress");
            assert_eq!(out, input, "{codec:?}");
        }
    }

    #[test]
    fn the_reused_lz4_encoder_writes_what_a_new_one_writes() {
        // Big and compressible, tiny, empty, incompressible, then big again: each frame
        // from this thread's kept encoder must equal a new encoder's, byte for byte.
        let big: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect();
        let noise: Vec<u8> = (0..5_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let inputs: [&[u8]; 6] = [&big, b"one small record", b"", &noise, &big[..70_000], &big];
        for input in inputs {
            let reused = compress(Codec::Lz4, input).expect("compress");
            let mut fresh = new_lz4_encoder();
            fresh.write_all(input).expect("write");
            let fresh = fresh.finish().expect("finish");
            assert_eq!(reused, fresh, "input of {} bytes", input.len());
            let out = decompress(Codec::Lz4, &reused, input.len() as u64).expect("decompress");
            assert_eq!(out, input);
        }
    }

    #[test]
    fn output_beyond_the_limit_is_an_error_for_every_codec() {
        let input = vec![0u8; 1 << 20];
        for codec in CODECS {
            let compressed = compress(codec, &input).expect("compress");
            let err = decompress(codec, &compressed, (1 << 20) - 1).expect_err("over the limit");
            assert!(
                matches!(err, CodecError::TooLarge { .. }),
                "{codec:?}: {err}"
            );
        }
    }

    #[test]
    fn a_raw_snappy_header_announcing_gigabytes_allocates_nothing() {
        // Varint length 0xFFFFFFFF (4 GiB) followed by nothing: the 89-byte bomb's shape.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = decompress(Codec::Snappy, &bomb, 1 << 20).expect_err("bomb");
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for codec in CODECS[1..].iter() {
            let err = decompress(*codec, b"\x00\x01garbage that is not compressed", 1 << 20);
            assert!(err.is_err(), "{codec:?}");
        }
    }
}
