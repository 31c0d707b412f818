//! The Kafka listener: accept connections up to `kafka.max_connections`, one task each.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::connection;
use crate::broker::Broker;

/// Serves until `shutdown` fires, then waits for every connection to answer what it has
/// already read.
pub async fn run(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(broker.config.kafka.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    broker.metrics.connections_rejected.inc();
                    warn!(%peer, limit = broker.config.kafka.max_connections,
                        "connection refused: kafka.max_connections reached");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(connection::serve(
                    Arc::clone(&broker),
                    stream,
                    peer,
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    info!(
        open = connections.len(),
        "listener stopped; finishing in-flight requests"
    );
    while connections.join_next().await.is_some() {}
}
