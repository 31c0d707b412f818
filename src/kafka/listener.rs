//! Kafka listeners, in Kafka's vocabulary: `kafka.listen` is a PLAINTEXT listener (keep it
//! on loopback for local tools), and each `[[kafka.listeners]]` adds one with its own
//! security protocol — PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL — like Kafka's
//! `listeners` / `advertised.listeners` / `listener.security.protocol.map`. A client is
//! told the advertised address of the listener it connected to. TLS certificates are
//! re-read when their files change, without a restart.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

use crate::acls::principal::PrincipalMapping;

/// How often certificate files are checked for changes (on accept).
const CERT_CHECK: Duration = Duration::from_secs(2);

pub use tern_bridges::kafka_client::SecurityProtocol;

/// The SASL mechanisms tern speaks.
pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

/// One `[[kafka.listeners]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// For logs (Kafka's listener name).
    pub name: String,
    pub listen: String,
    pub security_protocol: SecurityProtocol,
    /// What clients are told to connect to (default: `kafka.advertised_host`, else the
    /// listen address); port 0 is the bound port.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// SASL mechanisms offered (SASL_* listeners).
    pub sasl_mechanisms: Vec<String>,
    /// PEM certificate chain and key (SSL and SASL_SSL listeners).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// SSL listeners: `required` asks every client for a certificate issued by
    /// `client_ca` and makes its subject the principal (Kafka's `ssl.client.auth`);
    /// `none` (default) asks for none.
    pub ssl_client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
    /// Kafka's `ssl.principal.mapping.rules` for client certificates.
    pub ssl_principal_mapping_rules: String,
}

/// Kafka's `ssl.client.auth` (`requested` is not offered: a principal that depends on
/// whether the client happened to send a certificate is a trap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    None,
    Required,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            name: String::new(),
            listen: String::new(),
            security_protocol: SecurityProtocol::Plaintext,
            advertised_host: String::new(),
            advertised_port: 0,
            sasl_mechanisms: MECHANISMS.iter().map(|m| m.to_string()).collect(),
            cert: None,
            key: None,
            ssl_client_auth: ClientAuth::None,
            client_ca: None,
            ssl_principal_mapping_rules: "DEFAULT".to_string(),
        }
    }
}

impl ListenerConfig {
    /// Checks the table; the error names the key.
    pub fn validate(&self, index: usize) -> Result<(), (String, String)> {
        let key = |k: &str| format!("kafka.listeners[{index}].{k}");
        if self.name.is_empty() {
            return Err((
                key("name"),
                "names the listener in logs; must not be empty".into(),
            ));
        }
        self.listen.parse::<std::net::SocketAddr>().map_err(|e| {
            (
                key("listen"),
                format!("{:?} is not host:port: {e}", self.listen),
            )
        })?;
        if self.security_protocol.uses_tls() {
            let (Some(cert), Some(key_file)) = (&self.cert, &self.key) else {
                return Err((
                    key("cert"),
                    "SSL and SASL_SSL listeners need `cert` and `key`".into(),
                ));
            };
            tern_bridges::tls::server_config(cert, key_file, self.client_ca())
                .map_err(|e| (key("cert"), e.to_string()))?;
        }
        match (self.ssl_client_auth, &self.client_ca) {
            (ClientAuth::Required, None) => {
                return Err((
                    key("client_ca"),
                    "ssl_client_auth = \"required\" needs the CA that issues client certificates"
                        .into(),
                ))
            }
            (ClientAuth::Required, Some(_)) if !self.security_protocol.uses_tls() => {
                return Err((
                    key("ssl_client_auth"),
                    "client certificates need an SSL or SASL_SSL listener".into(),
                ))
            }
            (ClientAuth::None, Some(_)) => {
                return Err((
                    key("client_ca"),
                    "set ssl_client_auth = \"required\" to use it".into(),
                ))
            }
            _ => {}
        }
        PrincipalMapping::parse(&self.ssl_principal_mapping_rules)
            .map_err(|e| (key("ssl_principal_mapping_rules"), e))?;
        if self.security_protocol.uses_sasl() {
            if self.sasl_mechanisms.is_empty() {
                return Err((key("sasl_mechanisms"), "name at least one mechanism".into()));
            }
            if let Some(m) = self
                .sasl_mechanisms
                .iter()
                .find(|m| !MECHANISMS.contains(&m.as_str()))
            {
                return Err((
                    key("sasl_mechanisms"),
                    format!("{m:?} is not one of {MECHANISMS:?}"),
                ));
            }
        }
        Ok(())
    }

