//! The hub: accepts edges over QUIC, knows each by its client certificate, and appends
//! what they send to `<edge><separator><topic>` at the offsets the edge stored it at.
//!
//! One connection per edge (a newer one replaces an older one). The edge's first stream is
//! the control stream (`Hello` → `Welcome`); every other stream carries one partition:
//! `Open` → `Position`, then `Batches` from the edge and `Ack`s from the hub, each sent
//! only once what it covers is durable. Appends happen only at the log end, so resends
//! are skipped and nothing is ever stored twice, however often either side restarts.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bandwidth::Bandwidth;
use crate::checkpoints;
use crate::config::{validate_edge_name, Hub, HEARTBEATS_TOPIC};
use crate::gaps::{Gap, GapJournal};
use crate::link::{incoming, send_frame, Incoming, Opened, SenderPool};
use crate::metrics::{labels, MirrorMetrics};
use crate::ports::{Appended, MirrorLog};
use crate::receiver::{self, ReceiveReport, Refusal, Target};
use crate::sender::{SendProgress, SendReport, Sender};
use crate::status::{now_ms, SharedStatus, RECENT_GAPS};
use crate::tls;
use crate::wire::{close, codec, Frame};
use crate::MirrorError;

/// How long an edge has to say who it is after the handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

struct Live {
    id: u64,
    connection: quinn::Connection,
}

struct Shared<L> {
    hub: Hub,
    log: Arc<L>,
    status: SharedStatus,
    metrics: MirrorMetrics,
    journal: GapJournal,
    live: Mutex<HashMap<String, Live>>,
    next_id: AtomicU64,
    /// Hub topics of edges admitted under `hub.max_topics_per_edge`.
    admitted: Mutex<HashSet<String>>,
}

/// A bound hub listener, ready to [`HubServer::run`].
pub struct HubServer<L> {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared<L>>,
}

impl<L: MirrorLog> HubServer<L> {
    /// Loads the certificates, opens the gap journal in `state_dir` and binds the UDP
    /// socket. Every error here stops `tern serve` with a message naming the file or key.
    pub fn bind(
        hub: Hub,
        log: Arc<L>,
        status: SharedStatus,
        metrics: MirrorMetrics,
        state_dir: &std::path::Path,
    ) -> Result<(HubServer<L>, SocketAddr), MirrorError> {
        let identity = tls::load_identity(&hub.config.cert, &hub.config.key)?;
        let roots = tls::load_roots(&hub.config.ca)?;
        let timing = tls::Timing {
            keep_alive: Duration::from_millis(hub.config.keep_alive_ms),
            idle_timeout: Duration::from_millis(hub.config.idle_timeout_ms),
        };
        let server = tls::server_config(identity, roots, &timing)?;
        let (journal, gaps) = GapJournal::open(state_dir).map_err(|source| MirrorError::Io {
            what: format!("gap journal in {}", state_dir.display()),
            source,
        })?;
        let endpoint =
            quinn::Endpoint::server(server, hub.listen).map_err(|source| MirrorError::Io {
                what: format!("hub.listen {}", hub.listen),
                source,
            })?;
        let local = endpoint.local_addr().map_err(|source| MirrorError::Io {
            what: format!("hub.listen {}", hub.listen),
            source,
        })?;
        status.hub(|h| h.listen = local.to_string());
        for gap in gaps {
            let edge = gap.edge.clone();
            note_gap(&status, &metrics, &edge, &gap, false);
        }
        info!(listen = %local, "mirror hub listening (QUIC)");
        Ok((
            HubServer {
                endpoint,
                shared: Arc::new(Shared {
                    hub,
                    log,
                    status,
                    metrics,
                    journal,
                    live: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(1),
                    admitted: Mutex::new(HashSet::new()),
                }),
            },
            local,
        ))
    }

