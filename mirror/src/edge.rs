//! The edge's link: keeps one QUIC connection to the hub (reconnecting for ever with
//! capped exponential backoff and full jitter), finds the topics to mirror, and runs one
//! sender per partition on its own stream, so that a slow partition never blocks another.
//!
//! A sender asks the hub where its copy ends, sends stored batches from there (never more
//! than `window_bytes` unacknowledged) and moves on as acknowledgements arrive. Nothing is
//! stored on the edge about progress: after any failure the hub's answer is the truth.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::batches;
use crate::config::{Edge, HEARTBEATS_TOPIC};
use crate::metrics::{labels, MirrorMetrics};
use crate::ports::{MirrorLog, PortError, TopicInfo};
use crate::status::{now_ms, SharedStatus};
use crate::tls;
use crate::wire::{close, codec, Frame};
use crate::MirrorError;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a partition whose stream failed waits before the next try.
const PARTITION_RETRY: Duration = Duration::from_secs(2);
/// How long a partition the hub refused waits (the cause needs a person).
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// The edge link, ready to [`EdgeLink::run`].
pub struct EdgeLink<L> {
    edge: Arc<Edge>,
    log: Arc<L>,
    client: quinn::ClientConfig,
    status: SharedStatus,
    metrics: MirrorMetrics,
}

/// Why a partition sender stopped.
enum StreamEnd {
    /// The connection is gone; the connection loop reconnects.
    Connection(String),
    /// The hub refused (or the logs disagree): retry much later.
    Refused(String),
    /// Anything else: retry soon.
    Failed(String),
    /// A retry wait is over: the next discovery starts the partition again.
    Retry,
}

impl<L: MirrorLog> EdgeLink<L> {
    /// Loads the certificates (errors name the file) and prepares the QUIC client.
    pub fn new(
        edge: Edge,
        log: Arc<L>,
        status: SharedStatus,
        metrics: MirrorMetrics,
    ) -> Result<EdgeLink<L>, MirrorError> {
        let identity = tls::load_identity(&edge.config.cert, &edge.config.key)?;
        let roots = tls::load_roots(&edge.config.ca)?;
        let timing = tls::Timing {
            keep_alive: Duration::from_millis(edge.config.keep_alive_ms),
            idle_timeout: Duration::from_millis(edge.config.idle_timeout_ms),
        };
        let client = tls::client_config(identity, roots, edge.config.cipher, &timing)?;
        status.edge(|s| {
            s.name = edge.config.name.clone();
            s.hub = edge.config.hub.clone();
            s.state = "connecting".into();
        });
        Ok(EdgeLink {
            edge: Arc::new(edge),
            log,
            client,
            status,
            metrics,
        })
    }

