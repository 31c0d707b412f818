//! One client connection: read size-prefixed frames, dispatch them in order, and write
//! the responses in request order even when later requests finish first.
//!
//! The reader runs each request's ordered part (appends) before reading the next frame;
//! the parts that wait (durability, long polls) run as tasks whose results a writer task
//! sends back in order. At most `max_in_flight_requests` wait at once: beyond that the
//! reader stops reading, which pushes back on the client through TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::api::{self, Reply};
use super::decode_guard;
use super::listener::Listener;
use super::sasl::{SaslSession, UNAUTHENTICATED_MAX_FRAME};
use crate::acls::{Session, ANONYMOUS};
use crate::broker::Broker;

/// How long a client has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The pause before answering a failed authentication (Kafka's
/// `connection.failed.authentication.delay.ms`): slows password guessing.
const FAILED_AUTH_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// A connection's read buffer.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Smallest valid request: api key, api version, correlation id.
const MIN_REQUEST_BYTES: usize = 8;

/// Why a connection was closed on us.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("this is a TLS handshake, but the Kafka listener speaks plaintext")]
    Tls,
    #[error("this is an HTTP request; HTTP is served on the http.listen port")]
    Http,
    #[error("request size {0} is outside 8..={1} bytes (kafka.max_request_bytes)")]
    BadSize(i64, u32),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// A response on its way out, in request order.
enum Outgoing {
    Ready {
        header: BytesMut,
        body: api::Body,
    },
    Waiting {
        header: BytesMut,
        task: JoinHandle<api::Body>,
    },
    /// Work under way elsewhere (a produce waiting for group commit): awaited in place.
    Awaiting {
        header: BytesMut,
        future: std::pin::Pin<Box<dyn std::future::Future<Output = api::Body> + Send>>,
        api: &'static str,
        started: Instant,
    },
}

pub async fn serve(
    broker: Arc<Broker>,
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    // A debug-level span: entering a span costs on every poll of the connection's tasks
    // (three per produce), so at the default level there is none, and the connection's
    // own warnings name the peer and listener themselves, after their usual fields (log
    // lines keep the prefix users and tests match on).
    let span = tracing::debug_span!("kafka_connection", %peer, listener = %listener.name);
    async move {
        broker.metrics.connections.inc();
        match listener.acceptor() {
            None => {
                let (reader, writer) = stream.into_split();
                serve_stream(&broker, &listener, reader, writer, peer, None, &shutdown).await;
            }
            Some(acceptor) => {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let (_, session) = tls.get_ref();
                        debug!(suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
                            version = ?session.protocol_version(), "TLS established");
                        match certificate_principal(&listener, session.peer_certificates()) {
                            Ok(principal) => {
                                let (reader, writer) = tokio::io::split(tls);
                                serve_stream(
                                    &broker, &listener, reader, writer, peer, principal, &shutdown,
                                )
                                .await;
                            }
                            Err(why) => {
                                broker.metrics.auth_failures.inc();
                                warn!(reason = %why, %peer, listener = %listener.name,
                                    "client certificate refused");
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        broker.metrics.bad_requests.inc();
                        info!(error = %e, %peer, listener = %listener.name,
                            "TLS handshake failed");
                    }
                    Err(_) => {
                        broker.metrics.bad_requests.inc();
                        info!(%peer, listener = %listener.name, "TLS handshake timed out");
                    }
                }
            }
        }
        broker.metrics.connections.dec();
    }
    .instrument(span)
    .await
}

