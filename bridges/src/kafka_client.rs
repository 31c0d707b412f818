//! One connection to one Kafka broker, speaking plain Kafka with the messages of the
//! `kafka-protocol` crate: tern's CLI (`tern topics`, `tern produce`...) and the Kafka
//! sink use it, so both work against any Kafka broker, not only tern.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
}

/// One connection to one broker, with the API versions it announced.
pub struct KafkaClient {
    stream: TcpStream,
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
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut client = KafkaClient {
            stream,
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
        Ok(client)
    }

    /// Lowers the largest response this connection accepts.
    pub fn set_max_response_bytes(&mut self, max: usize) {
        self.max_response_bytes = max;
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
