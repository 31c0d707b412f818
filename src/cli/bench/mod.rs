//! `tern bench`: the producer and consumer load tests Kafka users know
//! (`kafka-producer-perf-test`, `kafka-consumer-perf-test`), on tern's own client so that
//! the client is not what is measured. Works against any Kafka-protocol broker; with the
//! broker's pid (and tern's HTTP port) it also prints what the broker spent per request.

pub mod consume;
pub mod probe;
pub mod produce;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

use super::cluster::Cluster;
use crate::client::{error_name, ClientError};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce records as fast as the broker takes them (or at --rate) and print
    /// throughput and latency (like kafka-producer-perf-test).
    Produce(ProduceArgs),
    /// Read a topic from its start and print throughput (like kafka-consumer-perf-test).
    Consume(ConsumeArgs),
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to; created with --partitions if it does not exist.
    #[arg(long, short, default_value = "tern-bench")]
    pub topic: String,
    /// Records to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Producer connections, each sending its share of the records.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Records per Produce request (one batch).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Requests each connection keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// all (or -1), 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Partitions of the topic when it is created; connection i writes to partition
    /// i mod partitions.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Records per second over all connections (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Idempotent producers (one producer id per connection, sequence numbers).
    #[arg(long)]
    pub idempotent: bool,
    /// Batch compression: none or lz4.
    #[arg(long, default_value = "none")]
    pub compression: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long, short, default_value = "tern-bench")]
    pub topic: String,
    /// Records to read (default: everything up to the end offsets at start).
    #[arg(long)]
    pub records: Option<u64>,
    /// Consume as the only member of this consumer group (committing as it goes);
    /// default: assign every partition, no group.
    #[arg(long)]
    pub group: Option<String>,
    /// fetch.max.bytes.
    #[arg(long, default_value_t = 52_428_800)]
    pub fetch_max_bytes: i32,
    /// max.partition.fetch.bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub partition_max_bytes: i32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// The broker's process id: prints its CPU time and context switches per request.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// tern's HTTP port (host:port): prints fsyncs per second from its /metrics.
    #[arg(long)]
    pub http: Option<String>,
    /// Client threads (1: the client takes at most one core from a broker on this machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print progress every this many milliseconds (0: never).
    #[arg(long, default_value_t = 5000)]
    pub report_interval_ms: u64,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a benchmark measured on the client side.
pub struct Report {
    pub records: u64,
    /// Bytes of record values.
    pub bytes: u64,
    pub requests: u64,
    pub elapsed: Duration,
    /// Per-request latency in microseconds (none for acks=0).
    pub latencies: Option<Histogram<u64>>,
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Result<Histogram<u64>, ClientError> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| ClientError::Kafka(format!("latency histogram: {e}")))
}

/// Creates `topic` with `partitions` unless it exists.
pub async fn ensure_topic(
    cluster: &mut Cluster,
    topic: &str,
    partitions: i32,
) -> Result<(), ClientError> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let (response, _) = cluster.controller().await?.send(&request, 2..=5).await?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != ResponseError::TopicAlreadyExists.code() {
            return Err(ClientError::Kafka(format!(
                "creating topic `{topic}`: {}",
                error_name(t.error_code)
            )));
        }
    }
    cluster.refresh(Some(&[topic.to_string()])).await
}

fn parse_compression(text: &str) -> Result<Compression, ClientError> {
    match text {
        "none" => Ok(Compression::None),
        "lz4" => Ok(Compression::Lz4),
        other => Err(ClientError::Kafka(format!(
            "--compression must be none or lz4, not `{other}`"
        ))),
    }
}

/// Runs a benchmark on a runtime of `--threads` threads and prints its figures.
pub fn run(bootstrap: &str, command: BenchCommand) -> Result<(), ClientError> {
    let common = match &command {
        BenchCommand::Produce(a) => &a.common,
        BenchCommand::Consume(a) => &a.common,
    };
    let runtime = if common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run_async(bootstrap, command))
}

