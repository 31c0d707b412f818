//! The edge's link: keeps one QUIC connection to the hub (reconnecting for ever with
//! capped exponential backoff and full jitter), finds the topics to mirror, and runs one
//! sender per partition on its own stream, so that a slow partition never blocks another.
//!
//! A sender asks the hub where its copy ends, sends stored batches from there (never more
//! than `window_bytes` unacknowledged) and moves on as acknowledgements arrive. Nothing is
//! stored on the edge about progress: after any failure the hub's answer is the truth.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bandwidth::Bandwidth;
use crate::checkpoints;
use crate::config::{Edge, HEARTBEATS_TOPIC};
use crate::link::{incoming, send_frame, Incoming, Opened, SenderPool};
use crate::metrics::{labels, MirrorMetrics};
use crate::ports::{Appended, MirrorLog};
use crate::receiver::{self, ReceiveReport, Refusal, Target};
use crate::sender::{SendProgress, SendReport, Sender};
use crate::status::{now_ms, SharedStatus};
use crate::tls;
use crate::wire::{close, codec, Frame};
use crate::MirrorError;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The edge link, ready to [`EdgeLink::run`].
pub struct EdgeLink<L> {
    edge: Arc<Edge>,
    log: Arc<L>,
    client: quinn::ClientConfig,
    status: SharedStatus,
    metrics: MirrorMetrics,
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
                let l = labels(&[
                    ("topic", &topic.name),
                    ("partition", &partition.to_string()),
                ]);
                if let Ok(bytes) = self.log.bytes_from(&topic.name, partition, from) {
                    self.status
                        .edge_partition(&topic.name, partition, |p| p.bytes_behind = bytes);
                    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                    self.metrics.lag_bytes.get_or_create(&l).set(bytes);
                }
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
            max_bytes_per_sec: edge.config.max_bytes_per_sec,
        }
        .encode()
        .map_err(|e| e.to_string())?;
        // A hub that refuses our certificate closes the connection after our side of the
        // handshake is done: the send may be what notices; say why the hub closed it.
        writer.send(hello).await.map_err(|e| {
            connection
                .close_reason()
                .map_or_else(|| e.to_string(), |why| refused_or(&why))
        })?;
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

    /// Runs the partition senders, and receives what the hub sends down, on one
    /// connection until it closes.
    async fn serve(&self, connection: quinn::Connection, shutdown: &CancellationToken) -> String {
        let mut pool = SenderPool::default();
        let bandwidth = Arc::new(Bandwidth::new(self.edge.config.max_bytes_per_sec));
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.edge.config.discovery_interval_ms.max(100),
        ));
        let checkpoints = tokio::spawn(checkpoints::send(
            checkpoints::FromEdge {
                edge: Arc::clone(&self.edge),
                log: Arc::clone(&self.log),
                status: self.status.clone(),
            },
            Duration::from_millis(self.edge.config.checkpoint_interval_ms),
            connection.clone(),
            shutdown.clone(),
        ));
        let _stop_checkpoints = AbortOnDrop(checkpoints);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.note_link(&connection);
                    for topic in self.log.topics() {
                        if topic.internal || !self.edge.selects(&topic.name) {
                            continue;
                        }
                        let make = |partition| Sender {
                            log: Arc::clone(&self.log),
                            topic: topic.clone(),
                            partition,
                            announce: topic.name.clone(),
                            window_bytes: self.edge.config.window_bytes,
                            max_frame_bytes: self.edge.config.max_frame_bytes,
                            bandwidth: Arc::clone(&bandwidth),
                            priority: self.edge.is_priority(&topic.name),
                            report: Arc::new(ToHub {
                                status: self.status.clone(),
                                metrics: self.metrics.clone(),
                                topic: topic.name.clone(),
                                partition,
                            }),
                        };
                        pool.discover(&topic, make, &connection, shutdown);
                    }
                }
                Some(ended) = pool.next_end() => {
                    self.status.edge_partition(&ended.topic, ended.partition, |p| p.last_error = Some(ended.reason));
                }
                stream = connection.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        let (edge, log, status) = (Arc::clone(&self.edge), Arc::clone(&self.log), self.status.clone());
                        tokio::spawn(async move {
                            if let Err(reason) = receive_down(&edge, log.as_ref(), &status, send, recv).await {
                                tracing::debug!(%reason, "downlink stream ended");
                            }
                        });
                    }
                    Err(e) => {
                        self.note_link(&connection);
                        self.status.edge(|s| {
                            s.wire_tx_bytes_before = s.wire_tx_bytes;
                            s.wire_rx_bytes_before = s.wire_rx_bytes;
                        });
                        return refused_or(&e);
                    }
                },
                _ = shutdown.cancelled() => {
                    connection.close(close::SHUTDOWN.into(), b"edge shutting down");
                    return "shutting down".into();
                }
            }
        }
    }
}

