//! TLS 1.3 with mutual authentication for the QUIC link: certificates from PEM files, the
//! `ring` provider with ChaCha20-Poly1305 first where the CPU has no AES instructions, ALPN
//! naming the protocol version, 0-RTT off, and the check that an edge's certificate is
//! valid for the name it claims.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use thiserror::Error;

use crate::config::CipherPreference;
use crate::wire::ALPN;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS setup: {0}")]
    Verifier(String),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn pem_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain = load_certs(cert)?;
    let bytes = read(key)?;
    let key = rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| pem_error(key, e))?
        .ok_or_else(|| pem_error(key, "no PRIVATE KEY in the file"))?;
    Ok(Identity { chain, key })
}

pub fn load_roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| pem_error(ca, e))?;
    }
    Ok(roots)
}

/// True when the CPU has AES instructions (AES-GCM is then faster than ChaCha20).
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The `ring` provider with TLS 1.3 suites only, ordered by preference. AES-128-GCM stays
/// in the list in every order: QUIC's initial packets need it.
fn provider(cipher: CipherPreference) -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    let chacha_first = match cipher {
        CipherPreference::Chacha20 => true,
        CipherPreference::Aes => false,
        CipherPreference::Auto => !cpu_has_aes(),
    };
    let mut suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
    ];
    if chacha_first {
        suites.insert(0, suite::TLS13_CHACHA20_POLY1305_SHA256);
    } else {
        suites.push(suite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    })
}

/// QUIC transport settings both sides share.
pub struct Timing {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

fn transport(timing: &Timing) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(timing.keep_alive));
    let idle = quinn::IdleTimeout::try_from(timing.idle_timeout)
        .map_err(|e| TlsError::Verifier(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    // One stream per mirrored partition; windows bound what a peer can make us buffer.
    t.max_concurrent_bidi_streams(4096u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window((8u32 * 1024 * 1024).into());
    t.receive_window((32u32 * 1024 * 1024).into());
    t.send_window(32 * 1024 * 1024);
    Ok(Arc::new(t))
}

/// The TLS half of the edge's configuration.
fn rustls_client(
    identity: Identity,
    roots: RootCertStore,
    cipher: CipherPreference,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider(cipher))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    Ok(tls)
}

/// The TLS half of the hub's configuration. The server follows the client's cipher
/// preference, so an edge without AES gets ChaCha20-Poly1305.
fn rustls_server(
    identity: Identity,
    roots: RootCertStore,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider(CipherPreference::Auto);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.ignore_client_order = false;
    Ok(tls)
}

/// The edge's side: presents `identity`, trusts hubs signed by `roots` for `hub_name`.
pub fn client_config(
    identity: Identity,
    roots: RootCertStore,
    cipher: CipherPreference,
    timing: &Timing,
) -> Result<quinn::ClientConfig, TlsError> {
    let tls = rustls_client(identity, roots, cipher)?;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(timing)?);
    Ok(config)
}

/// The hub's side: presents `identity`, requires a client certificate signed by `roots`.
pub fn server_config(
    identity: Identity,
    roots: RootCertStore,
    timing: &Timing,
) -> Result<quinn::ServerConfig, TlsError> {
    let tls = rustls_server(identity, roots)?;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(timing)?);
    Ok(config)
}

/// Checks that the edge's (already CA-verified) certificate is valid for `edge`: the CA
/// issued it for that name, so the edge may write `<edge>.*` and nothing else.
pub fn check_edge_identity(peer: Option<Box<dyn std::any::Any>>, edge: &str) -> Result<(), String> {
    let chain = peer
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("the edge presented no certificate")?;
    let leaf = chain.first().ok_or("the edge presented no certificate")?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("unreadable edge certificate: {e}"))?;
    let name =
        ServerName::try_from(edge.to_string()).map_err(|e| format!("edge name `{edge}`: {e}"))?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
        format!("the edge's certificate is not valid for the edge name `{edge}` it claims")
    })
}

/// A handshake failure in words a user can act on.
pub fn explain(error: &quinn::ConnectionError) -> String {
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("noapplicationprotocol")
        || lower.contains("no_application_protocol")
        || lower.contains("error 120")
    {
        format!(
            "no common mirror protocol version (this side speaks {}): {text}",
            String::from_utf8_lossy(ALPN)
        )
    } else if lower.contains("expired")
        || lower.contains("not valid yet")
        || lower.contains("notvalidyet")
    {
        let clock_ok = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() > 1_700_000_000)
            .unwrap_or(false);
        if clock_ok {
            format!("a certificate is expired or not yet valid: {text}")
        } else {
            format!("this machine's clock is not set (it says 1970?): certificates cannot be checked until time is synced; retrying ({text})")
        }
    } else if lower.contains("no certificates")
        || lower.contains("certificate required")
        || lower.contains("error 116")
    {
        format!("no client certificate was presented (the hub requires one): {text}")
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("error 48")
    {
        format!("the certificate is not signed by the CA the other side trusts: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a TLS handshake in memory and returns the suite both sides agreed on.
    fn negotiated(cipher: CipherPreference) -> rustls::SupportedCipherSuite {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::certs::tests::site(dir.path());
        let roots = || load_roots(&dir.path().join("ca.pem")).expect("roots");
        let id = |n: &str| {
            load_identity(
                &dir.path().join(format!("{n}.pem")),
                &dir.path().join(format!("{n}.key")),
            )
            .expect("identity")
        };
        let client_config = rustls_client(id("gw-1"), roots(), cipher).expect("client");
        let server_config = rustls_server(id("hub"), roots()).expect("server");
        let name = ServerName::try_from("localhost").expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), name).expect("client conn");
        let mut server =
            rustls::ServerConnection::new(Arc::new(server_config)).expect("server conn");
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).expect("client writes");
            server.read_tls(&mut &buf[..]).expect("server reads");
            server
                .process_new_packets()
                .expect("server accepts the edge");
            let mut buf = Vec::new();
            server.write_tls(&mut buf).expect("server writes");
            client.read_tls(&mut &buf[..]).expect("client reads");
            client
                .process_new_packets()
                .expect("client accepts the hub");
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking(), "handshake did not finish");
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        server.negotiated_cipher_suite().expect("a suite")
    }

    #[test]
    fn an_edge_without_aes_gets_chacha20_and_others_get_aes_gcm() {
        let chacha = negotiated(CipherPreference::Chacha20);
        assert_eq!(
            chacha.suite(),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        let aes = negotiated(CipherPreference::Aes);
        assert_eq!(aes.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