    /// Serves edges until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let shared = Arc::clone(&self.shared);
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move { serve_edge(shared, incoming, shutdown).await });
                }
                _ = shutdown.cancelled() => break,
            }
        }
        self.endpoint
            .close(close::SHUTDOWN.into(), b"hub shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

fn note_gap(status: &SharedStatus, metrics: &MirrorMetrics, edge: &str, gap: &Gap, live: bool) {
    let lost = gap.to - gap.from;
    let l = labels(&[("edge", edge), ("topic", &gap.topic)]);
    metrics.gaps.get_or_create(&l).inc();
    metrics
        .gap_records
        .get_or_create(&l)
        .inc_by(lost.max(0) as u64);
    status.hub_partition(edge, &gap.topic, gap.partition, |p| {
        p.gap_records += lost;
        p.gaps.push((gap.from, gap.to));
        if p.gaps.len() > RECENT_GAPS {
            p.gaps.remove(0);
        }
    });
    if live {
        warn!(edge, topic = %gap.topic, partition = gap.partition, from = gap.from, to = gap.to,
            lost, "mirror gap: the edge deleted these records before they reached the hub");
    }
}

async fn serve_edge<L: MirrorLog>(
    shared: Arc<Shared<L>>,
    incoming: quinn::Incoming,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let full = shared.live.lock().map(|l| l.len()).unwrap_or(0) >= shared.hub.config.max_edges;
    if full {
        warn!(%remote, max = shared.hub.config.max_edges, "edge refused: hub.max_edges reached");
        incoming.refuse();
        return;
    }
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            warn!(%remote, error = %tls::explain(&e), "edge connection failed during the handshake");
            return;
        }
    };
    let prefix_of = |edge: &str| format!("{edge}{}", shared.hub.config.separator);
    let identified = match identify(&connection).await {
        Ok((edge, cap)) => shared
            .hub
            .check_edge_name(&edge)
            .and_then(|_| {
                shared
                    .log
                    .claim_namespace(&prefix_of(&edge))
                    .map_err(|e| e.to_string())
            })
            .map(|_| (edge, cap)),
        Err(reason) => Err(reason),
    };
    let (edge, cap) = match identified {
        Ok(identified) => identified,
        Err(reason) => {
            warn!(%remote, %reason, "edge refused");
            connection.close(close::REFUSED.into(), reason.as_bytes());
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let replaced = {
        let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
        live.insert(
            edge.clone(),
            Live {
                id,
                connection: connection.clone(),
            },
        )
    };
    if let Some(old) = replaced {
        let why = format!("replaced by a newer connection of edge {edge} from {remote}");
        info!(edge, old = %old.connection.remote_address(), new = %remote, "edge reconnected; closing its older connection");
        old.connection.close(close::REPLACED.into(), why.as_bytes());
    }
    let since = now_ms();
    shared.status.hub(|h| {
        let e = h.edges.entry(edge.clone()).or_default();
        e.connected = true;
        e.connected_since_ms = Some(since);
        e.address = Some(remote.to_string());
        e.last_error = None;
    });
    shared
        .metrics
        .connected
        .get_or_create(&labels(&[("edge", &edge)]))
        .set(1);
    info!(edge, %remote, "edge connected");
    let checkpoints_back = tokio::spawn(checkpoints::send(
        checkpoints::FromHub {
            hub: shared.hub.clone(),
            log: Arc::clone(&shared.log),
            edge: edge.clone(),
            status: shared.status.clone(),
        },
        Duration::from_millis(shared.hub.config.checkpoint_interval_ms),
        connection.clone(),
        shutdown.clone(),
    ));
    let downlink = tokio::spawn(send_down(
        Arc::clone(&shared),
        edge.clone(),
        Arc::new(Bandwidth::new(cap)),
        connection.clone(),
        shutdown.clone(),
    ));
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let reason = loop {
        tokio::select! {
            _ = refresh.tick() => {
                // The address changes when the edge's NAT rebinds (QUIC migrates the path).
                let address = connection.remote_address().to_string();
                let rtt_ms = connection.rtt().as_secs_f64() * 1000.0;
                shared.status.hub(|h| {
                    if let Some(e) = h.edges.get_mut(&edge) {
                        e.address = Some(address);
                        e.rtt_ms = Some(rtt_ms);
                    }
                });
            }
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let shared = Arc::clone(&shared);
                    let edge = edge.clone();
                    tokio::spawn(async move {
                        if let Err(reason) = serve_partition(&shared, &edge, send, recv).await {
                            debug!(edge, %reason, "partition stream ended");
                        }
                    });
                }
                Err(e) => break e.to_string(),
            },
            _ = shutdown.cancelled() => break "hub shutting down".to_string(),
        }
    };
    downlink.abort();
    checkpoints_back.abort();
    let still_current = {
        let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
        let current = live.get(&edge).is_some_and(|l| l.id == id);
        if current {
            live.remove(&edge);
        }
        current
    };
    if still_current {
        shared.status.hub(|h| {
            if let Some(e) = h.edges.get_mut(&edge) {
                e.connected = false;
                e.last_error = Some(reason.clone());
            }
        });
        shared
            .metrics
            .connected
            .get_or_create(&labels(&[("edge", &edge)]))
            .set(0);
    }
    info!(edge, %remote, %reason, "edge disconnected");
}

