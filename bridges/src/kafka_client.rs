//! One connection to one Kafka broker, speaking plain Kafka with the messages of the
//! `kafka-protocol` crate: tern's CLI (`tern topics`, `tern produce`...) and the Kafka
//! sink use it, so both work against any Kafka broker, not only tern.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scram::{Mechanism, ScramClient};

/// Kafka's `security.protocol`: the sink's, and each of tern's listeners'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// How to reach a broker: TLS (SSL, SASL_SSL) and SASL (SASL_*), as Kafka clients
/// configure `security.protocol`.
#[derive(Clone, Default)]
pub struct Security {
    /// The TLS configuration and the name the broker's certificate must carry (default:
    /// the host of the address).
    pub tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
    pub sasl: Option<SaslLogin>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field(
                "sasl",
                &self.sasl.as_ref().map(|s| (&s.mechanism, &s.username)),
            )
            .finish()
    }
}

#[derive(Clone)]
pub struct SaslLogin {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

/// Largest response the CLI accepts (a fetch of a few MiB, or metadata of a big cluster).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the broker failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker does not support {api:?} in any version this client speaks ({ours:?})")]
    Unsupported {
        api: ApiKey,
        ours: RangeInclusive<i16>,
    },
    #[error("cannot encode {0}")]
    Encode(String),
    #[error("malformed response: {0}")]
    Decode(String),
    #[error("response of {0} bytes is larger than this client accepts")]
    TooLarge(usize),
    #[error("{0}")]
    Kafka(String),
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("SASL authentication as {user:?} failed: {reason}")]
    Auth { user: String, reason: String },
}

/// One connection to one broker, with the API versions it announced.
pub struct KafkaClient {
    /// Reads are buffered (a response's size and body in one read); writes go straight
    /// through, one whole request per write.
    stream: tokio::io::BufReader<Box<dyn Io>>,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
    client_id: StrBytes,
    max_response_bytes: usize,
}

impl KafkaClient {
    pub async fn connect(addr: &str) -> Result<KafkaClient, ClientError> {
        KafkaClient::connect_as(addr, "tern-cli").await
    }

    /// Connects with `client_id` (what the broker logs and quotas see).
    pub async fn connect_as(addr: &str, client_id: &str) -> Result<KafkaClient, ClientError> {
        KafkaClient::connect_secure(addr, client_id, &Security::default()).await
    }

