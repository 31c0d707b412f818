//! `tern certs` (a CA, a hub and edges for mirroring) and `tern mirror status` (the links
//! of a running tern, read from its HTTP port).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tern_mirror::certs::{self, Role};
use tern_mirror::status::{DownlinkPartition, EdgeStatus, HubStatus, MirrorStatus};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a private CA: ca.pem (give it to hubs and edges) and ca.key (keep it safe).
    Ca {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Create hub.pem / hub.key, valid for the names and addresses edges use to reach it.
    Hub {
        /// DNS name or IP address edges connect to (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Directory holding ca.key (default: --dir).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Create <name>.pem / <name>.key for one edge; `name` is the edge's `mirror.name`.
    Edge(Issue),
    /// Create <name>.pem / <name>.key: a client certificate for a Kafka SSL listener with
    /// `ssl_client_auth = "required"` (subject CN=<name>).
    Client(Issue),
}

/// A certificate signed by the CA in `ca_dir` (default: `dir`).
#[derive(clap::Args, Debug)]
pub struct Issue {
    name: String,
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 825)]
    days: i64,
}

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Link state and lag per partition, on an edge and on a hub.
    Status {
        /// The tern's HTTP port (`http.listen`).
        #[arg(long, default_value = "127.0.0.1:9644", env = "TERN_HTTP")]
        http: String,
        /// Print the JSON as served on /v1/mirror.
        #[arg(long)]
        json: bool,
    },
}

pub fn certs(command: CertsCommand) -> anyhow::Result<()> {
    let created = match command {
        CertsCommand::Ca { dir } => certs::create_ca(&dir)?,
        CertsCommand::Hub {
            names,
            dir,
            ca_dir,
            days,
        } => {
            let ca_dir = ca_dir.unwrap_or_else(|| dir.clone());
            certs::create(&dir, &ca_dir, Role::Hub, "hub", &names, days)?
        }
        CertsCommand::Edge(issue) | CertsCommand::Client(issue) => {
            let Issue {
                name,
                dir,
                ca_dir,
                days,
            } = issue;
            let ca_dir = ca_dir.unwrap_or_else(|| dir.clone());
            certs::create(
                &dir,
                &ca_dir,
                Role::Edge,
                &name,
                std::slice::from_ref(&name),
                days,
            )?
        }
    };
    for path in created {
        println!("created {}", path.display());
    }
    Ok(())
}

pub async fn status(http: &str, json: bool) -> anyhow::Result<()> {
    let body = super::http::get(http, "/v1/mirror").await?;
    if json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let status: MirrorStatus =
        serde_json::from_slice(&body).context("unexpected answer on /v1/mirror")?;
    if status.edge.is_none() && status.hub.is_none() {
        println!("no [mirror] or [hub] section in this tern's configuration");
    }
    if let Some(edge) = &status.edge {
        print_edge(edge);
    }
    if let Some(hub) = &status.hub {
        print_hub(hub);
    }
    Ok(())
}

fn since(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let secs = (tern_mirror::status::now_ms() - ms).max(0) / 1000;
            format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
        }
        None => "-".into(),
    }
}

fn print_edge(edge: &EdgeStatus) {
    println!(
        "EDGE {} -> hub {}: {} (up {}, rtt {}, reconnects {})",
        edge.name,
        edge.hub,
        edge.state,
        since(edge.connected_since_ms),
        edge.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
        edge.reconnects
    );
    if let Some(e) = &edge.last_error {
        println!("  last error: {e}");
    }
    println!(
        "  {:<32} {:>5} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}  LAST ERROR",
        "TOPIC", "PART", "EDGE END", "HUB END", "BEHIND", "BYTES BEHIND", "SECONDS", "GAP RECS"
    );
    for p in edge.partitions.values() {
        println!(
            "  {:<32} {:>5} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}  {}",
            p.topic,
            p.partition,
            p.edge_end,
            p.hub_end,
            p.records_behind,
            p.bytes_behind,
            p.seconds_behind.map_or("-".into(), |s| format!("{s:.1}")),
            p.gap_records,
            p.last_error.as_deref().unwrap_or("-")
        );
    }
    print_downlink("  ", edge.downlink.values());
}

/// Command topics sent down from the hub (same columns on both sides).
fn print_downlink<'a>(indent: &str, partitions: impl Iterator<Item = &'a DownlinkPartition>) {
    let mut partitions = partitions.peekable();
    if partitions.peek().is_none() {
        return;
    }
    println!(
        "{indent}{:<40} {:>5} {:>12} {:>12} {:>10} {:>10}  LAST ERROR",
        "DOWNLINK (hub -> edge)", "PART", "HUB END", "EDGE END", "BEHIND", "GAP RECS"
    );
    for p in partitions {
        let name = if p.hub_topic.is_empty() {
            p.edge_topic.clone()
        } else {
            format!("{} -> {}", p.hub_topic, p.edge_topic)
        };
        println!(
            "{indent}{:<40} {:>5} {:>12} {:>12} {:>10} {:>10}  {}",
            name,
            p.partition,
            p.hub_end,
            p.edge_end,
            p.records_behind,
            p.gap_records,
            p.last_error.as_deref().unwrap_or("-")
        );
    }
}

fn print_hub(hub: &HubStatus) {
    println!(
        "HUB listening on {} (QUIC), {} edges known",
        hub.listen,
        hub.edges.len()
    );
    for (name, edge) in &hub.edges {
        let heartbeat = match (edge.last_heartbeat_ms, edge.heartbeat_latency_ms) {
            (Some(at), Some(latency)) => format!(
                ", last heartbeat {:.1} s ago (took {latency} ms)",
                (tern_mirror::status::now_ms() - at).max(0) as f64 / 1000.0
            ),
            _ => ", no heartbeat yet".into(),
        };
        println!(
            "  edge {name}: {} from {} (up {}){heartbeat}{}",
            if edge.connected {
                "connected"
            } else {
                "disconnected"
            },
            edge.address.as_deref().unwrap_or("-"),
            since(edge.connected_since_ms),
            edge.last_error
                .as_ref()
                .map(|e| format!(", last: {e}"))
                .unwrap_or_default()
        );
        println!(
            "    {:<40} {:>5} {:>12} {:>12} {:>10} {:>10} {:>10}  GAPS",
            "HUB TOPIC", "PART", "HUB END", "EDGE END", "BEHIND", "DUPS", "GAP RECS"
        );
        for p in edge.partitions.values() {
            let gaps: Vec<String> = p.gaps.iter().map(|(f, t)| format!("{f}..{t}")).collect();
            println!(
                "    {:<40} {:>5} {:>12} {:>12} {:>10} {:>10} {:>10}  {}",
                p.topic,
                p.partition,
                p.hub_end,
                p.edge_end,
                p.records_behind,
                p.duplicates,
                p.gap_records,
                if gaps.is_empty() {
                    "-".into()
                } else {
                    gaps.join(" ")
                }
            );
        }
        print_downlink("    ", edge.downlink.values());
    }
}