/// One stream the hub opened: a command topic partition sent down (only topics in
/// `mirror.downlink_topics` are accepted; they are written at the hub's offsets), or the
/// hub's group checkpoints for this edge's topics.
async fn receive_down<L: MirrorLog>(
    edge: &Edge,
    log: &L,
    status: &SharedStatus,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<(), String> {
    let mut reader = FramedRead::new(recv, codec());
    let mut writer = FramedWrite::new(send, codec());
    let Opened {
        topic,
        partition,
        partition_count,
        configs,
    } = match incoming(&mut reader).await? {
        None => return Ok(()),
        Some(Incoming::Partition(opened)) => opened,
        Some(Incoming::Checkpoints(first)) => {
            // The hub's groups moving back to this edge.
            let on_applied = |group: &str, applied: u32| {
                info!(%group, applied, "group offsets checkpointed from the hub");
                status.edge(|s| s.checkpoints_from_hub += u64::from(applied));
            };
            let side = checkpoints::Receiving {
                log,
                prefix: String::new(),
                on_applied: &on_applied,
            };
            return checkpoints::serve(side, first, reader, writer).await;
        }
    };
    if !edge.receives(&topic) {
        let refusal = Refusal::permanent(format!(
            "this edge does not accept `{topic}` from the hub (mirror.downlink_topics)"
        ));
        warn!(%topic, "the hub sent a topic this edge does not accept; refused");
        send_frame(&mut writer, refusal.frame()).await?;
        return Err(refusal.reason);
    }
    log.claim_topic(&topic).map_err(|e| e.to_string())?;
    let report = FromHub {
        status: status.clone(),
        topic: topic.clone(),
        partition,
    };
    let target = Target {
        topic: &topic,
        partition,
        partition_count,
        configs: &configs,
        keep_local: &|_| false,
    };
    let result = receiver::receive(log, target, &report, reader, writer).await;
    if let Err(reason) = &result {
        status.edge_downlink(&topic, partition, |p| p.last_error = Some(reason.clone()));
    }
    result
}

/// The edge's view of one partition it mirrors up.
struct ToHub {
    status: SharedStatus,
    metrics: MirrorMetrics,
    topic: String,
    partition: i32,
}

impl SendReport for ToHub {
    fn progress(&self, progress: &SendProgress) {
        let behind = (progress.source_end - progress.acked).max(0);
        let l = labels(&[
            ("topic", &self.topic),
            ("partition", &self.partition.to_string()),
        ]);
        self.metrics.lag_records.get_or_create(&l).set(behind);
        self.metrics
            .lag_seconds
            .get_or_create(&l)
            .set(progress.seconds_behind.unwrap_or(0.0));
        self.status
            .edge_partition(&self.topic, self.partition, |p| {
                p.edge_start = progress.source_start;
                p.edge_end = progress.source_end;
                p.hub_end = progress.acked;
                p.records_behind = behind;
                p.seconds_behind = progress.seconds_behind;
            });
    }

    fn bytes_behind(&self, bytes: u64) {
        let l = labels(&[
            ("topic", &self.topic),
            ("partition", &self.partition.to_string()),
        ]);
        self.metrics
            .lag_bytes
            .get_or_create(&l)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.status
            .edge_partition(&self.topic, self.partition, |p| p.bytes_behind = bytes);
    }

    fn acknowledged(&self, records: u64, bytes: u64) {
        let l = labels(&[("topic", &self.topic)]);
        self.metrics.sent_records.get_or_create(&l).inc_by(records);
        self.metrics.sent_bytes.get_or_create(&l).inc_by(bytes);
    }

    fn gap(&self, from: i64, to: i64) {
        warn!(topic = %self.topic, partition = self.partition, from, to, lost = to - from,
            "mirror gap: these records were deleted here before the hub had them");
        self.status
            .edge_partition(&self.topic, self.partition, |p| p.gap_records += to - from);
    }

    fn healthy(&self) {
        self.status
            .edge_partition(&self.topic, self.partition, |p| p.last_error = None);
    }
}

/// The edge's view of one command topic partition it receives.
struct FromHub {
    status: SharedStatus,
    topic: String,
    partition: i32,
}

impl FromHub {
    fn update(&self, f: impl FnOnce(&mut crate::status::DownlinkPartition)) {
        self.status.edge_downlink(&self.topic, self.partition, f);
    }
}

impl ReceiveReport for FromHub {
    fn opened(&self, log_end: i64) {
        self.update(|p| p.edge_end = log_end);
    }

    fn source_end(&self, end: i64) {
        self.update(|p| p.hub_end = end);
    }

    fn appended(&self, _appended: &Appended) {}

    fn gap(&self, from: i64, to: i64) -> Result<(), String> {
        warn!(topic = %self.topic, partition = self.partition, from, to, lost = to - from,
            "downlink gap: the hub deleted these records before they reached this edge");
        self.update(|p| p.gap_records += to - from);
        Ok(())
    }

    fn durable(&self, appended: &Appended) {
        self.update(|p| {
            p.edge_end = appended.log_end;
            p.records_behind = (p.hub_end - appended.log_end).max(0);
            p.last_error = None;
        });
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

/// Aborts a per-connection task when the connection's loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