/// Sends the hub topics that `[[hub.downlink]]` maps to this edge down its connection,
/// one sender per partition, within the bandwidth cap the edge announced, until the
/// connection ends.
async fn send_down<L: MirrorLog>(
    shared: Arc<Shared<L>>,
    edge: String,
    bandwidth: Arc<Bandwidth>,
    connection: quinn::Connection,
    shutdown: CancellationToken,
) {
    let rules: HashMap<String, String> = shared.hub.downlink_for(&edge).into_iter().collect();
    if rules.is_empty() {
        return;
    }
    let mut pool = SenderPool::default();
    let mut tick = tokio::time::interval(Duration::from_millis(
        shared.hub.config.discovery_interval_ms,
    ));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for topic in shared.log.topics() {
                    let Some(edge_topic) = rules.get(&topic.name) else { continue };
                    let make = |partition| Sender {
                        log: Arc::clone(&shared.log),
                        topic: topic.clone(),
                        partition,
                        announce: edge_topic.clone(),
                        window_bytes: DOWNLINK_WINDOW,
                        max_frame_bytes: DOWNLINK_FRAME,
                        bandwidth: Arc::clone(&bandwidth),
                        // Commands are live by nature.
                        priority: true,
                        report: Arc::new(ToEdge {
                            status: shared.status.clone(),
                            metrics: shared.metrics.clone(),
                            edge: edge.clone(),
                            hub_topic: topic.name.clone(),
                            edge_topic: edge_topic.clone(),
                            partition,
                        }),
                    };
                    pool.discover(&topic, make, &connection, &shutdown);
                }
            }
            Some(ended) = pool.next_end() => {
                shared.status.hub_downlink(&edge, &ended.topic, "", ended.partition, |p| {
                    p.last_error = Some(ended.reason);
                });
            }
            _ = connection.closed() => return,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Unacknowledged bytes per downlink partition, and bytes per frame: commands are small.
const DOWNLINK_WINDOW: usize = 1024 * 1024;
const DOWNLINK_FRAME: usize = 256 * 1024;

/// The hub's view of one partition it sends down to an edge.
struct ToEdge {
    status: SharedStatus,
    metrics: MirrorMetrics,
    edge: String,
    hub_topic: String,
    edge_topic: String,
    partition: i32,
}

impl ToEdge {
    fn update(&self, f: impl FnOnce(&mut crate::status::DownlinkPartition)) {
        self.status.hub_downlink(
            &self.edge,
            &self.hub_topic,
            &self.edge_topic,
            self.partition,
            f,
        );
    }
}

impl SendReport for ToEdge {
    fn progress(&self, progress: &SendProgress) {
        self.update(|p| {
            p.hub_end = progress.source_end;
            p.edge_end = progress.acked;
            p.records_behind = (progress.source_end - progress.acked).max(0);
        });
    }

    fn bytes_behind(&self, _bytes: u64) {}

    fn acknowledged(&self, records: u64, bytes: u64) {
        let l = labels(&[("edge", &self.edge), ("topic", &self.hub_topic)]);
        self.metrics.sent_records.get_or_create(&l).inc_by(records);
        self.metrics.sent_bytes.get_or_create(&l).inc_by(bytes);
    }

