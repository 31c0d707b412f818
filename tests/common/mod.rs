//! Helpers for the integration tests: a real `tern serve` process (the binary cargo built
//! for this test run) in a temporary data directory on ephemeral loopback ports, and a
//! Kafka client speaking to it. Nothing is skipped: a helper that cannot do its job fails
//! the test with the reason (and tern's own log).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tern::client::records::{encode_batch, Outgoing};
use tern::client::KafkaClient;

/// The tern binary under test: this build, or another one named by `TERN_BIN` (to show
/// that a regression test fails on an older tern).
pub fn tern_binary() -> PathBuf {
    std::env::var_os("TERN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tern")))
}

pub fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral loopback port")
}

pub struct Tern {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub kafka: String,
    pub http: String,
    extra: String,
    env: Vec<(String, String)>,
    starts: u32,
    /// RLIMIT_AS for the process (systemd's LimitAS), if any.
    pub address_space_limit: Option<u64>,
}

impl Tern {
    pub fn start(extra_config: &str) -> Tern {
        Tern::start_with_env(extra_config, Vec::new())
    }

    pub fn start_with_env(extra_config: &str, env: Vec<(String, String)>) -> Tern {
        Tern::launched(extra_config, env, None)
    }

    /// A tern whose address space is limited to `bytes` (setrlimit RLIMIT_AS).
    pub fn start_with_address_space_limit(extra_config: &str, bytes: u64) -> Tern {
        Tern::launched(extra_config, Vec::new(), Some(bytes))
    }

    fn launched(extra_config: &str, env: Vec<(String, String)>, limit: Option<u64>) -> Tern {
        let mut tern = Tern {
            child: None,
            dir: tempfile::tempdir().expect("temporary directory"),
            kafka: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            extra: extra_config.to_string(),
            env,
            starts: 0,
            address_space_limit: limit,
        };
        tern.launch();
        tern
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tern.log")
    }

    /// Everything tern logged so far (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        // The test's own settings, merged with the directory and ports of this process.
        let mut config: toml::Table = toml::from_str(&self.extra).expect("test config is TOML");
        let mut set = |section: &str, key: &str, value: String| {
            let table = config
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = table {
                t.insert(key.to_string(), toml::Value::String(value));
            }
        };
        set("broker", "data_dir", self.data_dir().display().to_string());
        set("kafka", "listen", self.kafka.clone());
        set("http", "listen", self.http.clone());
        let config = toml::to_string(&config).expect("config serialises");
        let config_path = self.dir.path().join("tern.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        self.starts += 1;
        let mut command = Command::new(tern_binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("TERN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(limit) = self.address_space_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.child = Some(command.spawn().expect("start tern"));
        let ready_lines = self.starts as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches("tern ready").count() < ready_lines {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("tern exited with {status} at start:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "tern was not ready within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("tern is running")
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    pub fn restart_with_env(&mut self, env: Vec<(String, String)>) {
        self.kill9();
        self.env = env;
        self.launch();
    }

    pub async fn client(&self) -> KafkaClient {
        KafkaClient::connect(&self.kafka)
            .await
            .unwrap_or_else(|e| panic!("connect to tern: {e}\n{}", self.log()))
    }

    /// Resident memory of the tern process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// One sample from /metrics (the first line starting with `name`).
    pub fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.http).expect("http");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: tern\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("response");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} not in /metrics"))
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The fsync fault shim (tests/faults/fsync_fault.c), built once per test run.
pub fn fault_shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/fsync_fault.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fsync_fault.so");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-ldl")
            .status()
            .expect("a C compiler (cc) to build the fsync fault shim");
        assert!(status.success(), "building {} failed", source.display());
        out
    })
}

/// An LD_PRELOAD environment with the fault shim reading `control`.
pub fn fault_env(control: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), fault_shim().display().to_string()),
        ("TERN_FSYNC_FAULT".into(), control.display().to_string()),
    ]
}

pub async fn create_topic(
    client: &mut KafkaClient,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000);
    let (response, _) = client.send(&request, 2..=7).await.expect("CreateTopics");
    response.topics[0].error_code
}

/// `count` records with values `prefix-i`, as one batch.
pub fn batch(prefix: &str, count: usize) -> Bytes {
    let records: Vec<Outgoing> = (0..count)
        .map(|i| Outgoing {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Bytes::from(format!("{prefix}-{i}")),
            headers: Vec::new(),
            timestamp: tern::log::now_ms(),
        })
        .collect();
    encode_batch(&records).expect("encode batch")
}

pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// Produces with acks=all; returns (error code, base offset).
pub async fn produce(
    client: &mut KafkaClient,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let (response, _): (ProduceResponse, _) = client
        .send(&produce_request(topic, partition, records, -1), 3..=9)
        .await
        .expect("Produce");
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_bytes: i32) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])])
}

/// Every record value from `offset` to the high watermark, decoded.
pub async fn fetch_values(
    client: &mut KafkaClient,
    topic: &str,
    partition: i32,
    mut offset: i64,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    loop {
        let (response, _) = client
            .send(&fetch_request(topic, partition, offset, 1 << 20), 4..=12)
            .await
            .expect("Fetch");
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch error at {offset}");
        let Some(records) = &p.records else { break };
        if records.is_empty() {
            break;
        }
        let decoded = tern::log::records::decode(records).expect("served batches decode");
        let before = offset;
        for r in decoded {
            if r.offset >= offset {
                out.push((
                    r.offset,
                    String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string(),
                ));
                offset = r.offset + 1;
            }
        }
        if offset == before || offset >= p.high_watermark {
            break;
        }
    }
    out
}

/// `len` bytes that no codec shrinks (a multiplicative hash of the position).
pub fn incompressible(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// One batch holding one record whose value is `value`.
pub fn single_record_batch(value: Vec<u8>) -> Bytes {
    encode_batch(&[Outgoing {
        key: None,
        value: Bytes::from(value),
        headers: Vec::new(),
        timestamp: tern::log::now_ms(),
    }])
    .expect("batch")
}

/// A batch with a valid header and CRC whose records section is `section`, compressed
/// with codec `codec` (attribute bits) and announcing `records` records: how hostile
/// batches (decompression bombs) are built.
pub fn batch_with_section(codec: i16, section: &[u8], records: i32) -> Bytes {
    let mut bytes = batch("x", 1)[..61].to_vec();
    bytes.extend_from_slice(section);
    let length = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    bytes[21..23].copy_from_slice(&codec.to_be_bytes());
    bytes[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    bytes[57..61].copy_from_slice(&records.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}
