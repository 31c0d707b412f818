//! Idempotent-producer state of one partition: per producer id, its epoch and the last
//! five batches' sequence ranges and offsets (Kafka keeps five because a producer has at
//! most five requests in flight). A retried batch is recognised and answered with the
//! offsets it got the first time; a gap is refused. Rebuilt from the log's batch headers
//! on startup, so it is never ahead of the log.

use std::collections::{HashMap, VecDeque};

use thiserror::Error;

use super::batch::BatchHeader;

const CACHED_BATCHES: usize = 5;
/// Producers remembered per partition; the least recently active are forgotten first.
const MAX_PRODUCERS: usize = 10_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SequenceError {
    #[error("producer {producer_id}: sequence {got} is out of order (expected {expected})")]
    OutOfOrder {
        producer_id: i64,
        got: i32,
        expected: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than the current epoch {current}")]
    Fenced {
        producer_id: i64,
        got: i16,
        current: i16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    batches: VecDeque<CachedBatch>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already in the log at these offsets: answer success, write nothing.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

impl ProducerStates {
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let Some(producer) = self.producers.get(&header.producer_id) else {
            // Unknown (new, or forgotten by retention): accept from any sequence.
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < producer.epoch {
            return Err(SequenceError::Fenced {
                producer_id: header.producer_id,
                got: header.producer_epoch,
                current: producer.epoch,
            });
        }
        if header.producer_epoch > producer.epoch {
            return Ok(SequenceCheck::Append);
        }
        let (first, last) = (header.base_sequence, header.last_sequence());
        if let Some(b) = producer
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = producer
            .batches
            .back()
            .map(|b| {
                if b.last_seq == i32::MAX {
                    0
                } else {
                    b.last_seq + 1
                }
            })
            .unwrap_or(first);
        if first != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                got: first,
                expected,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Remembers a batch that is now in the log (its header carries the real offsets).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.is_idempotent() {
            return;
        }
        if !self.producers.contains_key(&header.producer_id)
            && self.producers.len() >= MAX_PRODUCERS
        {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, p)| p.batches.back().map(|b| b.last_offset).unwrap_or(-1))
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.producers.remove(&id);
            }
        }
        let producer = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.batches.clear();
        }
        producer.batches.push_back(CachedBatch {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while producer.batches.len() > CACHED_BATCHES {
            producer.batches.pop_front();
        }
    }

    /// Forgets batches at or past `offset` (the log was cut back there).
    /// The largest producer id with state here (new ids are allocated above it).
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().max().copied()
    }

    pub fn truncate(&mut self, offset: i64) {
        for producer in self.producers.values_mut() {
            producer.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, p| !p.batches.is_empty());
    }
}
