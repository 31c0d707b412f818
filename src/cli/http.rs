//! Reading a running tern's HTTP API from the CLI (`tern mirror status`, the cleaner
//! figures of `tern topics describe`). Plain HTTP: meant for the gateway itself.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// GET `path` from the HTTP port.
pub async fn get(http: &str, path: &str) -> anyhow::Result<Bytes> {
    let stream = tokio::net::TcpStream::connect(http)
        .await
        .with_context(|| format!("cannot reach tern's HTTP port at {http}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, http)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{path}: HTTP {status}");
    }
    Ok(body)
}
