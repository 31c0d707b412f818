//! tern → MQTT: records of the outbound rules' topics are published in offset order; a
//! partition's cursor moves past a record only after the broker acknowledged it (QoS 1)
//! or it was sent (QoS 0), and cursors are stored durably in tern's metadata store.
//! After a crash publishing resumes at the stored cursor: at least once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{CompiledBridge, StartFrom};
use crate::metrics::Meters;
use crate::mqtt::{self, Client, ConnectSpec, MqttEvent};
use crate::ports::{PortError, TernLog};

/// Bytes read from one partition at a time.
const READ_BYTES: usize = 256 * 1024;
/// How often advanced cursors are stored.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// One partition of one outbound rule.
struct Source {
    rule: usize,
    topic: String,
    partition: i32,
    /// Next offset to read and publish.
    next: i64,
    /// Published, not yet acknowledged.
    inflight: BTreeSet<i64>,
    /// Last cursor stored durably.
    saved: i64,
}

impl Source {
    /// Everything before this offset was acknowledged (or skipped).
    fn cursor(&self) -> i64 {
        self.inflight.first().copied().unwrap_or(self.next)
    }
}

pub async fn run<L: TernLog>(
    bridge: Arc<CompiledBridge>,
    log: Arc<L>,
    meters: Meters,
    tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: CancellationToken,
) {
    let name = bridge.config.name.clone();
    let mut retry = Backoff::new(500, 30_000);
    let mut sources = loop {
        match open_sources(&bridge, log.as_ref()).await {
            Ok(s) => break s,
            Err(e) => {
                error!(bridge = %name, error = %e, "cannot open the outbound topics; retrying");
                meters.error();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry.next_delay()) => {}
                }
            }
        }
    };
    let spec = ConnectSpec {
        bridge: &bridge,
        client_id: format!("{}-out", bridge.client_id),
        persistent: false,
        tls,
    };
    let mut backoff = Backoff::new(
        bridge.config.reconnect_min_ms,
        bridge.config.reconnect_max_ms,
    );
    loop {
        let (client, mut connection) = mqtt::connect(&spec);
        let window = usize::from(bridge.config.max_inflight);
        let (events_tx, events) = mpsc::channel(4 * window + 16);
        let poller = tokio::spawn(async move {
            loop {
                let event = connection.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut publisher = Publisher {
            bridge: &bridge,
            log: log.as_ref(),
            meters: &meters,
            client: &client,
            sources: &mut sources,
            sent: VecDeque::new(),
            by_packet: HashMap::new(),
            connected: false,
        };
        let started = tokio::time::Instant::now();
        let lost = publisher.run(events, &shutdown).await;
        if started.elapsed() > crate::inbound::STABLE_CONNECTION {
            backoff.reset();
        }
        poller.abort();
        meters.connected.set(0);
        meters.inflight.set(0);
        // Unacknowledged records are published again on the next connection.
        for s in sources.iter_mut() {
            s.next = s.cursor();
            s.inflight.clear();
        }
        save_cursors(&name, log.as_ref(), &mut sources, &meters).await;
        let Some(reason) = lost else {
            info!(bridge = %name, "outbound stopped; cursors saved");
            return;
        };
        meters.error();
        let delay = backoff.next_delay();
        warn!(bridge = %name, error = %reason, "MQTT outbound connection lost; reconnecting in {} ms", delay.as_millis());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        meters.reconnects.inc();
    }
}

/// Every partition of every outbound topic (created with one partition if missing), at
/// its stored cursor or, the first time, where `start_from` says.
async fn open_sources<L: TernLog>(
    bridge: &CompiledBridge,
    log: &L,
) -> Result<Vec<Source>, PortError> {
    let mut sources = Vec::new();
    let mut new_cursors = Vec::new();
    for (rule_index, rule) in bridge.outbound.iter().enumerate() {
        let partitions = log.ensure_topic(&rule.topic, 1)?;
        for partition in 0..partitions {
            let (start, end) = log.offsets(&rule.topic, partition)?;
            let cursor = match log.load_cursor(&bridge.config.name, &rule.topic, partition)? {
                Some(c) => c.clamp(start, end),
                None => {
                    let c = match rule.start_from {
                        StartFrom::Latest => end,
                        StartFrom::Earliest => start,
                    };
                    new_cursors.push((rule.topic.clone(), partition, c));
                    c
                }
            };
            sources.push(Source {
                rule: rule_index,
                topic: rule.topic.clone(),
                partition,
                next: cursor,
                inflight: BTreeSet::new(),
                saved: cursor,
            });
        }
    }
    if !new_cursors.is_empty() {
        log.save_cursors(&bridge.config.name, new_cursors).await?;
    }
    Ok(sources)
}

async fn save_cursors<L: TernLog>(bridge: &str, log: &L, sources: &mut [Source], meters: &Meters) {
    let changed: Vec<(String, i32, i64)> = sources
        .iter()
        .filter(|s| s.cursor() != s.saved)
        .map(|s| (s.topic.clone(), s.partition, s.cursor()))
        .collect();
    if changed.is_empty() {
        return;
    }
    match log.save_cursors(bridge, changed.clone()).await {
        Ok(()) => {
            for (topic, partition, cursor) in changed {
                if let Some(s) = sources
                    .iter_mut()
                    .find(|s| s.topic == topic && s.partition == partition)
                {
                    s.saved = cursor;
                }
            }
        }
        Err(e) => {
            meters.error();
            warn!(bridge, error = %e, "outbound cursors not saved; retrying later");
        }
    }
}

struct Publisher<'a, L: TernLog> {
    bridge: &'a CompiledBridge,
    log: &'a L,
    meters: &'a Meters,
    client: &'a Client,
    sources: &'a mut Vec<Source>,
    /// Publishes handed to the client, waiting for their packet id, in order.
    sent: VecDeque<(usize, i64)>,
    /// QoS 1 publishes on the wire, by packet id.
    by_packet: HashMap<u16, (usize, i64)>,
    connected: bool,
}

impl<L: TernLog> Publisher<'_, L> {
    /// Publishes until the connection fails (returns why) or shutdown (returns None).
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<Result<MqttEvent, String>>,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let mut durable = self.log.durable_events();
        let mut save = tokio::time::interval(SAVE_EVERY);
        let name = self.bridge.config.name.clone();
        loop {
            if self.connected {
                if let Err(e) = self.fill().await {
                    return Some(e);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                event = events.recv() => match event {
                    None => return Some("connection closed".to_string()),
                    Some(Err(e)) => return Some(e),
                    Some(Ok(MqttEvent::Connected { .. })) => {
                        self.connected = true;
                        self.meters.connected.set(1);
                        info!(bridge = %name, "MQTT outbound connected");
                    }
                    Some(Ok(MqttEvent::Sent(packet))) => self.on_sent(packet),
                    Some(Ok(MqttEvent::Acked(packet))) => {
                        match self.by_packet.remove(&packet) {
                            Some((s, offset)) => self.complete(s, offset),
                            None => warn!(bridge = %name, packet, "PUBACK for an unknown packet id"),
                        }
                    }
                    Some(Ok(_)) => {}
                },
                _ = durable.changed() => {}
                _ = save.tick() => save_cursors(&name, self.log, self.sources, self.meters).await,
            }
        }
    }

    fn on_sent(&mut self, packet: u16) {
        let Some((s, offset)) = self.sent.pop_front() else {
            return;
        };
        if packet == 0 {
            self.complete(s, offset); // QoS 0: sent is all there is
        } else {
            self.by_packet.insert(packet, (s, offset));
        }
    }

    fn complete(&mut self, s: usize, offset: i64) {
        if let Some(source) = self.sources.get_mut(s) {
            if source.inflight.remove(&offset) {
                self.meters.published.inc();
                self.meters.inflight.dec();
            }
        }
    }

    fn inflight(&self) -> usize {
        self.sources.iter().map(|s| s.inflight.len()).sum()
    }

    /// Reads and publishes new records while the in-flight window has room.
    async fn fill(&mut self) -> Result<(), String> {
        let window = usize::from(self.bridge.config.max_inflight);
        for s in 0..self.sources.len() {
            if self.inflight() >= window {
                return Ok(());
            }
            let (topic, partition, next) = {
                let src = &self.sources[s];
                (src.topic.clone(), src.partition, src.next)
            };
            let read = match self.log.read(&topic, partition, next, READ_BYTES) {
                Ok(read) => read,
                Err(PortError::OutOfRange { start, .. }) => {
                    warn!(bridge = %self.bridge.config.name, topic, partition, next, start,
                          "records were deleted by retention before they were published; skipping to the log start");
                    self.meters.error();
                    self.sources[s].next = start.max(next);
                    continue;
                }
                Err(e) => {
                    self.meters.error();
                    warn!(bridge = %self.bridge.config.name, topic, partition, error = %e, "outbound read failed");
                    continue;
                }
            };
            let rule = &self.bridge.outbound[self.sources[s].rule];
            let mut read_everything = true;
            for record in read.records {
                if record.offset < self.sources[s].next {
                    continue;
                }
                if self.inflight() >= window {
                    read_everything = false;
                    break;
                }
                self.sources[s].next = record.offset + 1;
                let Some(mqtt_topic) =
                    rule.mqtt_topic
                        .render(&topic, partition, record.key.as_deref())
                else {
                    self.meters.dropped.inc();
                    warn!(bridge = %self.bridge.config.name, topic, partition, offset = record.offset,
                          "record has no key (or a key that is not a valid MQTT topic level) for the outbound template; skipped");
                    continue;
                };
                self.sources[s].inflight.insert(record.offset);
                self.meters.inflight.inc();
                self.sent.push_back((s, record.offset));
                self.client
                    .publish(mqtt_topic, rule.qos, rule.retain, record.value)
                    .await?;
            }
            // Batches skipped as undecodable leave `end` past the last record.
            if read_everything && read.end > self.sources[s].next {
                self.sources[s].next = read.end;
            }
        }
        Ok(())
    }
}
