//! Fetch: whole batches from the durable log, long-polling up to `max_wait_ms` until
//! `min_bytes` are available. A fetch offset inside a batch returns the whole batch; the
//! consumer skips the records before its offset, as with Kafka.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::access::Access;
use super::spliced::encode_spliced;
use super::{encode, Reply};
use crate::acls::Operation;
use crate::broker::Broker;
use crate::kafka::errors::log_error_code;
use crate::log::batch::BatchHeader;

/// Upper bound on a long poll, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Serialises the Fetch requests of one connection in request order: a fetch starts when
/// the previous one's response has been written. Tickets are drawn in request order (in
/// the connection's reader), so a later fetch can never take the turn of an earlier one
/// whose response the connection must write first.
pub struct FetchQueue {
    next: AtomicU64,
    serving: watch::Sender<u64>,
}

/// A place in a connection's fetch queue.
pub struct FetchTicket {
    queue: Arc<FetchQueue>,
    number: u64,
}

/// A fetch's turn; the next fetch of the connection starts when this is dropped.
pub struct FetchTurn {
    queue: Arc<FetchQueue>,
}

impl FetchQueue {
    pub fn new() -> Arc<FetchQueue> {
        Arc::new(FetchQueue {
            next: AtomicU64::new(0),
            serving: watch::channel(0).0,
        })
    }

