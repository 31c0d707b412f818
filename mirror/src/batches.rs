//! The few fields of Kafka v2 batch headers the mirror needs, read from stored bytes
//! (which the log already checked): where each batch starts and ends, and its timestamps.

/// Bytes of the v2 header up to and including `maxTimestamp`.
const MIN_HEADER: usize = 43;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub base_offset: i64,
    pub next_offset: i64,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub len: usize,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(x)
}

/// The batches in `bytes`, in order; `None` if a header is cut or its length impossible.
pub fn spans(bytes: &[u8]) -> Option<Vec<Span>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < MIN_HEADER {
            return None;
        }
        let len = usize::try_from(be_i32(rest, 8)).ok()? + 12;
        if len < MIN_HEADER || len > rest.len() {
            return None;
        }
        let base_offset = be_i64(rest, 0);
        let delta = i64::from(be_i32(rest, 23));
        out.push(Span {
            base_offset,
            next_offset: base_offset + delta + 1,
            first_timestamp: be_i64(rest, 27),
            max_timestamp: be_i64(rest, 35),
            len,
        });
        at += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base: i64, delta: i32, ts: i64, body: usize) -> Vec<u8> {
        let mut b = vec![0u8; MIN_HEADER + body];
        b[0..8].copy_from_slice(&base.to_be_bytes());
        b[8..12].copy_from_slice(&((MIN_HEADER + body - 12) as i32).to_be_bytes());
        b[23..27].copy_from_slice(&delta.to_be_bytes());
        b[27..35].copy_from_slice(&ts.to_be_bytes());
        b
    }

    #[test]
    fn spans_of_consecutive_batches() {
        let bytes = [header(10, 4, 7, 5), header(15, 0, 9, 0)].concat();
        let spans = spans(&bytes).expect("valid");
        assert_eq!(spans.len(), 2);
        assert_eq!(
            (spans[0].base_offset, spans[0].next_offset, spans[0].len),
            (10, 15, 48)
        );
        assert_eq!((spans[1].next_offset, spans[1].first_timestamp), (16, 9));
        assert!(super::spans(&bytes[..50]).is_none(), "a cut batch");
    }
}
