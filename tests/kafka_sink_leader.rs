//! The Kafka sink follows partition leaders. Two tern processes are not a cluster, so the
//! test puts a small proxy in front of one target tern that plays a two-broker cluster:
//! brokers 1 and 2 are two loopback ports forwarding to the same tern; the proxy rewrites
//! Metadata responses so that whichever broker the test names leads every partition, and
//! answers Produce requests that reach the other broker with NOT_LEADER_OR_FOLLOWER (as a
//! Kafka follower does). The test moves the leader back and forth while a source tern's
//! sink forwards records, and checks that the target has every record once, in order.
//! Once, the leader answers OUT_OF_ORDER_SEQUENCE_NUMBER without writing (a cluster that
//! lost the producer's state): the sink bumps its epoch and goes on, still exactly once.

mod common;

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{batch, create_topic, fetch_values, produce, Tern};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// Counters the test reads.
#[derive(Default)]
struct Seen {
    refused: AtomicU64,
    /// Answer the next Produce at the leader with OUT_OF_ORDER_SEQUENCE_NUMBER.
    out_of_order: std::sync::atomic::AtomicBool,
    accepted: [AtomicU64; 2],
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let size = stream.read_u32().await? as usize;
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    stream.write_u32(body.len() as u32).await?;
    stream.write_all(body).await
}

fn encode_response<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    response: &R,
    version: i16,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .expect("encode header");
    response.encode(&mut buf, version).expect("encode response");
    buf.to_vec()
}