    pub fn ticket(self: &Arc<Self>) -> FetchTicket {
        FetchTicket {
            queue: Arc::clone(self),
            number: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl FetchTicket {
    async fn turn(self) -> FetchTurn {
        let mut serving = self.queue.serving.subscribe();
        // The sender lives in the queue this ticket holds: waiting cannot fail.
        let _ = serving.wait_for(|n| *n == self.number).await;
        FetchTurn { queue: self.queue }
    }
}

impl Drop for FetchTurn {
    fn drop(&mut self) {
        self.queue.serving.send_modify(|n| *n += 1);
    }
}

pub fn handle(access: &Access, request: FetchRequest, version: i16, ticket: FetchTicket) -> Reply {
    let broker = Arc::clone(access.broker);
    // Decided once, before any long poll: READ on each topic.
    let denied: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.topic.0.to_string())
        .filter(|name| !access.topic(Operation::Read, name))
        .collect();
    Reply::Later(Box::pin(async move {
        // One response per connection in memory at a time, in request order.
        let turn = ticket.turn().await;

        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let min_bytes = request.min_bytes.max(0) as usize;
        // Woken by group commit when one of the fetched partitions moves (and only then).
        let waker = Arc::new(Notify::new());
        let want = (request.max_bytes.max(0) as usize)
            .min(broker.config.kafka.max_fetch_bytes as usize)
            .max(1);
        loop {
            // Memory for this read comes from the broker-wide response budget first: the
            // bytes read (the response passes them through, `spliced`) and an eighth more
            // for what encoding copies (headers, batches too small to pass through).
            let Some(mut permit) = reserve(&broker, want + want / 8, deadline).await else {
                // No memory within the wait: an empty answer, the client fetches again.
                let (response, _, _) = read_all(&broker, &request, &denied, version, 0, None);
                return encode(&response, version);
            };
            let may_wait = Instant::now() < deadline;
            let (response, bytes, errors) = read_all(
                &broker,
                &request,
                &denied,
                version,
                permit.num_permits() * KIB / 9 * 8,
                may_wait.then_some(&waker),
            );
            if bytes >= min_bytes.max(1) || errors || Instant::now() >= deadline {
                account(&broker, &response);
                let payloads = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().filter_map(|p| p.records.clone()))
                    .collect();
                let mut body = encode_spliced(&response, version, payloads)?;
                drop(response);
                // Keep what the response holds (one first batch may exceed the
                // reservation, as in Kafka's KIP-74); return the rest at once.
                let needed = body.len().div_ceil(KIB).max(1);
                if needed > permit.num_permits() {
                    // Bounded wait: a batch larger than the whole budget is still served.
                    let more = u32::try_from(needed - permit.num_permits()).unwrap_or(u32::MAX);
                    let top_up = Arc::clone(&broker.response_budget).acquire_many_owned(more);
                    if let Ok(Ok(more)) = tokio::time::timeout(TOP_UP_WAIT, top_up).await {
                        permit.merge(more);
                    }
                } else if let Some(extra) = permit.split(permit.num_permits() - needed) {
                    drop(extra);
                }
                body.hold = vec![Box::new(turn), Box::new(permit)];
                return Ok(body);
            }
            drop(permit);
            tokio::select! {
                _ = waker.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }))
}

const KIB: usize = 1024;
/// How long a read that found one batch larger than its reservation waits for the rest.
const TOP_UP_WAIT: Duration = Duration::from_secs(1);
/// A read waits for at least this much of the response budget (or all it asks, if less).
const MIN_RESERVATION: usize = 2 << 20;

/// Reserves up to `want` bytes of the response budget: what is free right now, but at
/// least `min(want, 2 MiB)`, waiting for that until `deadline`.
async fn reserve(broker: &Broker, want: usize, deadline: Instant) -> Option<OwnedSemaphorePermit> {
    let budget = &broker.response_budget;
    let want_kib = want.div_ceil(KIB);
    let floor_kib = want.min(MIN_RESERVATION).div_ceil(KIB);
    let take = want_kib.min(budget.available_permits()).max(floor_kib);
    let take = u32::try_from(take).unwrap_or(u32::MAX);
    tokio::time::timeout_at(deadline, Arc::clone(budget).acquire_many_owned(take))
        .await
        .ok()?
        .ok()
}

fn read_all(
    broker: &Broker,
    request: &FetchRequest,
    denied: &[String],
    version: i16,
    reserved: usize,
    waker: Option<&Arc<Notify>>,
) -> (FetchResponse, usize, bool) {
    let mut budget = (request.max_bytes.max(0) as usize)
        .min(broker.config.kafka.max_fetch_bytes as usize)
        .min(reserved);
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for fetch_topic in &request.topics {
        let name = fetch_topic.topic.0.to_string();
        let denied = denied.contains(&name);
        let topic = if denied {
            None
        } else {
            broker.topics.get(&name)
        };
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for fp in &fetch_topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(BrokerId(-1));
            match topic.as_ref().and_then(|t| t.partition(fp.partition)) {
                None if denied => {
                    data.error_code = ResponseError::TopicAuthorizationFailed.code();
                    errors = true;
                }
                None => {
                    data.error_code = ResponseError::UnknownTopicOrPartition.code();
                    errors = true;
                }
                Some(partition) => {
                    // Registered before the read: a move right after it still wakes us.
                    if let Some(waker) = waker {
                        partition.watchers.register(waker);
                    }
                    // KIP-74: the first partition may exceed the budget by one batch.
                    let limit = (fp.partition_max_bytes.max(0) as usize).min(budget);
                    let first = total == 0;
                    // Nothing is read without memory reserved for it.
                    let may_read = if first { reserved > 0 } else { limit > 0 };
                    let result = if may_read {
                        partition.read(fp.fetch_offset, if first { limit.max(1) } else { limit })
                    } else {
                        let log = partition.lock();
                        Ok(crate::log::ReadResult {
                            bytes: Vec::new(),
                            high_watermark: log.high_watermark(),
                            log_start_offset: log.log_start_offset(),
                        })
                    };
                    match result {
                        Ok(read) => {
                            data.high_watermark = read.high_watermark;
                            data.last_stable_offset = read.high_watermark;
                            data.log_start_offset = read.log_start_offset;
                            if !read.bytes.is_empty() && (first || read.bytes.len() <= budget) {
                                total += read.bytes.len();
                                budget = budget.saturating_sub(read.bytes.len());
                                data.records = Some(Bytes::from(read.bytes));
                            }
                        }
                        Err(e) => {
                            let log = partition.lock();
                            data.high_watermark = log.high_watermark();
                            data.last_stable_offset = log.high_watermark();
                            data.log_start_offset = log.log_start_offset();
                            data.error_code = log_error_code(&e).code();
                            errors = true;
                        }
                    }
                }
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    let mut response = FetchResponse::default().with_responses(topics);
    if version < 5 {
        for topic in &mut response.responses {
            for p in &mut topic.partitions {
                p.log_start_offset = -1;
            }
        }
    }
    (response, total, errors)
}

/// Counts records and bytes served, from the batch headers.
fn account(broker: &Broker, response: &FetchResponse) {
    for topic in &response.responses {
        let mut records = 0u64;
        let mut bytes = 0u64;
        for p in &topic.partitions {
            if let Some(data) = &p.records {
                bytes += data.len() as u64;
                let mut rest = &data[..];
                while let Ok(h) = BatchHeader::parse(rest) {
                    records += h.record_count.max(0) as u64;
                    rest = &rest[h.total_len().min(rest.len())..];
                }
            }
        }
        if bytes > 0 {
            broker.metrics.record_fetch(&topic.topic.0, records, bytes);
        }
    }
}