    fn gap(&self, from: i64, to: i64) {
        warn!(edge = %self.edge, topic = %self.hub_topic, partition = self.partition, from, to,
            lost = to - from, "downlink gap: these records were deleted here before the edge had them");
        self.update(|p| p.gap_records += to - from);
    }

    fn healthy(&self) {
        self.update(|p| p.last_error = None);
    }
}

/// Reads the edge's `Hello` and checks its certificate is valid for the name it gives.
/// Returns the edge's name and the bandwidth cap it announced.
async fn identify(connection: &quinn::Connection) -> Result<(String, u64), String> {
    let (send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
        .await
        .map_err(|_| "no Hello within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let mut reader = FramedRead::new(recv, codec());
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .map_err(|_| "no Hello within 10 s".to_string())?;
    let (edge, max_bytes_per_sec) = match first.map(|r| r.map(|b| Frame::decode(b.freeze()))) {
        Some(Ok(Ok(Frame::Hello {
            edge,
            max_bytes_per_sec,
        }))) => (edge, max_bytes_per_sec),
        other => return Err(format!("expected Hello, got {other:?}")),
    };
    validate_edge_name(&edge)?;
    tls::check_edge_identity(connection.peer_identity(), &edge)?;
    let mut writer = FramedWrite::new(send, codec());
    let welcome = Frame::Welcome {
        prefix: String::new(),
    }
    .encode()
    .map_err(|e| e.to_string())?;
    writer.send(welcome).await.map_err(|e| e.to_string())?;
    // The control stream stays open for later use (commands, heartbeats).
    tokio::spawn(async move {
        let _keep = writer;
        while let Some(Ok(_)) = reader.next().await {}
    });
    Ok((edge, max_bytes_per_sec))
}

/// One stream from the edge: a partition of its topic `t`, which goes to
/// `<edge><separator>t`, or its consumer group checkpoints.
async fn serve_partition<L: MirrorLog>(
    shared: &Shared<L>,
    edge: &str,
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
            let on_applied = |_group: &str, applied: u32| {
                shared
                    .metrics
                    .checkpoints
                    .get_or_create(&labels(&[("edge", edge)]))
                    .inc_by(u64::from(applied));
                shared.status.hub(|h| {
                    let e = h.edges.entry(edge.to_string()).or_default();
                    e.checkpoints += u64::from(applied);
                    e.last_checkpoint_ms = Some(now_ms());
                });
            };
            let side = checkpoints::Receiving {
                log: shared.log.as_ref(),
                prefix: format!("{edge}{}", shared.hub.config.separator),
                on_applied: &on_applied,
            };
            return checkpoints::serve(side, first, reader, writer).await;
        }
    };
    let prefix = format!("{edge}{}", shared.hub.config.separator);
    let hub_topic = format!("{prefix}{topic}");
    if let Err(refusal) = admit_topic(shared, &prefix, &hub_topic, partition_count) {
        warn!(edge, topic = %hub_topic, reason = %refusal.reason, "mirror stream refused");
        send_frame(&mut writer, refusal.frame()).await?;
        return Err(refusal.reason);
    }
    let report = FromEdge {
        shared,
        edge,
        hub_topic: &hub_topic,
        partition,
        heartbeats: topic == HEARTBEATS_TOPIC,
        labels: labels(&[("edge", edge), ("topic", &hub_topic)]),
    };
    let target = Target {
        topic: &hub_topic,
        partition,
        partition_count,
        configs: &configs,
        keep_local: &|k| shared.hub.keeps_local(k),
    };
    receiver::receive(shared.log.as_ref(), target, &report, reader, writer).await
}