/// One client connection to "broker" `node` (1 or 2).
async fn serve(
    mut client: TcpStream,
    node: i32,
    upstream: String,
    ports: [u16; 2],
    leader: Arc<AtomicI32>,
    seen: Arc<Seen>,
) {
    let Ok(mut tern) = TcpStream::connect(&upstream).await else {
        return;
    };
    loop {
        let Ok(request) = read_frame(&mut client).await else {
            return;
        };
        let api = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let Ok(key) = ApiKey::try_from(api) else {
            return;
        };
        let mut body = Bytes::from(request.clone());
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))
            .expect("request header");
        let response_header_version = key.response_header_version(version);
        let not_leader = leader.load(Ordering::SeqCst) != node;
        let refuse = key == ApiKey::Produce
            && (not_leader || seen.out_of_order.swap(false, Ordering::SeqCst));
        if refuse {
            let code = if not_leader {
                NOT_LEADER_OR_FOLLOWER
            } else {
                OUT_OF_ORDER_SEQUENCE_NUMBER
            };
            let produce = ProduceRequest::decode(&mut body, version).expect("produce request");
            let response = ProduceResponse::default().with_responses(
                produce
                    .topic_data
                    .iter()
                    .map(|t| {
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(
                                t.partition_data
                                    .iter()
                                    .map(|p| {
                                        PartitionProduceResponse::default()
                                            .with_index(p.index)
                                            .with_error_code(code)
                                            .with_base_offset(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            if not_leader {
                seen.refused.fetch_add(1, Ordering::SeqCst);
            }
            let out = encode_response(
                header.correlation_id,
                response_header_version,
                &response,
                version,
            );
            if write_frame(&mut client, &out).await.is_err() {
                return;
            }
            continue;
        }
        if key == ApiKey::Produce {
            seen.accepted[(node - 1) as usize].fetch_add(1, Ordering::SeqCst);
        }
        if write_frame(&mut tern, &request).await.is_err() {
            return;
        }
        let Ok(response) = read_frame(&mut tern).await else {
            return;
        };
        let out = if key == ApiKey::Metadata {
            let mut body = Bytes::from(response);
            let rh = ResponseHeader::decode(&mut body, response_header_version)
                .expect("response header");
            let mut metadata = MetadataResponse::decode(&mut body, version).expect("metadata");
            let now = leader.load(Ordering::SeqCst);
            metadata.brokers = (1..=2)
                .map(|id| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(i32::from(ports[(id - 1) as usize]))
                })
                .collect();
            metadata.controller_id = BrokerId(1);
            for t in &mut metadata.topics {
                for p in &mut t.partitions {
                    p.leader_id = BrokerId(now);
                    p.replica_nodes = vec![BrokerId(1), BrokerId(2)];
                    p.isr_nodes = vec![BrokerId(1), BrokerId(2)];
                }
            }
            encode_response(
                rh.correlation_id,
                response_header_version,
                &metadata,
                version,
            )
        } else {
            response
        };
        if write_frame(&mut client, &out).await.is_err() {
            return;
        }
    }
}

async fn start_proxy(upstream: String, leader: Arc<AtomicI32>, seen: Arc<Seen>) -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ports = [
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    ];
    for (node, listener) in [(1, a), (2, b)] {
        let (upstream, leader, seen) = (upstream.clone(), Arc::clone(&leader), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    node,
                    upstream.clone(),
                    ports,
                    Arc::clone(&leader),
                    Arc::clone(&seen),
                ));
            }
        });
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_follows_leaders_that_move_and_writes_every_record_once() {
    let cluster = Tern::start("");
    let leader = Arc::new(AtomicI32::new(1));
    let seen = Arc::new(Seen::default());
    let ports = start_proxy(
        cluster.kafka.clone(),
        Arc::clone(&leader),
        Arc::clone(&seen),
    )
    .await;
    let source = Tern::start(&format!(
        "[[sinks.kafka]]\nname = \"dc\"\nbootstrap_servers = [\"127.0.0.1:{}\"]\ntopics = [\"events\"]\n\
         retry_backoff_ms = 20\nretry_backoff_max_ms = 200\ndiscovery_interval_ms = 200\n",
        ports[0]
    ));
    let mut client = source.client().await;
    assert_eq!(create_topic(&mut client, "events", 2, &[]).await, 0);
    let batches = 60;
    for i in 0..batches {
        if i == 25 {
            seen.out_of_order.store(true, Ordering::SeqCst);
        }
        if i % 10 == 9 {
            // The leader moves to the other broker.
            leader.store(
                if leader.load(Ordering::SeqCst) == 1 {
                    2
                } else {
                    1
                },
                Ordering::SeqCst,
            );
        }
        let (code, _) = produce(&mut client, "events", i % 2, batch(&format!("b{i}"), 500)).await;
        assert_eq!(code, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut target = cluster.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for partition in 0..2 {
        let expected = fetch_values(&mut client, "events", partition, 0).await;
        assert_eq!(expected.len(), 500 * batches as usize / 2);
        loop {
            let got = fetch_values(&mut target, "events", partition, 0).await;
            if got.len() >= expected.len() || Instant::now() > deadline {
                assert_eq!(
                    got, expected,
                    "events-{partition}: the target differs from the source"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let refused = seen.refused.load(Ordering::SeqCst);
    let (at_1, at_2) = (
        seen.accepted[0].load(Ordering::SeqCst),
        seen.accepted[1].load(Ordering::SeqCst),
    );
    assert!(
        refused > 0,
        "no produce ever reached a broker that was not the leader"
    );
    assert!(
        at_1 > 0 && at_2 > 0,
        "produce requests accepted at broker 1: {at_1}, at broker 2: {at_2}"
    );
    assert!(source.metric("tern_sink_retries_total{sink=\"dc\"}") >= 1.0);
    assert!(
        !seen.out_of_order.load(Ordering::SeqCst),
        "the injected error was never sent"
    );
    let log = source.log();
    assert!(log.contains("bumping the producer epoch"), "{log}");
    assert!(log.contains("epoch=1"), "the epoch was not bumped:\n{log}");
    eprintln!("leader moves: 5; NOT_LEADER answers: {refused}; produce requests at broker 1: {at_1}, at broker 2: {at_2}");
}
