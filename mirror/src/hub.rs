//! The hub: accepts edges over QUIC, knows each by its client certificate, and appends
//! what they send to `<edge><separator><topic>` at the offsets the edge stored it at.
//!
//! One connection per edge (a newer one replaces an older one). The edge's first stream is
//! the control stream (`Hello` → `Welcome`); every other stream carries one partition:
//! `Open` → `Position`, then `Batches` from the edge and `Ack`s from the hub, each sent
//! only once what it covers is durable. Appends happen only at the log end, so resends
//! are skipped and nothing is ever stored twice, however often either side restarts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{validate_edge_name, Hub, HEARTBEATS_TOPIC};
use crate::gaps::{Gap, GapJournal};
use crate::metrics::{labels, MirrorMetrics};
use crate::ports::{Appended, MirrorLog, PortError};
use crate::status::{now_ms, SharedStatus, RECENT_GAPS};
use crate::tls;
use crate::wire::{close, codec, Frame};
use crate::MirrorError;

/// How long an edge has to say who it is after the handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Appends of one partition stream waiting for durability before the hub stops reading
/// that stream (QUIC flow control then holds the edge back).
const PENDING_ACKS: usize = 32;

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
        Ok(edge) => shared
            .log
            .claim_namespace(&prefix_of(&edge))
            .map(|_| edge)
            .map_err(|e| e.to_string()),
        Err(reason) => Err(reason),
    };
    let edge = match identified {
        Ok(edge) => edge,
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

/// Reads the edge's `Hello` and checks its certificate is valid for the name it gives.
async fn identify(connection: &quinn::Connection) -> Result<String, String> {
    let (send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
        .await
        .map_err(|_| "no Hello within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let mut reader = FramedRead::new(recv, codec());
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .map_err(|_| "no Hello within 10 s".to_string())?;
    let edge = match first.map(|r| r.map(|b| Frame::decode(b.freeze()))) {
        Some(Ok(Ok(Frame::Hello { edge }))) => edge,
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
    Ok(edge)
}

enum ToAck {
    Ack(Appended),
    Fail(Refusal),
}

/// Why the hub ends a partition stream, and whether the edge should try again soon.
struct Refusal {
    retriable: bool,
    reason: String,
}

impl Refusal {
    fn from_port(context: &str, e: PortError) -> Refusal {
        Refusal {
            retriable: !matches!(e, PortError::Refused(_)),
            reason: format!("{context}{e}"),
        }
    }

    fn permanent(reason: String) -> Refusal {
        Refusal {
            retriable: false,
            reason,
        }
    }

    fn frame(&self) -> Frame {
        Frame::Error {
            retriable: self.retriable,
            reason: self.reason.clone(),
        }
    }
}

/// One partition stream: `Open` → `Position`, then appends and in-order acknowledgements.
async fn serve_partition<L: MirrorLog>(
    shared: &Shared<L>,
    edge: &str,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<(), String> {
    let mut reader = FramedRead::new(recv, codec());
    let mut writer = FramedWrite::new(send, codec());
    let open = match reader.next().await {
        Some(Ok(bytes)) => Frame::decode(bytes.freeze()).map_err(|e| e.to_string())?,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Ok(()),
    };
    let Frame::Open {
        topic,
        partition,
        partition_count,
        configs,
    } = open
    else {
        return Err("expected Open".into());
    };
    let hub_topic = format!("{edge}{}{topic}", shared.hub.config.separator);
    let position = (|| {
        if !(0..partition_count).contains(&partition) {
            return Err(Refusal::permanent(format!(
                "partition {partition} outside the {partition_count} partitions announced"
            )));
        }
        shared
            .log
            .ensure_topic(&hub_topic, partition_count, &configs, &|k| {
                shared.hub.keeps_local(k)
            })
            .map_err(|e| Refusal::from_port(&format!("cannot create {hub_topic}: "), e))?;
        shared
            .log
            .offsets(&hub_topic, partition)
            .map_err(|e| Refusal::from_port("", e))
    })();
    let (log_start, log_end) = match position {
        Ok(p) => p,
        Err(refusal) => {
            warn!(edge, topic = %hub_topic, partition, reason = %refusal.reason,
                retriable = refusal.retriable, "mirror stream refused");
            send_frame(&mut writer, refusal.frame()).await?;
            return Err(refusal.reason);
        }
    };
    shared
        .status
        .hub_partition(edge, &hub_topic, partition, |p| {
            p.hub_end = log_end;
            p.records_behind = (p.edge_end - log_end).max(0);
        });
    send_frame(&mut writer, Frame::Position { log_start, log_end }).await?;

    let labels = labels(&[("edge", edge), ("topic", &hub_topic)]);
    let (tx, mut rx) = mpsc::channel::<ToAck>(PENDING_ACKS);
    let (hub_topic, labels) = (hub_topic.as_str(), &labels);
    // `receive` owns the sender: when it ends, the acknowledger drains and ends too.
    let receive = async move {
        while let Some(frame) = reader.next().await {
            let bytes = frame.map_err(|e| e.to_string())?;
            let Frame::Batches { edge_end, batches } =
                Frame::decode(bytes.freeze()).map_err(|e| e.to_string())?
            else {
                return Err("expected Batches".to_string());
            };
            shared
                .status
                .hub_partition(edge, hub_topic, partition, |p| p.edge_end = edge_end);
            if topic == HEARTBEATS_TOPIC {
                note_heartbeat(shared, edge, &batches);
            }
            let appended = match append(shared, edge, hub_topic, partition, &batches) {
                Ok(a) => a,
                Err(refusal) => {
                    // Stop reading; the acknowledger sends the error after the acks before it.
                    warn!(edge, topic = %hub_topic, partition, reason = %refusal.reason,
                        retriable = refusal.retriable, "mirror append refused");
                    let _ = tx.send(ToAck::Fail(refusal)).await;
                    return Ok(());
                }
            };
            shared
                .metrics
                .received_records
                .get_or_create(labels)
                .inc_by(appended.records);
            shared
                .metrics
                .received_bytes
                .get_or_create(labels)
                .inc_by(appended.bytes);
            if tx.send(ToAck::Ack(appended)).await.is_err() {
                return Err("acknowledgements stopped".to_string());
            }
        }
        Ok(())
    };
    let acknowledge = async {
        while let Some(next) = rx.recv().await {
            let appended = match next {
                ToAck::Ack(a) => a,
                ToAck::Fail(refusal) => {
                    send_frame(&mut writer, refusal.frame()).await?;
                    return Err(refusal.reason);
                }
            };
            shared
                .log
                .wait_durable(hub_topic, partition, &appended)
                .await
                .map_err(|e| e.to_string())?;
            shared
                .status
                .hub_partition(edge, hub_topic, partition, |p| {
                    p.hub_end = appended.log_end;
                    p.duplicates += appended.duplicates;
                    p.records_behind = (p.edge_end - appended.log_end).max(0);
                });
            send_frame(
                &mut writer,
                Frame::Ack {
                    log_end: appended.log_end,
                    duplicates: appended.duplicates,
                    gaps: appended.gaps.clone(),
                },
            )
            .await?;
        }
        Ok(())
    };
    tokio::try_join!(receive, acknowledge).map(|_| ())
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

/// Appends one frame of batches and journals any gap it jumped.
fn append<L: MirrorLog>(
    shared: &Shared<L>,
    edge: &str,
    hub_topic: &str,
    partition: i32,
    batches: &Bytes,
) -> Result<Appended, Refusal> {
    let appended = shared
        .log
        .append_mirrored(hub_topic, partition, batches)
        .map_err(|e| Refusal::from_port("", e))?;
    if appended.duplicates > 0 {
        shared
            .metrics
            .duplicates
            .get_or_create(&labels(&[("edge", edge), ("topic", hub_topic)]))
            .inc_by(appended.duplicates);
    }
    for (from, to) in &appended.gaps {
        let gap = Gap {
            edge: edge.to_string(),
            topic: hub_topic.to_string(),
            partition,
            from: *from,
            to: *to,
            recorded_ms: now_ms(),
        };
        tokio::task::block_in_place(|| shared.journal.record(&gap)).map_err(|e| Refusal {
            retriable: true,
            reason: format!(
                "cannot record a gap in {}: {e}",
                shared.journal.path().display()
            ),
        })?;
        note_gap(&shared.status, &shared.metrics, edge, &gap, true);
    }
    Ok(appended)
}

async fn send_frame<W>(writer: &mut W, frame: Frame) -> Result<(), String>
where
    W: futures_util::Sink<Bytes, Error = std::io::Error> + Unpin,
{
    let bytes = frame.encode().map_err(|e| e.to_string())?;
    writer.send(bytes).await.map_err(|e| e.to_string())
}