/// The principal a verified client certificate names, on listeners that use them.
fn certificate_principal(
    listener: &Listener,
    chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<Option<String>, String> {
    let Some(mapping) = &listener.certificate_principal else {
        return Ok(None);
    };
    let leaf = chain
        .and_then(|c| c.first())
        .ok_or("no client certificate")?;
    let dn = crate::acls::principal::certificate_dn(leaf)?;
    let name = mapping
        .apply(&dn)
        .ok_or_else(|| format!("no ssl_principal_mapping_rules rule applies to {dn:?}"))?;
    debug!(%dn, principal = %name, "client certificate accepted");
    Ok(Some(format!("User:{name}")))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_stream<R, W>(
    broker: &Arc<Broker>,
    listener: &Arc<Listener>,
    reader: R,
    writer: W,
    peer: SocketAddr,
    certificate_principal: Option<String>,
    shutdown: &CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Buffered: a small request's size prefix and body (and any pipelined requests behind
    // it) arrive in one read instead of two or three. Large bodies bypass the buffer.
    let reader = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    {
        let (tx, rx) = mpsc::channel(broker.config.kafka.max_in_flight_requests);
        let writer_task = tokio::spawn(
            write_responses(writer, rx, Arc::clone(&broker.metrics), peer).in_current_span(),
        );
        let outcome = read_requests(
            broker,
            listener,
            peer,
            certificate_principal,
            reader,
            tx,
            shutdown,
        )
        .await;
        match outcome {
            Ok(()) | Err(None) => debug!("client closed the connection"),
            Err(Some(why)) => {
                broker.metrics.bad_requests.inc();
                warn!(reason = %why, %peer, listener = %listener.name, "closing connection");
            }
        }
        // In-flight requests still get their responses (graceful shutdown included).
        let _ = writer_task.await;
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if prefix[0] == 0x16 && prefix[1] == 0x03 {
        return Err(FrameError::Tls);
    }
    if matches!(
        &prefix,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PRI "
    ) {
        return Err(FrameError::Http);
    }
    let size = i32::from_be_bytes(prefix) as i64;
    if size < MIN_REQUEST_BYTES as i64 || size > max as i64 {
        return Err(FrameError::BadSize(size, max));
    }
    // Grow with what actually arrives rather than trusting the prefix up front, doubling
    // but never past the announced size (an 80 MiB frame takes 80 MiB, not 128).
    let size = size as usize;
    let mut body: Vec<u8> = Vec::with_capacity(size.min(64 * 1024));
    while body.len() < size {
        if body.len() == body.capacity() {
            let target = (body.capacity() * 2).min(size);
            body.reserve_exact(target - body.len());
        }
        let room = (body.capacity() - body.len()).min(size - body.len());
        let read = (&mut *reader).take(room as u64).read_buf(&mut body).await?;
        if read == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(Some(Bytes::from(body)))
}

/// Reads and dispatches requests until the client leaves (`Ok`), shutdown (`Ok`), or a
/// protocol error (`Err(Some(reason))`). `Err(None)`: the writer stopped first.
async fn read_requests<R: AsyncRead + Unpin>(
    broker: &Arc<Broker>,
    listener: &Arc<Listener>,
    peer: SocketAddr,
    certificate_principal: Option<String>,
    mut reader: R,
    tx: mpsc::Sender<Outgoing>,
    shutdown: &CancellationToken,
) -> Result<(), Option<String>> {
    let fetch_queue = api::FetchQueue::new();
    let mut sasl = SaslSession::new(listener);
    // Who this connection is for the ACLs: set now, or once SASL succeeds.
    let mut session = (!listener.protocol.uses_sasl()).then(|| {
        Arc::new(Session::new(
            certificate_principal.unwrap_or_else(|| ANONYMOUS.to_string()),
            peer.ip(),
        ))
    });
    // Made once, not per request: a new `cancelled()` registers with the token (and
    // unregisters when dropped) each time, a cost every request paid.
    let shutdown = shutdown.cancelled();
    tokio::pin!(shutdown);
    // A SASL connection that has not logged in by then is closed: idle floods of
    // unauthenticated connections do not hold slots.
    let login_timer = tokio::time::sleep(std::time::Duration::from_millis(
        broker.config.kafka.sasl_login_timeout_ms,
    ));
    tokio::pin!(login_timer);
    loop {
        let max = if sasl.authenticated() {
            broker.config.kafka.max_request_bytes
        } else {
            broker
                .config
                .kafka
                .max_request_bytes
                .min(UNAUTHENTICATED_MAX_FRAME)
        };
        let frame = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            frame = read_frame(&mut reader, max) => frame.map_err(|e| Some(e.to_string()))?,
            _ = &mut login_timer, if !sasl.authenticated() => {
                broker.metrics.auth_failures.inc();
                return Err(Some("no SASL login within kafka.sasl_login_timeout_ms".to_string()));
            }
        };
        let Some(mut frame) = frame else {
            return Ok(());
        };
        let started = Instant::now();
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let api =
            ApiKey::try_from(api_key).map_err(|_| Some(format!("unknown API key {api_key}")))?;
        let Some((min, max_version)) = api::supported_versions(api) else {
            let why = if is_transaction_api(api) {
                ": tern does not support transactions (idempotent producers without a \
                 transactional.id work)"
            } else {
                ""
            };
            return Err(Some(format!(
                "{api:?} (key {api_key}) is not supported by tern{why}"
            )));
        };
        if version < min || version > max_version {
            if api == ApiKey::ApiVersions {
                // KIP-511: answer in v0 with our ranges so the client can retry.
                let header = response_header(correlation_id, api, 0).map_err(Some)?;
                let body = api::encode(&api::unsupported_version_response(), 0);
                send(&tx, Outgoing::Ready { header, body }).await?;
                continue;
            }
            return Err(Some(format!(
                "{api:?} v{version} is not supported (tern handles v{min}..=v{max_version})"
            )));
        }
        let header: RequestHeader =
            decode_guard::decode(&mut frame, api.request_header_version(version))
                .map_err(|e| Some(format!("malformed request header: {e}")))?;
        let response_header = response_header(header.correlation_id, api, version).map_err(Some)?;
        match api {
            ApiKey::SaslHandshake => {
                if version == 0 {
                    return Err(Some(
                        "SaslHandshake v0 (raw SASL tokens) is not supported; clients since \
                         Kafka 1.0 use v1 with SaslAuthenticate"
                            .to_string(),
                    ));
                }
                let request = decode_guard::decode(&mut frame, version)
                    .map_err(|e| Some(format!("malformed SaslHandshake: {e}")))?;
                let response = sasl.handshake(listener, request);
                let body = api::encode(&response, version);
                send(
                    &tx,
                    Outgoing::Ready {
                        header: response_header,
                        body,
                    },
                )
                .await?;
                continue;
            }
            ApiKey::SaslAuthenticate => {
                let request = decode_guard::decode(&mut frame, version)
                    .map_err(|e| Some(format!("malformed SaslAuthenticate: {e}")))?;
                // PLAIN derives the key (thousands of PBKDF2 rounds): off the async worker.
                let answer =
                    tokio::task::block_in_place(|| sasl.authenticate(&broker.users, request));
                let body = api::encode(&answer.response, version);
                let Some(why) = answer.failed else {
                    if let Some(principal) = sasl.principal() {
                        debug!(%principal, "authenticated");
                        session = Some(Arc::new(Session::new(principal.to_string(), peer.ip())));
                    }
                    send(
                        &tx,
                        Outgoing::Ready {
                            header: response_header,
                            body,
                        },
                    )
                    .await?;
                    continue;
                };
                broker.metrics.auth_failures.inc();
                warn!(reason = %why, %peer, listener = %listener.name, "authentication failed");
                let task = tokio::spawn(async move {
                    tokio::time::sleep(FAILED_AUTH_DELAY).await;
                    body
                });
                send(
                    &tx,
                    Outgoing::Waiting {
                        header: response_header,
                        task,
                    },
                )
                .await?;
                return Err(None);
            }
            ApiKey::ApiVersions => {}
            _ if !sasl.authenticated() || session.is_none() => {
                broker.metrics.auth_failures.inc();
                return Err(Some(format!(
                    "{api:?} before SASL authentication (listener {} is {:?})",
                    listener.name, listener.protocol
                )));
            }
            _ => {}
        }
        // Only ApiVersions gets here before SASL succeeds; it needs no principal.
        let session = session
            .clone()
            .unwrap_or_else(|| Arc::new(Session::new(ANONYMOUS.to_string(), peer.ip())));
        let context = api::RequestContext {
            listener: Arc::clone(listener),
            session,
            fetch_queue: Arc::clone(&fetch_queue),
            client_id: header.client_id.unwrap_or_default(),
            peer,
        };
        let reply = api::dispatch(broker, &context, api, version, &mut frame)
            .map_err(|e| Some(e.to_string()))?;
        let metrics = Arc::clone(&broker.metrics);
        let api_name = api_name(api);
        let outgoing = match reply {
            Reply::Nothing => {
                metrics.observe_request(api_name, started.elapsed(), false);
                continue;
            }
            Reply::Now(body) => {
                metrics.observe_request(api_name, started.elapsed(), body.is_err());
                Outgoing::Ready {
                    header: response_header,
                    body,
                }
            }
            Reply::Awaiting(future) => Outgoing::Awaiting {
                header: response_header,
                future,
                api: api_name,
                started,
            },
            Reply::Later(future) => Outgoing::Waiting {
                header: response_header,
                task: tokio::spawn(
                    async move {
                        let body = future.await;
                        metrics.observe_request(api_name, started.elapsed(), body.is_err());
                        body
                    }
                    .in_current_span(),
                ),
            },
        };
        send(&tx, outgoing).await?;
    }
}

/// Queues a response. `Err(None)`: the writer is gone (the client left), which is not
/// a protocol error.
async fn send(tx: &mpsc::Sender<Outgoing>, outgoing: Outgoing) -> Result<(), Option<String>> {
    tx.send(outgoing).await.map_err(|_| None)
}

fn response_header(correlation_id: i32, api: ApiKey, version: i16) -> Result<BytesMut, String> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| format!("cannot encode response header: {e:#}"))?;
    Ok(buf)
}

async fn write_responses<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Outgoing>,
    metrics: Arc<crate::metrics::Metrics>,
    peer: SocketAddr,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(outgoing) = rx.recv().await {
        let (header, body) = match outgoing {
            Outgoing::Ready { header, body } => (header, body),
            Outgoing::Waiting { header, task } => {
                // Answers written so far must not wait in the buffer behind one that is
                // still being worked on (a long poll, a fetch waiting for memory).
                if !task.is_finished() && writer.flush().await.is_err() {
                    return;
                }
                let body = task
                    .await
                    .unwrap_or_else(|e| Err(format!("request handler failed: {e}")));
                (header, body)
            }
            Outgoing::Awaiting {
                header,
                mut future,
                api,
                started,
            } => {
                let body = match poll_once(&mut future).await {
                    Some(body) => body,
                    None => {
                        // As above: what is written must not wait behind this answer.
                        if writer.flush().await.is_err() {
                            return;
                        }
                        future.await
                    }
                };
                metrics.observe_request(api, started.elapsed(), body.is_err());
                (header, body)
            }
        };
        let body = match body {
            Ok(body) => body,
            Err(why) => {
                warn!(reason = %why, %peer, "cannot answer a request; closing the connection");
                return;
            }
        };
        let size = (header.len() + body.len()) as u32;
        let api::Encoded {
            bytes: body,
            more,
            hold,
        } = body;
        let written = async {
            writer.write_all(&size.to_be_bytes()).await?;
            writer.write_all(&header).await?;
            writer.write_all(&body).await?;
            // Stored records passed through by reference: parts larger than the buffer
            // go straight to the socket.
            for part in &more {
                writer.write_all(part).await?;
            }
            if rx.is_empty() {
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        // The response left tern's memory budget (it sits in the socket buffer now).
        drop(hold);
        if let Err(e) = written {
            info!(error = %e, %peer, "client went away before its response was written");
            return;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// Polls `future` once: its output if it is ready, `None` if it would wait.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::DeleteRecords => "delete_records",
        ApiKey::DescribeConfigs => "describe_configs",
        ApiKey::AlterConfigs => "alter_configs",
        ApiKey::CreatePartitions => "create_partitions",
        ApiKey::IncrementalAlterConfigs => "incremental_alter_configs",
        ApiKey::DescribeCluster => "describe_cluster",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::ListGroups => "list_groups",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::DeleteGroups => "delete_groups",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::OffsetDelete => "offset_delete",
        _ => "other",
    }
}

/// The APIs only a transactional producer or consumer sends.
fn is_transaction_api(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::AddPartitionsToTxn
            | ApiKey::AddOffsetsToTxn
            | ApiKey::EndTxn
            | ApiKey::TxnOffsetCommit
            | ApiKey::WriteTxnMarkers
            | ApiKey::DescribeTransactions
            | ApiKey::ListTransactions
    )
}
