//! `tern serve`: open the data directory, bind the listeners, run until SIGINT/SIGTERM,
//! then stop accepting, finish in-flight requests, fsync and close.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::broker::Broker;
use crate::config::Config;
use crate::kafka::listener::Listener;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the data directory: {0}")]
    Open(#[from] crate::topics::TopicError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Runs the broker until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    let started = Instant::now();
    let kafka_addr = config.kafka_listen().map_err(ServeError::Config)?;
    let http_addr = config.http_listen().map_err(ServeError::Config)?;
    let kafka_listener =
        TcpListener::bind(kafka_addr)
            .await
            .map_err(|source| ServeError::Bind {
                what: "kafka.listen",
                addr: kafka_addr.to_string(),
                source,
            })?;
    if !http_addr.ip().is_loopback() && config.http.token.is_empty() {
        tracing::warn!(listen = %http_addr, actions = config.http.actions,
            "the HTTP port (console, API, /metrics) is reachable beyond this machine without http.token");
    }
    let http_listener = TcpListener::bind(http_addr)
        .await
        .map_err(|source| ServeError::Bind {
            what: "http.listen",
            addr: http_addr.to_string(),
            source,
        })?;
    let kafka_local = kafka_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "kafka.listen",
            addr: kafka_addr.to_string(),
            source,
        })?;
    let http_local = http_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "http.listen",
            addr: http_addr.to_string(),
            source,
        })?;
    // The [[kafka.listeners]] (bound before the data directory opens: a port in use fails
    // fast).
    let mut extra_listeners = Vec::new();
    for l in &config.kafka.listeners {
        let socket = TcpListener::bind(&l.listen)
            .await
            .map_err(|source| ServeError::Bind {
                what: "kafka.listeners",
                addr: l.listen.clone(),
                source,
            })?;
        let local = socket.local_addr().map_err(|source| ServeError::Bind {
            what: "kafka.listeners",
            addr: l.listen.clone(),
            source,
        })?;
        extra_listeners.push((l.clone(), socket, local));
    }
    let data_dir = config.broker.data_dir.clone();
    let config_for_open = config.clone();
    let metrics = Arc::new(Metrics::new());
    let (broker, group_commit_task) = Broker::open(config_for_open, kafka_local.port(), metrics)?;
    let topics = broker.topics.list().len();
    let (host, port) = broker.advertised();
    let mut listeners = vec![(
        Arc::new(Listener::plaintext("PLAINTEXT", (host.to_string(), port))),
        kafka_listener,
    )];
    for (l, socket, local) in extra_listeners {
        let host = if !l.advertised_host.is_empty() {
            l.advertised_host.clone()
        } else if !local.ip().is_unspecified() {
            local.ip().to_string()
        } else {
            host.to_string()
        };
        let port = if l.advertised_port != 0 {
            l.advertised_port
        } else {
            local.port()
        };
        let listener =
            Listener::from_config(&l, (host, i32::from(port))).map_err(ServeError::Config)?;
        info!(listener = %l.name, listen = %local, protocol = ?l.security_protocol, "Kafka listener");
        listeners.push((Arc::new(listener), socket));
    }
    let mirror = crate::mirror_log::start(&broker, shutdown.clone()).map_err(ServeError::Config)?;
    let hub = mirror.hub_addr.map(|a| a.to_string()).unwrap_or_default();
    // Tests and scripts wait for this line: all ports are bound and recovery is done.
    info!(kafka = %kafka_local, http = %http_local, mirror_hub = %hub, data_dir = %data_dir.display(), topics,
        ready_ms = started.elapsed().as_millis() as u64, "tern ready");

    let retention = tokio::spawn(crate::retention::run(Arc::clone(&broker), shutdown.clone()));
    let scrub = tokio::spawn(crate::scrub::run(Arc::clone(&broker), shutdown.clone()));
    let cleaner = tokio::spawn(crate::log_cleaner::run(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let reopener = tokio::spawn(crate::retention::run_reopener(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let lag_sampler = tokio::spawn(crate::lag::tracker::run(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let group_ticker = tokio::spawn(Arc::clone(&broker.groups).run_ticker(shutdown.clone()));
    let http = tokio::spawn(crate::http::run(
        Arc::clone(&broker),
        http_listener,
        shutdown.clone(),
    ));
    let bridges =
        crate::bridge_log::start_bridges(&broker, shutdown.clone()).map_err(ServeError::Config)?;
    let sinks =
        crate::sink_log::start_sinks(&broker, shutdown.clone()).map_err(ServeError::Config)?;
    crate::kafka::server::run(Arc::clone(&broker), listeners, shutdown.clone()).await;
    for sink in sinks {
        let _ = sink.await;
    }
    for bridge in bridges {
        let _ = bridge.await;
    }
    for task in mirror.tasks {
        let _ = task.await;
    }
    let _ = retention.await;
    let _ = reopener.await;
    let _ = scrub.await;
    let _ = cleaner.await;
    let _ = group_ticker.await;
    let _ = lag_sampler.await;
    match http.await {
        Ok(Err(e)) => error!(error = %e, "http server failed"),
        Err(e) => error!(error = %e, "http task failed"),
        Ok(Ok(())) => {}
    }
    let closing = Arc::clone(&broker);
    let _ = tokio::task::spawn_blocking(move || closing.topics.close()).await;
    drop(broker);
    group_commit_task.abort();
    info!("tern stopped cleanly");
    Ok(())
}
