//! Entry points for the fuzz targets in `tests/fuzz` (cargo-fuzz): each feeds untrusted
//! bytes to the code that meets them in production and must return, whatever the bytes —
//! no panic, no abort, no unbounded allocation. Crashes they find become regression tests
//! (`tests/fuzz_regressions.rs` replays every file in `tests/fuzz/regressions/`).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};

use crate::kafka::api::{self, SUPPORTED};
use crate::kafka::decode_guard;
use crate::log::batch::{self, Codec};
use crate::log::compaction::thin::{self, Thinned};
use crate::log::partition::{Log, Partition};
use crate::log::LogConfig;

/// A request frame (without its size prefix), as a connection reads it. The first byte
/// picks one supported API and the second a version in its range, so every API × version
/// gets the fuzzer's attention; the rest is the request header and body.
pub fn kafka_request(data: &[u8]) {
    let [which, version, rest @ ..] = data else {
        return;
    };
    let (api, min, max) = SUPPORTED[*which as usize % SUPPORTED.len()];
    let version = min + (*version as i16) % (max - min + 1);
    let mut frame = Vec::with_capacity(4 + rest.len());
    frame.extend_from_slice(&(api as i16).to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(rest);
    request_frame(&frame);
}

/// One whole request frame: header, then the body for the API the header names.
pub fn request_frame(frame: &[u8]) {
    if frame.len() < 8 {
        return;
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api) = ApiKey::try_from(api_key) else {
        return;
    };
    if api::supported_versions(api).is_none_or(|(min, max)| version < min || version > max) {
        return;
    }
    let mut body = Bytes::copy_from_slice(frame);
    let header: Result<RequestHeader, String> =
        decode_guard::decode(&mut body, api.request_header_version(version));
    if header.is_ok() {
        let _ = api::decode_only(api, version, &mut body);
    }
}

/// A whole client byte stream (size-prefixed frames, pipelined) into one connection of a
/// real broker: framing limits, the SASL state machine and every handler with hostile
/// values. The first byte picks the listener (PLAINTEXT or SASL_PLAINTEXT).
pub fn kafka_connection(data: &[u8]) {
    let Some(fuzz_broker) = FUZZ_BROKER.get_or_init(FuzzBroker::start) else {
        return;
    };
    let Some((first, stream)) = data.split_first() else {
        return;
    };
    let listener = if first % 4 == 0 {
        &fuzz_broker.sasl
    } else {
        &fuzz_broker.plain
    };
    let broker = &fuzz_broker.broker;
    fuzz_broker.runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        let served = crate::kafka::connection::serve_stream(
            broker,
            listener,
            stream,
            tokio::io::sink(),
            peer,
            None,
            &shutdown,
        );
        // Long polls and rebalances may wait: the connection is dropped, as a client
        // that hangs up would drop it, and the broker goes on.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), served).await;
    });
}

/// One broker for the whole fuzzing process, in a temporary directory.
struct FuzzBroker {
    runtime: tokio::runtime::Runtime,
    broker: std::sync::Arc<crate::broker::Broker>,
    plain: std::sync::Arc<crate::kafka::listener::Listener>,
    sasl: std::sync::Arc<crate::kafka::listener::Listener>,
}

static FUZZ_BROKER: std::sync::OnceLock<Option<FuzzBroker>> = std::sync::OnceLock::new();

impl FuzzBroker {
    fn start() -> Option<FuzzBroker> {
        use crate::kafka::listener::{Listener, ListenerConfig, SecurityProtocol};
        let dir = tempfile_dir().ok()?;
        let text = format!(
            "[broker]\ndata_dir = \"{}\"\n[kafka]\nmax_request_bytes = 1048576\n\
             [groups]\ninitial_rebalance_delay_ms = 0\nmin_session_timeout_ms = 10\n",
            dir.display()
        );
        let config = crate::config::Config::parse(&text, None).ok()?;
        crate::users::add(
            &dir,
            "alice",
            "alice-pw",
            &[crate::users::Mechanism::Sha256],
            4096,
        )
        .ok()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .ok()?;
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let (broker, _group_commit) = runtime
            .block_on(async { crate::broker::Broker::open(config, 9092, metrics) })
            .ok()?;
        let advertised = ("127.0.0.1".to_string(), 9092);
        let plain = std::sync::Arc::new(Listener::plaintext("PLAINTEXT", advertised.clone()));
        let sasl_config = ListenerConfig {
            name: "SASL".into(),
            listen: "127.0.0.1:9093".into(),
            security_protocol: SecurityProtocol::SaslPlaintext,
            ..ListenerConfig::default()
        };
        let sasl = std::sync::Arc::new(Listener::from_config(&sasl_config, advertised).ok()?);
        Some(FuzzBroker {
            runtime,
            broker,
            plain,
            sasl,
        })
    }
}

