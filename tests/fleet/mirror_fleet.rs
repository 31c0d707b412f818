//! A fleet of simulated edges in one process, for the fan-in test and benchmark
//! (tests/e2e/test_mirror_fleet.py): each edge is a real `EdgeLink` with its own
//! certificate and QUIC connection to a real hub, mirroring a topic `sensors` held in
//! memory (uncompressed v2 batches of 100 records, values `<edge>:<seq>`).
//!
//! ```sh
//! mirror-fleet --hub 127.0.0.1:9643 --ca-dir certs --edges 100 --records 2000 \
//!     --flood-records 100000
//! ```
//!
//! The first edge (`sim-000`) floods when `--flood-records` is set (values padded with
//! spaces to `--flood-record-bytes`). Prints one JSON line
//! per edge when the hub has acknowledged all of its records, then a summary line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::Parser;
use tern::client::records::{encode_batch, Outgoing};
use tern_mirror::certs::{self, Ca, Role};
use tern_mirror::config::{Edge, EdgeConfig};
use tern_mirror::edge::EdgeLink;
use tern_mirror::metrics::MirrorMetrics;
use tern_mirror::ports::{
    Appended, CheckpointOutcome, GroupOffset, MirrorLog, PortError, TopicInfo,
};
use tern_mirror::status::SharedStatus;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const RECORDS_PER_BATCH: usize = 100;
const TOPIC: &str = "sensors";

#[derive(Parser)]
struct Args {
    /// The hub's QUIC address.
    #[arg(long)]
    hub: String,
    /// Directory with ca.pem and ca.key; edge certificates are written there.
    #[arg(long)]
    ca_dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    edges: usize,
    /// Records per edge.
    #[arg(long, default_value_t = 2000)]
    records: usize,
    /// Records of the first edge, which floods (0: it is like the others).
    #[arg(long, default_value_t = 0)]
    flood_records: usize,
    /// Bytes per record value of the flooding edge (others: as short as they come).
    #[arg(long, default_value_t = 1000)]
    flood_record_bytes: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

/// One edge's topic, in memory.
struct MemLog {
    /// (base offset, stored batch).
    batches: Vec<(i64, Bytes)>,
    end: i64,
    events: watch::Sender<u64>,
}

impl MemLog {
    /// `records` records whose values are `<edge>:<seq>`, padded with spaces to `size` bytes.
    fn new(edge: &str, records: usize, size: usize) -> anyhow::Result<MemLog> {
        let mut batches = Vec::new();
        let mut offset = 0i64;
        while (offset as usize) < records {
            let n = RECORDS_PER_BATCH.min(records - offset as usize);
            let outgoing: Vec<Outgoing> = (0..n)
                .map(|i| Outgoing {
                    key: Some(Bytes::from(edge.to_string())),
                    value: Bytes::from(format!(
                        "{:<size$}",
                        format!("{edge}:{}", offset as usize + i)
                    )),
                    headers: Vec::new(),
                    timestamp: 1_767_225_600_000 + offset + i as i64,
                })
                .collect();
            let encoded = encode_batch(&outgoing).context("encode a batch")?;
            // The base offset is outside the CRC: set it in place.
            let mut batch = BytesMut::from(&encoded[..]);
            batch[..8].copy_from_slice(&offset.to_be_bytes());
            batches.push((offset, batch.freeze()));
            offset += n as i64;
        }
        Ok(MemLog {
            batches,
            end: offset,
            events: watch::Sender::new(0),
        })
    }

    fn index_of(&self, offset: i64) -> usize {
        self.batches
            .partition_point(|(base, _)| *base <= offset)
            .saturating_sub(1)
    }
}

fn refused<T>() -> Result<T, PortError> {
    Err(PortError::Refused(
        "a simulated edge receives nothing".into(),
    ))
}

impl MirrorLog for MemLog {
    fn topics(&self) -> Vec<TopicInfo> {
        vec![TopicInfo {
            name: TOPIC.into(),
            partitions: 1,
            configs: Vec::new(),
            internal: false,
        }]
    }

    fn offsets(&self, _topic: &str, _partition: i32) -> Result<(i64, i64), PortError> {
        Ok((0, self.end))
    }

    fn read(&self, _t: &str, _p: i32, offset: i64, max_bytes: usize) -> Result<Bytes, PortError> {
        let mut out = BytesMut::new();
        for (_, batch) in &self.batches[self.index_of(offset)..] {
            if !out.is_empty() && out.len() + batch.len() > max_bytes {
                break;
            }
            out.extend_from_slice(batch);
        }
        Ok(out.freeze())
    }

    fn bytes_from(&self, _t: &str, _p: i32, offset: i64) -> Result<u64, PortError> {
        let from = self.index_of(offset);
        Ok(self.batches[from..]
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum())
    }

