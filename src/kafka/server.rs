//! The Kafka listeners: accept connections on every listener up to
//! `kafka.max_connections` in all and `kafka.max_connections_per_ip` per client address,
//! one task each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::connection;
use super::listener::Listener;
use crate::broker::Broker;

/// Serves until `shutdown` fires, then waits for every connection to answer what it has
/// already read.
pub async fn run(
    broker: Arc<Broker>,
    listeners: Vec<(Arc<Listener>, TcpListener)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(broker.config.kafka.max_connections));
    let (accepted_tx, mut accepted) = mpsc::channel::<(TcpStream, SocketAddr, Arc<Listener>)>(64);
    let mut acceptors = JoinSet::new();
    for (listener, socket) in listeners {
        let (tx, shutdown) = (accepted_tx.clone(), shutdown.clone());
        acceptors.spawn(async move {
            loop {
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = socket.accept() => result,
                };
                match result {
                    Ok((stream, peer)) => {
                        if tx
                            .send((stream, peer, Arc::clone(&listener)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(listener = %listener.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    drop(accepted_tx);
    let mut connections = JoinSet::new();
    let per_ip = Arc::new(PerIp {
        limit: broker.config.kafka.max_connections_per_ip,
        open: Mutex::new(HashMap::new()),
    });
    loop {
        let (stream, peer, listener) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = accepted.recv() => match next {
                Some(next) => next,
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(address_slot) = PerIp::take(&per_ip, peer.ip()) else {
            broker.metrics.connections_rejected.inc();
            // One line per refusal would let a flood fill the log: debug only.
            tracing::debug!(%peer, "connection refused: kafka.max_connections_per_ip reached");
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            broker.metrics.connections_rejected.inc();
            warn!(%peer, limit = broker.config.kafka.max_connections,
                "connection refused: kafka.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let serve = connection::serve(
            Arc::clone(&broker),
            listener,
            stream,
            peer,
            shutdown.clone(),
            permit,
        );
        connections.spawn(async move {
            serve.await;
            drop(address_slot);
        });
    }
    acceptors.shutdown().await;
    info!(
        open = connections.len(),
        "listeners stopped; finishing in-flight requests"
    );
    while connections.join_next().await.is_some() {}
}

/// Open connections per client address.
struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count; given back when dropped.
struct AddressSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(per_ip: &Arc<PerIp>, ip: IpAddr) -> Option<AddressSlot> {
        if per_ip.limit > 0 {
            let mut open = per_ip.open.lock().ok()?;
            let count = open.entry(ip).or_insert(0);
            if *count >= per_ip.limit {
                return None;
            }
            *count += 1;
        }
        Some(AddressSlot {
            per_ip: Arc::clone(per_ip),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if self.per_ip.limit == 0 {
            return;
        }
        if let Ok(mut open) = self.per_ip.open.lock() {
            if let Some(count) = open.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}