async fn run_async(bootstrap: &str, command: BenchCommand) -> Result<(), ClientError> {
    let (mode, common) = match &command {
        BenchCommand::Produce(a) => ("produce", &a.common),
        BenchCommand::Consume(a) => ("consume", &a.common),
    };
    let probe = probe::Probe {
        pid: common.broker_pid,
        http: common.http.clone(),
    };
    let json = common.json;
    let progress = Arc::new(AtomicU64::new(0));
    let reporter = (common.report_interval_ms > 0).then(|| {
        tokio::spawn(report_progress(
            Arc::clone(&progress),
            Duration::from_millis(common.report_interval_ms),
        ))
    });
    let before = probe.read().await.map_err(ClientError::Kafka)?;
    let client_cpu = probe::own_cpu_seconds();
    let report = match command {
        BenchCommand::Produce(a) => {
            if a.connections == 0 || a.batch == 0 || a.partitions <= 0 {
                return Err(ClientError::Kafka(
                    "--connections, --batch and --partitions must be at least 1".to_string(),
                ));
            }
            let bench = produce::ProduceBench {
                topic: a.topic,
                records: a.records,
                record_size: a.record_size,
                connections: a.connections,
                batch: a.batch,
                acks: super::parse_acks(&a.acks)?,
                partitions: a.partitions,
                rate: a.rate,
                idempotent: a.idempotent,
                in_flight: a.in_flight,
                compression: parse_compression(&a.compression)?,
            };
            produce::run(bootstrap, bench, Arc::clone(&progress)).await?
        }
        BenchCommand::Consume(a) => {
            let bench = consume::ConsumeBench {
                topic: a.topic,
                records: a.records,
                group: a.group,
                fetch_max_bytes: a.fetch_max_bytes,
                partition_max_bytes: a.partition_max_bytes,
            };
            consume::run(bootstrap, bench, Arc::clone(&progress)).await?
        }
    };
    let client_cpu = probe::own_cpu_seconds() - client_cpu;
    let after = probe.read().await.map_err(ClientError::Kafka)?;
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    let figures = Figures::new(mode, &report, probe::spent(&before, &after), client_cpu);
    if json {
        let text = serde_json::to_string(&figures)
            .map_err(|e| ClientError::Encode(format!("figures: {e}")))?;
        println!("{text}");
    } else {
        figures.print();
    }
    Ok(())
}

async fn report_progress(progress: Arc<AtomicU64>, every: Duration) {
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(every).await;
        let now = (progress.load(Ordering::Relaxed), Instant::now());
        let rate = (now.0 - last.0) as f64 / now.1.duration_since(last.1).as_secs_f64();
        eprintln!("{} records, {:.1} records/s", now.0, rate);
        last = now;
    }
}

/// The printed figures (also the `--json` object).
#[derive(serde::Serialize)]
struct Figures {
    mode: &'static str,
    records: u64,
    bytes: u64,
    requests: u64,
    seconds: f64,
    records_per_second: f64,
    mb_per_second: f64,
    latency_ms: Option<Latency>,
    broker: probe::Spent,
    broker_cpu_us_per_request: Option<f64>,
    broker_cpu_seconds_per_million_records: Option<f64>,
    broker_context_switches_per_request: Option<f64>,
    broker_fsyncs_per_second: Option<f64>,
    client_cpu_seconds: f64,
}

#[derive(serde::Serialize)]
struct Latency {
    avg: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Figures {
    fn new(mode: &'static str, report: &Report, broker: probe::Spent, client_cpu: f64) -> Self {
        let seconds = report.elapsed.as_secs_f64().max(1e-9);
        let requests = report.requests.max(1) as f64;
        let ms = |us: u64| us as f64 / 1000.0;
        Figures {
            mode,
            records: report.records,
            bytes: report.bytes,
            requests: report.requests,
            seconds,
            records_per_second: report.records as f64 / seconds,
            mb_per_second: report.bytes as f64 / seconds / 1e6,
            latency_ms: report
                .latencies
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| Latency {
                    avg: h.mean() / 1000.0,
                    p50: ms(h.value_at_quantile(0.5)),
                    p99: ms(h.value_at_quantile(0.99)),
                    p999: ms(h.value_at_quantile(0.999)),
                    max: ms(h.max()),
                }),
            broker,
            broker_cpu_us_per_request: broker.cpu_seconds.map(|c| c * 1e6 / requests),
            broker_cpu_seconds_per_million_records: broker
                .cpu_seconds
                .map(|c| c * 1e6 / report.records.max(1) as f64),
            broker_context_switches_per_request: broker
                .context_switches
                .map(|c| c as f64 / requests),
            broker_fsyncs_per_second: broker.fsyncs.map(|f| f / seconds),
            client_cpu_seconds: client_cpu,
        }
    }

    fn print(&self) {
        let verb = if self.mode == "produce" {
            "sent"
        } else {
            "read"
        };
        println!(
            "{} records {verb} in {:.2} s: {:.1} records/s ({:.2} MB/s), {} requests ({:.1}/s)",
            self.records,
            self.seconds,
            self.records_per_second,
            self.mb_per_second,
            self.requests,
            self.requests as f64 / self.seconds
        );
        if let Some(l) = &self.latency_ms {
            println!(
                "latency per request: {:.2} ms avg, {:.2} ms p50, {:.2} ms p99, {:.2} ms p99.9, {:.2} ms max",
                l.avg, l.p50, l.p99, l.p999, l.max
            );
        }
        let mut broker = Vec::new();
        if let (Some(cpu), Some(per_request), Some(per_million)) = (
            self.broker.cpu_seconds,
            self.broker_cpu_us_per_request,
            self.broker_cpu_seconds_per_million_records,
        ) {
            broker.push(format!(
                "{cpu:.2} s CPU ({per_request:.1} µs per request, {per_million:.3} s per million records)"
            ));
        }
        if let Some(c) = self.broker_context_switches_per_request {
            broker.push(format!("{c:.2} context switches per request"));
        }
        if let Some(f) = self.broker_fsyncs_per_second {
            broker.push(format!("{f:.1} fsyncs/s"));
        }
        if !broker.is_empty() {
            println!("broker: {}", broker.join(", "));
        }
        println!("client: {:.2} s CPU", self.client_cpu_seconds);
    }
}