    fn ensure_topic(
        &self,
        _topic: &str,
        _partitions: i32,
        _configs: &[(String, String)],
        _keep_local: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<i32, PortError> {
        refused()
    }

    fn append_mirrored(&self, _t: &str, _p: i32, _b: &[u8]) -> Result<Appended, PortError> {
        refused()
    }

    async fn wait_durable(&self, _t: &str, _p: i32, _a: &Appended) -> Result<(), PortError> {
        Ok(())
    }

    async fn append_record(
        &self,
        _t: &str,
        _k: Bytes,
        _v: Bytes,
        _ts: i64,
    ) -> Result<(), PortError> {
        Ok(())
    }

    fn claim_namespace(&self, _prefix: &str) -> Result<(), PortError> {
        Ok(())
    }

    fn claim_topic(&self, _topic: &str) -> Result<(), PortError> {
        Ok(())
    }

    fn committed_offsets(&self) -> Vec<(String, Vec<GroupOffset>)> {
        Vec::new()
    }

    async fn commit_checkpoint(
        &self,
        _group: &str,
        _offsets: &[GroupOffset],
    ) -> Result<CheckpointOutcome, PortError> {
        Ok(CheckpointOutcome::Skipped("simulated".into()))
    }

    fn durable_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }
}

fn edge_config(args: &Args, name: &str) -> anyhow::Result<EdgeConfig> {
    let (cert, key) = (
        args.ca_dir.join(format!("{name}.pem")),
        args.ca_dir.join(format!("{name}.key")),
    );
    if !cert.exists() {
        let ca = Ca::load(&args.ca_dir)?;
        let now = time::OffsetDateTime::now_utc();
        let issued = certs::issue(
            &ca,
            Role::Edge,
            &[name.to_string()],
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        )?;
        std::fs::write(&cert, issued.cert_pem)?;
        std::fs::write(&key, issued.key_pem)?;
    }
    Ok(EdgeConfig {
        hub: args.hub.clone(),
        hub_name: "localhost".into(),
        name: name.into(),
        cert,
        key,
        ca: args.ca_dir.join("ca.pem"),
        discovery_interval_ms: 500,
        reconnect_min_ms: 100,
        reconnect_max_ms: 2000,
        heartbeat_interval_ms: 0,
        checkpoint_interval_ms: 0,
        ..EdgeConfig::default()
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let shutdown = CancellationToken::new();
    // Certificates and logs first, so that every link starts at the same moment.
    let mut prepared = Vec::new();
    for i in 0..args.edges {
        let name = format!("sim-{i:03}");
        let (records, size) = if i == 0 && args.flood_records > 0 {
            (args.flood_records, args.flood_record_bytes)
        } else {
            (args.records, 0)
        };
        let log = Arc::new(MemLog::new(&name, records, size)?);
        let edge = Edge::compile(edge_config(&args, &name)?)?;
        prepared.push((name, edge, log));
    }
    let started = Instant::now();
    let mut fleet = Vec::new();
    for (name, edge, log) in prepared {
        let end = log.end;
        let status = SharedStatus::default();
        let link = EdgeLink::new(edge, log, status.clone(), MirrorMetrics::default())?;
        tokio::spawn(link.run(shutdown.clone()));
        fleet.push((name, end, status, None::<f64>));
    }
    let deadline = started + Duration::from_secs(args.timeout_s);
    let key = format!("{TOPIC}/0");
    while fleet.iter().any(|(_, _, _, done)| done.is_none()) {
        if Instant::now() > deadline {
            let waiting: Vec<&str> = fleet
                .iter()
                .filter(|e| e.3.is_none())
                .map(|e| e.0.as_str())
                .collect();
            anyhow::bail!("timed out; still mirroring: {waiting:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (name, end, status, done) in fleet.iter_mut().filter(|e| e.3.is_none()) {
            let (acked, since) = status.edge(|s| {
                let acked = s.partitions.get(&key).map_or(-1, |p| p.hub_end);
                (acked, s.connected_since_ms)
            });
            if acked == *end {
                let seconds = started.elapsed().as_secs_f64();
                // From the moment its connection was up (handshakes of 100 edges on two
                // cores take a while): the time the hub took to serve it.
                let mirroring = since.map_or(seconds, |ms| {
                    (tern_mirror::status::now_ms() - ms).max(0) as f64 / 1000.0
                });
                *done = Some(seconds);
                println!(
                    "{{\"edge\":\"{name}\",\"records\":{end},\"seconds\":{seconds:.3},\"mirroring_seconds\":{mirroring:.3}}}"
                );
            }
        }
    }
    shutdown.cancel();
    let total: i64 = fleet.iter().map(|e| e.1).sum();
    println!(
        "{{\"summary\":true,\"edges\":{},\"records\":{total},\"seconds\":{:.3}}}",
        fleet.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
