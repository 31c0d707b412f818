//! The hub's front door, against a real `tern serve` with `[hub]`: a QUIC client with no
//! certificate, with an expired certificate, speaking another protocol version, or
//! claiming another edge's name is refused, and both sides say why in words.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Tern;
use futures_util::{SinkExt, StreamExt};
use tern_mirror::certs::{self, Role};
use tern_mirror::config::CipherPreference;
use tern_mirror::tls;
use tern_mirror::wire::{codec, Frame};
use time::OffsetDateTime;
use tokio_util::codec::{FramedRead, FramedWrite};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        certs::create_ca(dir.path()).expect("ca");
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        certs::create(dir.path(), dir.path(), Role::Hub, "hub", &names, 30).expect("hub cert");
        certs::create(
            dir.path(),
            dir.path(),
            Role::Edge,
            "gw-1",
            &["gw-1".into()],
            30,
        )
        .expect("edge cert");
        // An edge certificate that expired yesterday.
        let ca = certs::Ca::load(dir.path()).expect("ca");
        let now = OffsetDateTime::now_utc();
        let expired = certs::issue(
            &ca,
            Role::Edge,
            &["gw-9".into()],
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .expect("expired cert");
        std::fs::write(dir.path().join("gw-9.pem"), expired.cert_pem).expect("write");
        std::fs::write(dir.path().join("gw-9.key"), expired.key_pem).expect("write");
        Site { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn hub(&self) -> (Tern, std::net::SocketAddr) {
        let config = format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
            self.path("hub.pem").display(),
            self.path("hub.key").display(),
            self.path("ca.pem").display()
        );
        let hub = Tern::start(&config);
        let log = hub.log();
        let addr = log
            .split("mirror_hub=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no mirror_hub address in the ready line:\n{log}"));
        (hub, addr)
    }
}

fn timing() -> tls::Timing {
    tls::Timing {
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
    }
}

/// A client as an edge would be, from PEM files (`cert` None: no client certificate).
fn client(site: &Site, cert: Option<&str>, alpn: &[u8]) -> quinn::ClientConfig {
    let roots = tls::load_roots(&site.path("ca.pem")).expect("roots");
    match cert {
        Some(name) => {
            let identity = tls::load_identity(
                &site.path(&format!("{name}.pem")),
                &site.path(&format!("{name}.key")),
            )
            .expect("identity");
            if alpn == tern_mirror::wire::ALPN {
                return tls::client_config(identity, roots, CipherPreference::Auto, &timing())
                    .expect("client config");
            }
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.chain, identity.key)
            .expect("client cert");
            tls.alpn_protocols = vec![alpn.to_vec()];
            quic(tls)
        }
        None => {
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
            tls.alpn_protocols = vec![alpn.to_vec()];
            quic(tls)
        }
    }
}

fn quic(tls: rustls::ClientConfig) -> quinn::ClientConfig {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic crypto");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Connects and says Hello as `edge`; returns the Welcome or why there was none.
async fn hello(
    config: quinn::ClientConfig,
    hub: std::net::SocketAddr,
    edge: &str,
) -> Result<(), String> {
    hello_connection(config, hub, edge).await.map(|_| ())
}

/// Like [`hello`], keeping the connection (and its endpoint) open.
async fn hello_connection(
    config: quinn::ClientConfig,
    hub: std::net::SocketAddr,
    edge: &str,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("udp");
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(hub, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| tls::explain(&e))?;
    // The hub may refuse the certificate after the client's side of the handshake is
    // done: whichever step notices first, the reason is the connection's close reason.
    let closed = |fallback: String| match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            String::from_utf8_lossy(&c.reason).to_string()
        }
        Some(other) => tls::explain(&other),
        None => fallback,
    };
    let exchange = async {
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| closed(e.to_string()))?;
        let mut writer = FramedWrite::new(send, codec());
        let hello = Frame::Hello {
            edge: edge.into(),
            max_bytes_per_sec: 0,
        }
        .encode()
        .map_err(|e| e.to_string())?;
        writer
            .send(hello)
            .await
            .map_err(|e| closed(e.to_string()))?;
        let mut reader = FramedRead::new(recv, codec());
        match reader.next().await {
            Some(Ok(b)) => match Frame::decode(Bytes::from(b.to_vec())) {
                Ok(Frame::Welcome { .. }) => {
                    // Keep the control stream open for the connection's life.
                    tokio::spawn(async move {
                        let _keep = writer;
                        while let Some(Ok(_)) = reader.next().await {}
                    });
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            },
            _ => Err(closed("stream closed".into())),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())??;
    Ok((endpoint, connection))
}

fn wait_for_log(hub: &Tern, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !hub.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "the hub never logged {needle:?}:\n{}",
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_every_wrong_identity_and_says_why() {
    let site = Site::new();
    let (hub, addr) = site.hub();

    // The right certificate under its own name: welcome.
    hello(
        client(&site, Some("gw-1"), tern_mirror::wire::ALPN),
        addr,
        "gw-1",
    )
    .await
    .expect("a valid edge is welcome");

    // No client certificate.
    let err = hello(client(&site, None, tern_mirror::wire::ALPN), addr, "gw-1")
        .await
        .expect_err("no certificate must be refused");
    assert!(!err.is_empty());
    wait_for_log(&hub, "no client certificate was presented");

    // An expired certificate: the edge is told so in words.
    let err = hello(
        client(&site, Some("gw-9"), tern_mirror::wire::ALPN),
        addr,
        "gw-9",
    )
    .await
    .expect_err("an expired certificate must be refused");
    assert!(
        err.contains("expired"),
        "the edge's error should say expired: {err}"
    );
    wait_for_log(&hub, "a certificate is expired or not yet valid");

    // Another protocol version.
    let err = hello(client(&site, Some("gw-1"), b"tern-mirror/99"), addr, "gw-1")
        .await
        .expect_err("an unknown protocol version must be refused");
    assert!(
        err.contains("no common mirror protocol version"),
        "the edge's error should name the version problem: {err}"
    );
    wait_for_log(&hub, "no common mirror protocol version");

    // A valid certificate claiming another edge's name (and so its namespace).
    let err = hello(
        client(&site, Some("gw-1"), tern_mirror::wire::ALPN),
        addr,
        "gw-2",
    )
    .await
    .expect_err("gw-1 must not act as gw-2");
    assert!(err.contains("not valid for the edge name `gw-2`"), "{err}");
    wait_for_log(&hub, "not valid for the edge name `gw-2`");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_of_the_same_edge_replaces_the_older_one() {
    let site = Site::new();
    let (hub, addr) = site.hub();
    let config = || client(&site, Some("gw-1"), tern_mirror::wire::ALPN);
    let (_first_endpoint, first) = hello_connection(config(), addr, "gw-1")
        .await
        .expect("first connection");
    let (_second_endpoint, second) = hello_connection(config(), addr, "gw-1")
        .await
        .expect("second connection");
    let closed = tokio::time::timeout(Duration::from_secs(10), first.closed())
        .await
        .expect("the older connection is closed");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                u64::from(c.error_code),
                u64::from(tern_mirror::wire::close::REPLACED)
            );
            let reason = String::from_utf8_lossy(&c.reason).to_string();
            assert!(
                reason.contains("replaced by a newer connection"),
                "{reason}"
            );
        }
        other => panic!("expected an application close, got {other}"),
    }
    assert!(
        second.close_reason().is_none(),
        "the newer connection stays"
    );
    wait_for_log(&hub, "edge reconnected; closing its older connection");
}