    /// Mirrors until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.edge.config;
        if config.heartbeat_interval_ms > 0 {
            tokio::spawn(write_heartbeats(
                Arc::clone(&self.log),
                config.name.clone(),
                Duration::from_millis(config.heartbeat_interval_ms),
                shutdown.clone(),
            ));
        }
        let mut delay = Backoff::new(config.reconnect_min_ms, config.reconnect_max_ms);
        let hub_labels = labels(&[("hub", &config.hub)]);
        let mut connected_once = false;
        while !shutdown.is_cancelled() {
            self.status.edge(|s| s.state = "connecting".into());
            // A dead hub answers nothing: keep the offline lag fresh while we try.
            let connecting = self.connect();
            tokio::pin!(connecting);
            let mut refresh = tokio::time::interval(Duration::from_secs(1));
            let attempt = loop {
                tokio::select! {
                    result = &mut connecting => break result,
                    _ = refresh.tick() => self.refresh_offline_lag(),
                }
            };
            match attempt {
                Ok(connection) => {
                    if connected_once {
                        self.metrics.reconnects.get_or_create(&hub_labels).inc();
                        self.status.edge(|s| s.reconnects += 1);
                    }
                    connected_once = true;
                    delay.reset();
                    self.metrics.connected.get_or_create(&hub_labels).set(1);
                    let reason = self.serve(connection, &shutdown).await;
                    self.metrics.connected.get_or_create(&hub_labels).set(0);
                    self.status.edge(|s| {
                        s.connected_since_ms = None;
                        s.rtt_ms = None;
                        s.last_error = Some(reason.clone());
                    });
                    if !shutdown.is_cancelled() {
                        warn!(hub = %config.hub, %reason, "mirror link lost; reconnecting");
                    }
                }
                Err(reason) => {
                    warn!(hub = %config.hub, %reason, "cannot connect to the mirror hub");
                    self.status.edge(|s| s.last_error = Some(reason));
                }
            }
            let wait = delay.next();
            self.status.edge(|s| s.state = "waiting".into());
            self.refresh_offline_lag();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// RTT and the bytes this connection put on the wire (UDP payloads, all overhead in).
    fn note_link(&self, connection: &quinn::Connection) {
        let stats = connection.stats();
        self.status.edge(|s| {
            s.rtt_ms = Some(connection.rtt().as_secs_f64() * 1000.0);
            s.wire_tx_bytes = s.wire_tx_bytes_before + stats.udp_tx.bytes;
            s.wire_rx_bytes = s.wire_rx_bytes_before + stats.udp_rx.bytes;
        });
    }

    /// While the link is down nothing acknowledges, but the edge keeps storing: the lag
    /// shown (and exported) grows against the hub's last known end.
    fn refresh_offline_lag(&self) {
        for topic in self.log.topics() {
            if topic.internal || !self.edge.selects(&topic.name) {
                continue;
            }
            for partition in 0..topic.partitions {
                let Ok((start, end)) = self.log.offsets(&topic.name, partition) else {
                    continue;
                };
                let behind = self.status.edge_partition(&topic.name, partition, |p| {
                    p.edge_start = start;
                    p.edge_end = end;
                    p.records_behind = (end - p.hub_end.max(start)).max(0);
                    p.records_behind
                });
                let from = self
                    .status
                    .edge_partition(&topic.name, partition, |p| p.hub_end.max(start));
                if let Ok(bytes) = self.log.bytes_from(&topic.name, partition, from) {
                    self.status
                        .edge_partition(&topic.name, partition, |p| p.bytes_behind = bytes);
                }
                let l = labels(&[
                    ("topic", &topic.name),
                    ("partition", &partition.to_string()),
                ]);
                self.metrics.lag_records.get_or_create(&l).set(behind);
            }
        }
    }

    /// Resolves the hub, opens the connection from a fresh UDP socket and says hello.
    async fn connect(&self) -> Result<quinn::Connection, String> {
        let edge = &self.edge;
        let target = (edge.hub_host.as_str(), edge.hub_port);
        let addr: SocketAddr = tokio::net::lookup_host(target)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", edge.config.hub))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", edge.config.hub))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
        } else {
            "[::]:0".parse().map_err(|e| format!("{e}"))?
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        endpoint.set_default_client_config(self.client.clone());
        let connecting = endpoint
            .connect(addr, &edge.hub_name)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("no answer from {addr} within {HANDSHAKE_TIMEOUT:?}"))?
            .map_err(|e| tls::explain(&e))?;
        let (send, recv) = connection.open_bi().await.map_err(|e| refused_or(&e))?;
        let mut writer = FramedWrite::new(send, codec());
        let hello = Frame::Hello {
            edge: edge.config.name.clone(),
        }
        .encode()
        .map_err(|e| e.to_string())?;
        writer.send(hello).await.map_err(|e| e.to_string())?;
        let mut reader = FramedRead::new(recv, codec());
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await;
        match answer {
            Ok(Some(Ok(bytes))) => match Frame::decode(bytes.freeze()) {
                Ok(Frame::Welcome { .. }) => {}
                other => return Err(format!("unexpected answer to Hello: {other:?}")),
            },
            Ok(_) => {
                let why = connection.closed().await;
                return Err(refused_or(&why));
            }
            Err(_) => return Err("no Welcome from the hub within 15 s".into()),
        }
        // Keep the control stream open for the connection's life.
        tokio::spawn(async move {
            let _keep = writer;
            while let Some(Ok(_)) = reader.next().await {}
        });
        let local = endpoint.local_addr().map(|a| a.to_string()).ok();
        info!(hub = %edge.config.hub, %addr, edge = %edge.config.name, "mirror link up");
        self.status.edge(|s| {
            s.state = "connected".into();
            s.connected_since_ms = Some(now_ms());
            s.local_address = local;
            s.last_error = None;
        });
        Ok(connection)
    }

    /// Runs the partition senders on one connection until it closes.
    async fn serve(&self, connection: quinn::Connection, shutdown: &CancellationToken) -> String {
        let mut senders: JoinSet<((String, i32), StreamEnd)> = JoinSet::new();
        let mut running: HashSet<(String, i32)> = HashSet::new();
        // The configs each topic's partition-0 stream announced, and how to stop that
        // stream: a config change on the edge reopens it, and the hub syncs on `Open`.
        let mut announced: HashMap<String, (Vec<(String, String)>, AbortHandle)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.edge.config.discovery_interval_ms.max(100),
        ));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.note_link(&connection);
                    for topic in self.log.topics() {
                        if topic.internal || !self.edge.selects(&topic.name) {
                            continue;
                        }
                        if let Some((configs, handle)) = announced.get(&topic.name) {
                            if *configs != topic.configs {
                                handle.abort();
                                running.remove(&(topic.name.clone(), 0));
                                announced.remove(&topic.name);
                                info!(topic = %topic.name, "topic configs changed; announcing them to the hub");
                            }
                        }
                        for partition in 0..topic.partitions {
                            let key = (topic.name.clone(), partition);
                            if running.insert(key.clone()) {
                                let sender = Sender {
                                    edge: Arc::clone(&self.edge),
                                    log: Arc::clone(&self.log),
                                    status: self.status.clone(),
                                    metrics: self.metrics.clone(),
                                    topic: topic.clone(),
                                    partition,
                                };
                                let connection = connection.clone();
                                let shutdown = shutdown.clone();
                                let handle = senders.spawn(async move {
                                    let end = sender.run(connection, shutdown).await;
                                    (key, end)
                                });
                                if partition == 0 {
                                    announced.insert(topic.name.clone(), (topic.configs.clone(), handle));
                                }
                            }
                        }
                    }
                }
                Some(done) = senders.join_next() => {
                    if let Ok(((topic, partition), end)) = done {
                        let (why, retry) = match end {
                            StreamEnd::Retry => {
                                running.remove(&(topic, partition));
                                continue;
                            }
                            StreamEnd::Connection(why) => (why, Duration::ZERO),
                            StreamEnd::Refused(why) => {
                                error!(%topic, partition, reason = %why, "hub refused this partition; retrying in 30 s");
                                (why, REFUSED_RETRY)
                            }
                            StreamEnd::Failed(why) => {
                                warn!(%topic, partition, reason = %why, "mirror stream failed; retrying");
                                (why, PARTITION_RETRY)
                            }
                        };
                        self.status.edge_partition(&topic, partition, |p| p.last_error = Some(why));
                        // Keep it out of `running` only after the wait: the next discovery restarts it.
                        let key = (topic, partition);
                        if retry.is_zero() {
                            running.remove(&key);
                        } else {
                            senders.spawn(async move {
                                tokio::time::sleep(retry).await;
                                (key, StreamEnd::Retry)
                            });
                        }
                    }
                }
                reason = connection.closed() => {
                    self.note_link(&connection);
                    // The next connection counts from where this one ended.
                    self.status.edge(|s| {
                        s.wire_tx_bytes_before = s.wire_tx_bytes;
                        s.wire_rx_bytes_before = s.wire_rx_bytes;
                    });
                    return refused_or(&reason);
                }
                _ = shutdown.cancelled() => {
                    connection.close(close::SHUTDOWN.into(), b"edge shutting down");
                    return "shutting down".into();
                }
            }
        }
    }
}