    fn client_ca(&self) -> Option<&std::path::Path> {
        match self.ssl_client_auth {
            ClientAuth::Required => self.client_ca.as_deref(),
            ClientAuth::None => None,
        }
    }
}

/// A bound listener as connections see it.
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// (host, port) given to clients of this listener in Metadata and FindCoordinator.
    pub advertised: (String, i32),
    pub mechanisms: Vec<String>,
    /// Client certificates name the principal (SSL listeners with client auth).
    pub certificate_principal: Option<PrincipalMapping>,
    tls: Option<Reloading>,
}

/// A TLS configuration re-read when its files change.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    state: Mutex<TlsState>,
}

struct TlsState {
    checked: Instant,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    acceptor: TlsAcceptor,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Listener {
    pub fn plaintext(name: &str, advertised: (String, i32)) -> Listener {
        Listener {
            name: name.to_string(),
            protocol: SecurityProtocol::Plaintext,
            advertised,
            mechanisms: Vec::new(),
            certificate_principal: None,
            tls: None,
        }
    }

    pub fn from_config(
        config: &ListenerConfig,
        advertised: (String, i32),
    ) -> Result<Listener, String> {
        let tls = match (
            config.security_protocol.uses_tls(),
            &config.cert,
            &config.key,
        ) {
            (true, Some(cert), Some(key)) => {
                let server = tern_bridges::tls::server_config(cert, key, config.client_ca())
                    .map_err(|e| e.to_string())?;
                Some(Reloading {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: config.client_ca().map(|p| p.to_path_buf()),
                    state: Mutex::new(TlsState {
                        checked: Instant::now(),
                        stamps: (modified(cert), modified(key)),
                        acceptor: TlsAcceptor::from(server),
                    }),
                })
            }
            (true, _, _) => {
                return Err(format!("listener {}: SSL needs cert and key", config.name))
            }
            _ => None,
        };
        // SASL names the principal on SASL_SSL; the certificate only on SSL.
        let certificate_principal = match (config.client_ca(), config.security_protocol) {
            (Some(_), SecurityProtocol::Ssl) => Some(PrincipalMapping::parse(
                &config.ssl_principal_mapping_rules,
            )?),
            _ => None,
        };
        Ok(Listener {
            name: config.name.clone(),
            protocol: config.security_protocol,
            advertised,
            mechanisms: config.sasl_mechanisms.clone(),
            certificate_principal,
            tls,
        })
    }

    /// The TLS acceptor, re-read from disk first if the files changed (a renewed
    /// certificate applies to new connections; a broken one keeps the old in use).
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        let tls = self.tls.as_ref()?;
        let mut state = tls.state.lock().ok()?;
        if state.checked.elapsed() >= CERT_CHECK {
            state.checked = Instant::now();
            let stamps = (modified(&tls.cert), modified(&tls.key));
            if stamps != state.stamps {
                match tern_bridges::tls::server_config(
                    &tls.cert,
                    &tls.key,
                    tls.client_ca.as_deref(),
                ) {
                    Ok(server) => {
                        state.acceptor = TlsAcceptor::from(server);
                        state.stamps = stamps;
                        info!(listener = %self.name, cert = %tls.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        error!(listener = %self.name, error = %e, "cannot reload the TLS certificate; keeping the old one")
                    }
                }
            }
        }
        Some(state.acceptor.clone())
    }
}