    /// Connects over TLS and authenticates with SASL where `security` says so.
    pub async fn connect_secure(
        addr: &str,
        client_id: &str,
        security: &Security,
    ) -> Result<KafkaClient, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &security.tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let host = name.clone().unwrap_or_else(|| {
                    addr.rsplit_once(':')
                        .map_or(addr, |(h, _)| h)
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string()
                });
                let tls_err = |reason: String| ClientError::Tls {
                    addr: addr.to_string(),
                    reason,
                };
                let server_name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| tls_err(e.to_string()))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                Box::new(
                    connector
                        .connect(server_name, tcp)
                        .await
                        .map_err(|e| tls_err(e.to_string()))?,
                )
            }
        };
        let mut client = KafkaClient {
            stream: tokio::io::BufReader::with_capacity(8 * 1024, stream),
            correlation_id: 0,
            versions: HashMap::new(),
            client_id: StrBytes::from_string(client_id.to_string()),
            max_response_bytes: MAX_RESPONSE_BYTES,
        };
        // v0 is understood by every broker since 0.10.
        let response: ApiVersionsResponse = client
            .send_version(&ApiVersionsRequest::default(), 0)
            .await?;
        if response.error_code != 0 {
            return Err(ClientError::Kafka(format!(
                "ApiVersions failed with error {}",
                response.error_code
            )));
        }
        client.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(login) = &security.sasl {
            client.authenticate(login).await?;
        }
        Ok(client)
    }

    /// SaslHandshake v1, then the mechanism's tokens in SaslAuthenticate (KIP-152).
    async fn authenticate(&mut self, login: &SaslLogin) -> Result<(), ClientError> {
        let fail = |reason: String| ClientError::Auth {
            user: login.username.clone(),
            reason,
        };
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(login.mechanism.clone()));
        let (response, _) = self.send(&handshake, 1..=1).await?;
        if response.error_code != 0 {
            let offered: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(format!(
                "the broker does not offer {} (it offers {offered:?})",
                login.mechanism
            )));
        }
        let named = |e: ClientError| match e {
            ClientError::Auth { reason, .. } => fail(reason),
            other => other,
        };
        match Mechanism::parse(&login.mechanism) {
            None if login.mechanism == "PLAIN" => {
                let token = format!("\0{}\0{}", login.username, login.password).into_bytes();
                self.sasl_token(token).await.map_err(named)?;
            }
            None => return Err(fail(format!("unknown mechanism {}", login.mechanism))),
            Some(m) => {
                let mut scram =
                    ScramClient::new(m, &login.username, &login.password).map_err(fail)?;
                let server_first = self.sasl_token(scram.first()).await.map_err(named)?;
                let last = scram.last(&server_first).map_err(fail)?;
                let server_final = self.sasl_token(last).await.map_err(named)?;
                scram.verify(&server_final).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Lowers the largest response this connection accepts.
    pub fn set_max_response_bytes(&mut self, max: usize) {
        self.max_response_bytes = max;
    }

    /// One SaslAuthenticate round: our token out, the broker's back.
    async fn sasl_token(&mut self, token: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
        let (response, _) = self.send(&request, 0..=2).await?;
        if response.error_code != 0 {
            let reason = response
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_else(|| error_name(response.error_code));
            return Err(ClientError::Auth {
                user: String::new(),
                reason,
            });
        }
        Ok(response.auth_bytes.to_vec())
    }

    /// The highest version both sides speak, within `ours`.
    pub fn version_for(&self, api: ApiKey, ours: RangeInclusive<i16>) -> Result<i16, ClientError> {
        let (min, max) =
            self.versions
                .get(&(api as i16))
                .copied()
                .ok_or(ClientError::Unsupported {
                    api,
                    ours: ours.clone(),
                })?;
        let top = max.min(*ours.end());
        if top < min.max(*ours.start()) {
            return Err(ClientError::Unsupported { api, ours });
        }
        Ok(top)
    }

    /// Sends `request` at the best common version in `ours`; returns the response and the
    /// version used.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        ours: RangeInclusive<i16>,
    ) -> Result<(R::Response, i16), ClientError> {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Encode(format!("api key {}", R::KEY)))?;
        let version = self.version_for(api, ours)?;
        Ok((self.send_version(request, version).await?, version))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_no_response<R: Request>(
        &mut self,
        request: &R,
        ours: RangeInclusive<i16>,
    ) -> Result<(), ClientError> {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Encode(format!("api key {}", R::KEY)))?;
        let version = self.version_for(api, ours)?;
        self.write_request(request, version).await.map(|_| ())
    }

    async fn send_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.write_request(request, version).await?;
        self.read_response::<R>(version, correlation_id).await
    }

    /// Writes a request without reading its response (pipelining); returns its
    /// correlation id for [`KafkaClient::receive`].
    pub async fn submit<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        self.write_request(request, version).await
    }

    /// Reads the response to a request written with [`KafkaClient::submit`] (responses
    /// arrive in request order).
    pub async fn receive<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response, ClientError> {
        self.read_response::<R>(version, correlation_id).await
    }

    /// Writes raw bytes (tests of hostile input).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    async fn write_request<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| ClientError::Encode(format!("{e:#}")))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| ClientError::Encode(format!("{e:#}")))?;
        let size = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).await?;
        Ok(self.correlation_id)
    }

    async fn read_response<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response, ClientError> {
        let size = self.stream.read_u32().await? as usize;
        if size > self.max_response_bytes {
            return Err(ClientError::TooLarge(size));
        }
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).await?;
        let mut body = bytes::Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| ClientError::Decode(format!("{e:#}")))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Decode(format!(
                "correlation id {} does not match request {correlation_id}",
                header.correlation_id
            )));
        }
        let response = R::Response::decode(&mut body, version)
            .map_err(|e| ClientError::Decode(format!("{e:#}")))?;
        if body.has_remaining() {
            tracing::debug!(left = body.remaining(), "response had trailing bytes");
        }
        Ok(response)
    }
}

/// `Ok` for error code 0, else an error naming the partition and the Kafka error.
pub fn check_partition(partition: i32, code: i16) -> Result<(), ClientError> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::Kafka(format!(
            "partition {partition}: {}",
            error_name(code)
        )))
    }
}

/// A Kafka error code as text, for CLI messages.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(e) => format!("{e:?} ({code})"),
    }
}