/// Writes a heartbeat record (key: the edge name; value: JSON with the edge's clock) to
/// the local `heartbeats` topic every `interval`, whether or not the link is up: the hub
/// then sees both liveness and how long records take to reach it.
async fn write_heartbeats<L: MirrorLog>(
    log: Arc<L>,
    edge: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = now_ms();
        let value = format!("{{\"edge\":\"{edge}\",\"timestamp\":{now}}}");
        let written = log
            .append_record(
                HEARTBEATS_TOPIC,
                Bytes::from(edge.clone()),
                Bytes::from(value),
                now,
            )
            .await;
        match written {
            Ok(()) if failing => {
                info!("heartbeats are written again");
                failing = false;
            }
            Err(e) if !failing => {
                warn!(error = %e, "cannot write a heartbeat record (retrying every interval)");
                failing = true;
            }
            _ => {}
        }
    }
}

/// The reason a connection closed, with the hub's own words when it refused us.
fn refused_or(error: &quinn::ConnectionError) -> String {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            let code = u64::from(close.error_code);
            if code == u64::from(crate::wire::close::REFUSED) {
                format!("the hub refused this edge: {reason}")
            } else if code == u64::from(crate::wire::close::REPLACED) {
                format!("the hub closed this connection: {reason}")
            } else {
                format!("the hub closed the connection: {reason}")
            }
        }
        other => tls::explain(other),
    }
}