/// A Produce request's `records` bytes: split into batches, each checked (CRC, lengths),
/// its records decompressed within the bound a topic allows and validated, then
/// re-compressed as tern stores it — what the produce path does.
pub fn record_batches(records: &[u8]) {
    // Random bytes almost never carry a right CRC: fix them, so the fuzzer explores what
    // lies behind the check (compressed sections, record layouts).
    let records = &with_valid_crcs(records);
    let Ok(batches) = batch::split_batches(records) else {
        return;
    };
    for (header, bytes) in batches {
        let limit = batch::uncompressed_limit(&header, 1 << 20);
        if batch::validate_records(
            bytes,
            &header,
            limit,
            crate::log::record_check::Rules::PRODUCED,
        )
        .is_ok()
        {
            let _ = batch::recompress(bytes, Codec::Lz4, limit);
            // The cleaner's view of the same batch: thinning keeps a valid batch whose
            // records are a subset at their offsets.
            let mut n = 0u32;
            if let Ok(Thinned::Rewritten(thinned)) = thin::thin(bytes, &header, |_, _| {
                n += 1;
                n.is_multiple_of(2)
            }) {
                let rebuilt = batch::validate(&thinned).expect("a thinned batch is valid");
                let rules = crate::log::record_check::Rules::stored(rebuilt.last_offset_delta);
                batch::validate_records(&thinned, &rebuilt, limit, rules)
                    .expect("a thinned batch's records are valid");
            }
        }
    }
}