/// An edge's namespace is bounded: at most `hub.max_topics_per_edge` topics and
/// `hub.max_partitions_per_topic` partitions each, so that one edge (a bug, a stolen
/// certificate) cannot fill the hub with topics.
fn admit_topic<L: MirrorLog>(
    shared: &Shared<L>,
    prefix: &str,
    hub_topic: &str,
    partition_count: i32,
) -> Result<(), Refusal> {
    let limits = &shared.hub.config;
    if partition_count > limits.max_partitions_per_topic {
        return Err(Refusal::permanent(format!(
            "{partition_count} partitions is more than hub.max_partitions_per_topic ({})",
            limits.max_partitions_per_topic
        )));
    }
    // Streams of new topics arrive together: count and admit under one lock.
    let mut admitted = shared.admitted.lock().unwrap_or_else(|p| p.into_inner());
    if admitted.contains(hub_topic) {
        return Ok(());
    }
    admitted.extend(
        shared
            .log
            .topics()
            .into_iter()
            .filter(|t| t.name.starts_with(prefix))
            .map(|t| t.name),
    );
    if admitted.contains(hub_topic) {
        return Ok(());
    }
    let owned = admitted.iter().filter(|t| t.starts_with(prefix)).count();
    if owned >= limits.max_topics_per_edge {
        return Err(Refusal::permanent(format!(
            "this edge already has {owned} topics on the hub, its limit (hub.max_topics_per_edge)"
        )));
    }
    admitted.insert(hub_topic.to_string());
    Ok(())
}

/// The hub's view of one edge partition stream: status, metrics, the gap journal.
struct FromEdge<'a, L> {
    shared: &'a Shared<L>,
    edge: &'a str,
    hub_topic: &'a str,
    partition: i32,
    heartbeats: bool,
    labels: Vec<(String, String)>,
}

impl<L: MirrorLog> ReceiveReport for FromEdge<'_, L> {
    fn opened(&self, log_end: i64) {
        self.shared
            .status
            .hub_partition(self.edge, self.hub_topic, self.partition, |p| {
                p.hub_end = log_end;
                p.records_behind = (p.edge_end - log_end).max(0);
            });
    }

    fn source_end(&self, end: i64) {
        self.shared
            .status
            .hub_partition(self.edge, self.hub_topic, self.partition, |p| {
                p.edge_end = end
            });
    }

    fn batches(&self, batches: &Bytes) {
        if self.heartbeats {
            note_heartbeat(self.shared, self.edge, batches);
        }
    }

    fn appended(&self, appended: &Appended) {
        let metrics = &self.shared.metrics;
        if appended.duplicates > 0 {
            metrics
                .duplicates
                .get_or_create(&self.labels)
                .inc_by(appended.duplicates);
        }
        metrics
            .received_records
            .get_or_create(&self.labels)
            .inc_by(appended.records);
        metrics
            .received_bytes
            .get_or_create(&self.labels)
            .inc_by(appended.bytes);
    }

    fn gap(&self, from: i64, to: i64) -> Result<(), String> {
        let gap = Gap {
            edge: self.edge.to_string(),
            topic: self.hub_topic.to_string(),
            partition: self.partition,
            from,
            to,
            recorded_ms: now_ms(),
        };
        let journal = &self.shared.journal;
        tokio::task::block_in_place(|| journal.record(&gap))
            .map_err(|e| format!("cannot record a gap in {}: {e}", journal.path().display()))?;
        note_gap(
            &self.shared.status,
            &self.shared.metrics,
            self.edge,
            &gap,
            true,
        );
        Ok(())
    }

    fn durable(&self, appended: &Appended) {
        self.shared
            .status
            .hub_partition(self.edge, self.hub_topic, self.partition, |p| {
                p.hub_end = appended.log_end;
                p.duplicates += appended.duplicates;
                p.records_behind = (p.edge_end - appended.log_end).max(0);
            });
    }
}

/// Liveness and latency from the edge's heartbeat records (their timestamps are the
/// edge's clock when it wrote them).
fn note_heartbeat<L>(shared: &Shared<L>, edge: &str, batches: &Bytes) {
    let Some(newest) = crate::batches::spans(batches)
        .and_then(|spans| spans.iter().map(|s| s.max_timestamp).max())
    else {
        return;
    };
    let latency = now_ms() - newest;
    shared.status.hub(|h| {
        let e = h.edges.entry(edge.to_string()).or_default();
        if e.last_heartbeat_ms.is_none_or(|t| newest > t) {
            e.last_heartbeat_ms = Some(newest);
            e.heartbeat_latency_ms = Some(latency);
        }
    });
    shared
        .metrics
        .heartbeat_timestamp
        .get_or_create(&labels(&[("edge", edge)]))
        .set(newest / 1000);
}