/// One partition's sender.
struct Sender<L> {
    edge: Arc<Edge>,
    log: Arc<L>,
    status: SharedStatus,
    metrics: MirrorMetrics,
    topic: TopicInfo,
    partition: i32,
}

/// A frame sent and not yet acknowledged.
struct InFlight {
    next_offset: i64,
    bytes: usize,
    records: i64,
    first_timestamp: i64,
}

fn stream_end(e: impl ToString, connection: &quinn::Connection) -> StreamEnd {
    match connection.close_reason() {
        Some(reason) => StreamEnd::Connection(refused_or(&reason)),
        None => StreamEnd::Failed(e.to_string()),
    }
}

impl<L: MirrorLog> Sender<L> {
    async fn run(&self, connection: quinn::Connection, shutdown: CancellationToken) -> StreamEnd {
        let (topic, partition) = (self.topic.name.as_str(), self.partition);
        let (send, recv) = match connection.open_bi().await {
            Ok(s) => s,
            Err(e) => return StreamEnd::Connection(refused_or(&e)),
        };
        let mut writer = FramedWrite::new(send, codec());
        let mut reader = FramedRead::new(recv, codec());
        let open = Frame::Open {
            topic: topic.to_string(),
            partition,
            partition_count: self.topic.partitions,
            configs: self.topic.configs.clone(),
        };
        if let Err(e) = send_frame(&mut writer, open).await {
            return stream_end(e, &connection);
        }
        let (hub_start, hub_end) = match next_frame(&mut reader).await {
            Ok(Frame::Position { log_start, log_end }) => (log_start, log_end),
            Ok(Frame::Error {
                retriable: true,
                reason,
            }) => return StreamEnd::Failed(reason),
            Ok(Frame::Error { reason, .. }) => return StreamEnd::Refused(reason),
            Ok(other) => return StreamEnd::Failed(format!("expected Position, got {other:?}")),
            Err(e) => return stream_end(e, &connection),
        };
        let (edge_start, edge_end) = match self.log.offsets(topic, partition) {
            Ok(o) => o,
            Err(e) => return StreamEnd::Failed(e.to_string()),
        };
        if hub_end > edge_end {
            return StreamEnd::Refused(format!(
                "the hub holds offsets up to {hub_end} but this edge's log ends at {edge_end} \
                 (was the edge's data directory replaced?); not mirroring this partition"
            ));
        }
        tracing::debug!(
            topic,
            partition,
            hub_start,
            hub_end,
            edge_start,
            edge_end,
            "mirror stream open"
        );
        let topic_labels = labels(&[("topic", topic)]);
        let lag = self
            .metrics
            .lag_records
            .get_or_create(&labels(&[
                ("topic", topic),
                ("partition", &partition.to_string()),
            ]))
            .clone();
        let mut acked = hub_end;
        let mut next = hub_end;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut events = self.log.durable_events();
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        let window = self.edge.config.window_bytes;
        let mut bytes_checked = std::time::Instant::now() - Duration::from_secs(2);
        loop {
            // Fill the window with whatever is durable beyond what was sent.
            let (start, end) = match self.log.offsets(topic, partition) {
                Ok(o) => o,
                Err(e) => return StreamEnd::Failed(e.to_string()),
            };
            if next < start {
                next = start;
            }
            while in_flight_bytes < window && next < end {
                let bytes =
                    match self
                        .log
                        .read(topic, partition, next, self.edge.config.max_frame_bytes)
                    {
                        Ok(b) => b,
                        Err(PortError::OutOfRange { start, .. }) => {
                            next = start.max(next);
                            continue;
                        }
                        Err(e) => return StreamEnd::Failed(e.to_string()),
                    };
                let Some(spans) = batches::spans(&bytes) else {
                    return StreamEnd::Failed(format!(
                        "unreadable stored batches at {topic}-{partition} offset {next}"
                    ));
                };
                let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
                    break;
                };
                let frame = Frame::Batches {
                    edge_end: end,
                    batches: bytes.clone(),
                };
                if let Err(e) = send_frame(&mut writer, frame).await {
                    return stream_end(e, &connection);
                }
                in_flight.push_back(InFlight {
                    next_offset: last.next_offset,
                    bytes: bytes.len(),
                    records: last.next_offset - first.base_offset.max(next),
                    first_timestamp: first.first_timestamp,
                });
                in_flight_bytes += bytes.len();
                next = last.next_offset;
            }
            let behind = (end - acked).max(0);
            lag.set(behind);
            if bytes_checked.elapsed() >= Duration::from_secs(1) {
                bytes_checked = std::time::Instant::now();
                if let Ok(bytes) = self.log.bytes_from(topic, partition, acked) {
                    self.status
                        .edge_partition(topic, partition, |p| p.bytes_behind = bytes);
                }
            }
            let oldest = in_flight.front().map(|f| f.first_timestamp);
            self.status.edge_partition(topic, partition, |p| {
                p.edge_start = start;
                p.edge_end = end;
                p.hub_end = acked;
                p.records_behind = behind;
                p.seconds_behind = match (behind, oldest) {
                    (0, _) => None,
                    (_, Some(ts)) => Some(((now_ms() - ts).max(0)) as f64 / 1000.0),
                    _ => None,
                };
            });
            tokio::select! {
                frame = next_frame(&mut reader) => match frame {
                    Ok(Frame::Ack { log_end, duplicates: _, gaps }) => {
                        while in_flight.front().is_some_and(|f| f.next_offset <= log_end) {
                            if let Some(done) = in_flight.pop_front() {
                                in_flight_bytes -= done.bytes;
                                self.metrics.sent_records.get_or_create(&topic_labels).inc_by(done.records.max(0) as u64);
                                self.metrics.sent_bytes.get_or_create(&topic_labels).inc_by(done.bytes as u64);
                            }
                        }
                        for (from, to) in &gaps {
                            warn!(topic, partition, from, to, lost = to - from,
                                "mirror gap: these records were deleted here before the hub had them");
                            self.status.edge_partition(topic, partition, |p| p.gap_records += to - from);
                        }
                        acked = acked.max(log_end);
                        self.status.edge_partition(topic, partition, |p| p.last_error = None);
                    }
                    Ok(Frame::Error { retriable: true, reason }) => return StreamEnd::Failed(reason),
                    Ok(Frame::Error { reason, .. }) => return StreamEnd::Refused(reason),
                    Ok(other) => return StreamEnd::Failed(format!("unexpected frame {other:?}")),
                    Err(e) => return stream_end(e, &connection),
                },
                changed = events.changed(), if in_flight_bytes < window => {
                    if changed.is_err() {
                        return StreamEnd::Failed("the log is closing".into());
                    }
                }
                _ = recheck.tick() => {}
                _ = shutdown.cancelled() => return StreamEnd::Connection("shutting down".into()),
            }
        }
    }
}

async fn next_frame(
    reader: &mut FramedRead<quinn::RecvStream, tokio_util::codec::LengthDelimitedCodec>,
) -> Result<Frame, String> {
    match reader.next().await {
        Some(Ok(bytes)) => Frame::decode(bytes.freeze()).map_err(|e| e.to_string()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the hub closed the stream".into()),
    }
}

async fn send_frame(
    writer: &mut FramedWrite<quinn::SendStream, tokio_util::codec::LengthDelimitedCodec>,
    frame: Frame,
) -> Result<(), String> {
    let bytes: Bytes = frame.encode().map_err(|e| e.to_string())?;
    writer.send(bytes).await.map_err(|e| e.to_string())
}

/// Capped exponential backoff with full jitter: a random wait in [min, min(max, min·2ⁿ)].
struct Backoff {
    min_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    fn new(min_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            min_ms,
            max_ms: max_ms.max(min_ms),
            attempt: 0,
        }
    }

    fn next(&mut self) -> Duration {
        let ceiling = self
            .min_ms
            .saturating_mul(1u64 << self.attempt.min(20))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(fastrand::u64(self.min_ms..=ceiling))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}