/// A segment file as a power cut, a bad disk or a hostile hand may leave it: the log is
/// opened (recovery scans, truncates or quarantines) and read from start to end.
pub fn segment_recovery(segment: &[u8]) {
    // Half the inputs keep their CRCs as they are (damage), half get them fixed (layouts).
    let fixed;
    let segment = match segment.first() {
        Some(b) if b % 2 == 0 => {
            fixed = with_valid_crcs(&segment[1..]);
            &fixed[..]
        }
        Some(_) => &segment[1..],
        None => segment,
    };
    let Ok(dir) = tempfile_dir() else {
        return;
    };
    let log_dir = dir.join("fuzz-0");
    if std::fs::create_dir_all(&log_dir).is_err()
        || std::fs::write(log_dir.join("00000000000000000000.log"), segment).is_err()
    {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if let Ok((log, _report)) = Log::open(&log_dir, LogConfig::default(), crate::log::now_ms()) {
        let partition = Partition::new("fuzz", 0, log);
        let (mut offset, end) = partition.bounds();
        while offset < end {
            match partition.read(offset, 1 << 20) {
                Ok(read) if !read.bytes.is_empty() => {
                    let Some(next) = last_next_offset(&read.bytes) else {
                        break;
                    };
                    offset = next.max(offset + 1);
                }
                _ => break,
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn last_next_offset(bytes: &[u8]) -> Option<i64> {
    let batches = batch::split_batches(bytes).ok()?;
    batches.last().map(|(h, _)| h.next_offset())
}

/// A fresh directory under the system temp dir (no dependency on `tempfile` here).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tern-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `bytes` with the CRC of every batch whose length field fits recomputed.
pub fn with_valid_crcs(bytes: &[u8]) -> Vec<u8> {
    const OFF_LENGTH: usize = 8;
    const OFF_CRC: usize = 17;
    let mut out = bytes.to_vec();
    let mut at = 0usize;
    while at + batch::HEADER_LEN <= out.len() {
        let length = i32::from_be_bytes([
            out[at + OFF_LENGTH],
            out[at + OFF_LENGTH + 1],
            out[at + OFF_LENGTH + 2],
            out[at + OFF_LENGTH + 3],
        ]);
        let Some(total) = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(batch::LOG_OVERHEAD))
            .filter(|t| *t >= batch::HEADER_LEN && at + t <= out.len())
        else {
            break;
        };
        let crc = batch::compute_crc(&out[at..at + total]);
        out[at + OFF_CRC..at + OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
    out
}

/// Starting inputs for each target: valid requests of every API × version, batches in
/// every codec, a segment of a few batches (`tests/fuzz_regressions.rs` writes them).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "kafka_request" => request_seeds(),
        "record_batches" => batch_seeds(),
        "kafka_connection" => connection_seeds(),
        "segment_recovery" => {
            let batches = batch_seeds();
            let mut segment = vec![0u8]; // even: CRCs fixed
            let mut offset = 0i64;
            for mut b in batches {
                batch::set_base_offset(&mut b, offset);
                let Ok(header) = batch::BatchHeader::parse(&b) else {
                    continue;
                };
                offset = header.next_offset();
                segment.extend_from_slice(&b);
            }
            vec![segment]
        }
        _ => Vec::new(),
    }
}

fn batch_seeds() -> Vec<Vec<u8>> {
    use crate::client::records::{encode_batch, Outgoing};
    let records: Vec<Outgoing> = (0..5)
        .map(|i| Outgoing {
            key: Some(Bytes::from(format!("door-{i}"))),
            value: Bytes::from(format!("{{\"locked\": {}}}", i % 2 == 0).repeat(i + 1)),
            headers: vec![("source".to_string(), Bytes::from_static(b"mqtt"))],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect();
    let Ok(plain) = encode_batch(&records) else {
        return Vec::new();
    };
    let mut out = vec![plain.to_vec()];
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        if let Ok(b) = batch::recompress(&plain, codec, 1 << 20) {
            out.push(b);
        }
    }
    out
}

/// Client conversations: ApiVersions, Metadata, a Produce of every codec, Fetch, a group
/// join; and a SASL PLAIN login followed by the same.
fn connection_seeds() -> Vec<Vec<u8>> {
    use kafka_protocol::messages as m;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    fn frame<T: Encodable>(api: ApiKey, version: i16, correlation: i32, body: &T) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")));
        if header
            .encode(&mut buf, api.request_header_version(version))
            .is_err()
            || body.encode(&mut buf, version).is_err()
        {
            return Vec::new();
        }
        let mut out = (buf.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }
    let topic = || m::TopicName(StrBytes::from_static_str("fuzz"));
    let mut conversation = Vec::new();
    conversation.extend(frame(
        ApiKey::ApiVersions,
        3,
        1,
        &m::ApiVersionsRequest::default(),
    ));
    conversation.extend(frame(
        ApiKey::Metadata,
        9,
        2,
        &m::MetadataRequest::default().with_topics(Some(vec![
            m::metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
        ])),
    ));
    for (i, batch) in batch_seeds().into_iter().enumerate() {
        let produce = m::ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![m::produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    m::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ])]);
        conversation.extend(frame(ApiKey::Produce, 9, 10 + i as i32, &produce));
    }
    let fetch = m::FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![m::fetch_request::FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![m::fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    conversation.extend(frame(ApiKey::Fetch, 12, 20, &fetch));
    let join = m::JoinGroupRequest::default()
        .with_group_id(m::GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(100)
        .with_rebalance_timeout_ms(100)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            m::join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range")),
        ]);
    conversation.extend(frame(ApiKey::JoinGroup, 7, 21, &join));

    let mut plain = vec![1u8];
    plain.extend_from_slice(&conversation);
    let mut login = vec![0u8];
    login.extend(frame(
        ApiKey::SaslHandshake,
        1,
        1,
        &m::SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    ));
    login.extend(frame(
        ApiKey::SaslAuthenticate,
        2,
        2,
        &m::SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"\0alice\0alice-pw")),
    ));
    login.extend_from_slice(&conversation);
    vec![plain, login]
}

fn request_seeds() -> Vec<Vec<u8>> {
    use kafka_protocol::messages as m;
    use kafka_protocol::protocol::Encodable;
    fn encoded<T: Encodable + Default>(version: i16) -> Option<Vec<u8>> {
        let mut buf = bytes::BytesMut::new();
        T::default().encode(&mut buf, version).ok()?;
        Some(buf.to_vec())
    }
    let mut out = Vec::new();
    for (index, (api, min, max)) in SUPPORTED.iter().enumerate() {
        for version in *min..=*max {
            let body = match api {
                ApiKey::Produce => encoded::<m::ProduceRequest>(version),
                ApiKey::Fetch => encoded::<m::FetchRequest>(version),
                ApiKey::Metadata => encoded::<m::MetadataRequest>(version),
                ApiKey::CreateTopics => encoded::<m::CreateTopicsRequest>(version),
                ApiKey::JoinGroup => encoded::<m::JoinGroupRequest>(version),
                ApiKey::OffsetCommit => encoded::<m::OffsetCommitRequest>(version),
                ApiKey::CreateAcls => encoded::<m::CreateAclsRequest>(version),
                ApiKey::SaslAuthenticate => encoded::<m::SaslAuthenticateRequest>(version),
                _ => Some(Vec::new()),
            };
            let mut header_bytes = bytes::BytesMut::new();
            let header = RequestHeader::default()
                .with_request_api_key(*api as i16)
                .with_request_api_version(version)
                .with_correlation_id(7)
                .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                    "fuzz",
                )));
            let (Some(body), Ok(())) = (
                body,
                header.encode(&mut header_bytes, api.request_header_version(version)),
            ) else {
                continue;
            };
            let mut seed = vec![index as u8, (version - min) as u8];
            // kafka_request re-adds api key and version: the seed carries the rest.
            seed.extend_from_slice(&header_bytes[4..]);
            seed.extend_from_slice(&body);
            out.push(seed);
        }
    }
    out
}
