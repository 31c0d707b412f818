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
            tern_bridges::tls::server_config(cert, key_file)
                .map_err(|e| (key("cert"), e.to_string()))?;
        }
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
}

/// A bound listener as connections see it.
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// (host, port) given to clients of this listener in Metadata and FindCoordinator.
    pub advertised: (String, i32),
    pub mechanisms: Vec<String>,
    tls: Option<Reloading>,
}

/// A TLS configuration re-read when its files change.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
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
                let server =
                    tern_bridges::tls::server_config(cert, key).map_err(|e| e.to_string())?;
                Some(Reloading {
                    cert: cert.clone(),
                    key: key.clone(),
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
        Ok(Listener {
            name: config.name.clone(),
            protocol: config.security_protocol,
            advertised,
            mechanisms: config.sasl_mechanisms.clone(),
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
                match tern_bridges::tls::server_config(&tls.cert, &tls.key) {
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
