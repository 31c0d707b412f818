//! MQTT → tern: messages matching the inbound rules are appended in small batches (one
//! durable append per linger window) and acknowledged (PUBACK) only after the append is
//! durable. Unacknowledged messages stay with the MQTT broker, which sends them again
//! when the bridge reconnects: at least once, duplicates only from that window.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{CompiledBridge, MqttVersion, RetainedPolicy};
use crate::metrics::Meters;
use crate::mqtt::{self, AckToken, Client, ConnectSpec, Message, MqttEvent};
use crate::ports::{InboundRecord, TernLog};

/// A connection that lasted this long resets the reconnect backoff.
pub(crate) const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Messages received but not yet acknowledged. Polling pauses (so TCP pushes back on the
/// broker) while the window is full, rather than trusting the broker's own limit: a
/// resumed session can deliver its whole queue at once.
struct Window {
    unacked: AtomicUsize,
    room: Notify,
    cap: usize,
}

impl Window {
    fn new(cap: usize) -> Window {
        Window {
            unacked: AtomicUsize::new(0),
            room: Notify::new(),
            cap,
        }
    }

    async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            if self.unacked.load(Ordering::Acquire) < self.cap {
                return;
            }
            room.await;
        }
    }

    fn is_full(&self) -> bool {
        self.unacked.load(Ordering::Acquire) >= self.cap
    }

    fn take(&self) {
        self.unacked.fetch_add(1, Ordering::AcqRel);
    }

    fn release(&self) {
        self.unacked.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_one();
    }
}

/// A received message on its way to the log.
struct Pending {
    topic: Arc<str>,
    record: InboundRecord,
    ack: AckToken,
}

/// Runs the inbound side of one bridge until `shutdown`.
pub async fn run<L: TernLog>(
    bridge: Arc<CompiledBridge>,
    log: Arc<L>,
    meters: Meters,
    tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: CancellationToken,
) {
    let name = bridge.config.name.clone();
    let topics: Vec<Arc<str>> = bridge
        .inbound
        .iter()
        .map(|r| Arc::from(r.topic.as_str()))
        .collect();
    for rule in &bridge.inbound {
        let mut retry = Backoff::new(500, 30_000);
        while let Err(e) = log.ensure_topic(&rule.topic, rule.partitions) {
            error!(bridge = %name, topic = %rule.topic, error = %e, "cannot create the inbound topic; retrying");
            meters.error();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retry.next_delay()) => {}
            }
        }
    }
    let filters: Vec<(String, u8)> = bridge
        .inbound
        .iter()
        .map(|r| (r.filter.as_str().to_string(), r.qos))
        .collect();
    let spec = ConnectSpec {
        bridge: &bridge,
        client_id: bridge.client_id.clone(),
        persistent: true,
        tls,
    };
    let mut backoff = Backoff::new(
        bridge.config.reconnect_min_ms,
        bridge.config.reconnect_max_ms,
    );
    let mut first_connection = true;
    loop {
        let (client, mut connection) = mqtt::connect(&spec);
        // Unbounded so that polling (which also sends our PUBACKs) never waits on the
        // appender; the window bounds what is in it.
        let (tx, rx) = mpsc::unbounded_channel();
        let window = Arc::new(Window::new(usize::from(bridge.config.max_inflight)));
        let (overflow_tx, mut overflow) = mpsc::unbounded_channel();
        let appender = tokio::spawn(append_loop(
            rx,
            client.clone(),
            Arc::clone(&bridge),
            Arc::clone(&log),
            meters.clone(),
            Arc::clone(&window),
            overflow_tx,
        ));
        let mut session = Session {
            bridge: &bridge,
            topics: &topics,
            filters: &filters,
            client: &client,
            tx: &tx,
            window: &window,
            meters: &meters,
            first_connection: &mut first_connection,
            ingest_retained: true,
        };
        let started = Instant::now();
        let lost = tokio::select! {
            _ = shutdown.cancelled() => None,
            e = session.receive(&mut connection, &mut overflow) => Some(e),
        };
        if started.elapsed() > STABLE_CONNECTION {
            backoff.reset();
        }
        // Messages not yet appended are dropped here unacknowledged: the broker keeps them.
        appender.abort();
        meters.connected.set(0);
        meters.inflight.set(0);
        let Some(reason) = lost else {
            info!(bridge = %name, "inbound stopped; unacknowledged messages stay with the MQTT broker");
            return;
        };
        meters.error();
        let delay = backoff.next_delay();
        warn!(bridge = %name, host = %bridge.config.host, port = bridge.port, error = %reason,
              "MQTT inbound connection lost; reconnecting in {} ms", delay.as_millis());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        meters.reconnects.inc();
    }
}

struct Session<'a> {
    bridge: &'a CompiledBridge,
    topics: &'a [Arc<str>],
    filters: &'a [(String, u8)],
    client: &'a Client,
    tx: &'a mpsc::UnboundedSender<Pending>,
    window: &'a Window,
    meters: &'a Meters,
    first_connection: &'a mut bool,
    ingest_retained: bool,
}

impl Session<'_> {
    /// Polls the connection until it fails; returns why.
    async fn receive(
        &mut self,
        connection: &mut mqtt::Connection,
        overflow: &mut mpsc::UnboundedReceiver<AckToken>,
    ) -> String {
        let mut acks = Vec::new();
        loop {
            // PUBACKs that did not fit rumqttc's request queue go out first.
            while let Ok(ack) = overflow.try_recv() {
                acks.push(ack);
            }
            if !acks.is_empty() {
                if let Err(e) = connection.write_acks(self.client, &mut acks).await {
                    return e;
                }
            }
            if self.window.is_full() {
                tokio::select! {
                    ack = overflow.recv() => acks.extend(ack),
                    _ = self.window.wait_for_room() => {}
                }
                continue;
            }
            let event = match connection.poll().await {
                Ok(event) => event,
                Err(e) => return e,
            };
            match event {
                MqttEvent::Connected { session_present } => {
                    if let Err(e) = self.on_connected(session_present).await {
                        return e;
                    }
                }
                MqttEvent::Subscribed(codes) => self.on_subscribed(&codes),
                MqttEvent::Message(message) => {
                    if let Err(e) = self.on_message(message).await {
                        return e;
                    }
                }
                _ => {}
            }
        }
    }

    async fn on_connected(&mut self, session_present: bool) -> Result<(), String> {
        let c = &self.bridge.config;
        self.meters.connected.set(1);
        info!(bridge = %c.name, host = %c.host, port = self.bridge.port, session_present,
              "MQTT inbound connected");
        self.ingest_retained = match (c.retained, c.protocol) {
            (RetainedPolicy::Always, _) => true,
            (RetainedPolicy::Never, _) => false,
            // MQTT 5 brokers apply retain-handling themselves.
            (RetainedPolicy::NewSubscription, MqttVersion::V5) => true,
            // MQTT 3.1.1: retained messages that follow a re-subscription of a resumed
            // session are replays of what was ingested before.
            (RetainedPolicy::NewSubscription, MqttVersion::V311) => !session_present,
        };
        // A resumed session keeps its subscriptions; subscribe again only when the broker
        // lost it, and once per process start (the rules may have changed).
        if !session_present || *self.first_connection {
            self.client
                .subscribe(self.filters, c.retained)
                .await
                .map_err(|e| format!("subscribe failed: {e}"))?;
            *self.first_connection = false;
        }
        Ok(())
    }

    fn on_subscribed(&self, codes: &[Result<u8, String>]) {
        let name = &self.bridge.config.name;
        if codes.len() != self.filters.len() {
            warn!(bridge = %name, filters = self.filters.len(), answers = codes.len(),
                  "SUBACK does not answer every filter");
        }
        info!(bridge = %name, filters = self.filters.len(), "MQTT inbound subscribed");
        for ((filter, _), code) in self.filters.iter().zip(codes) {
            match code {
                Ok(qos) => {
                    info!(bridge = %name, filter = %filter, granted_qos = qos, "subscription granted")
                }
                Err(reason) => {
                    self.meters.error();
                    error!(bridge = %name, filter = %filter, reason = %reason,
                           "the MQTT broker refused the subscription (check its ACLs); this rule receives nothing");
                }
            }
        }
    }

    async fn on_message(&mut self, message: Box<Message>) -> Result<(), String> {
        self.meters.received.inc();
        let matched = self
            .bridge
            .inbound
            .iter()
            .enumerate()
            .find_map(|(i, rule)| rule.filter.matches(&message.topic).map(|c| (i, rule, c)));
        let Some((index, rule, captures)) = matched else {
            warn!(bridge = %self.bridge.config.name, topic = %message.topic, "message matches no inbound rule; acknowledged and dropped");
            return self.drop_message(&message).await;
        };
        if message.retain && !self.ingest_retained {
            return self.drop_message(&message).await;
        }
        let key = rule.key.render(&message.topic, &captures);
        let mut headers = vec![
            ("mqtt.topic".to_string(), Bytes::from(message.topic.clone())),
            ("mqtt.qos".to_string(), Bytes::from(message.qos.to_string())),
            (
                "mqtt.retain".to_string(),
                Bytes::from_static(if message.retain { b"true" } else { b"false" }),
            ),
        ];
        headers.extend(
            message
                .user_properties
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v))),
        );
        let record = InboundRecord {
            key: Some(Bytes::from(key)),
            value: message.payload,
            headers,
            timestamp_ms: now_ms(),
        };
        self.window.take();
        self.meters.inflight.inc();
        self.tx
            .send(Pending {
                topic: Arc::clone(&self.topics[index]),
                record,
                ack: message.ack,
            })
            .map_err(|_| "the appender stopped".to_string())
    }

    async fn drop_message(&self, message: &Message) -> Result<(), String> {
        self.meters.dropped.inc();
        self.client.try_ack(&message.ack)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Collects messages for up to `linger_ms`, appends them durably, then acknowledges them
/// in arrival order. A failing append is retried with the PUBACKs withheld.
async fn append_loop<L: TernLog>(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    client: Client,
    bridge: Arc<CompiledBridge>,
    log: Arc<L>,
    meters: Meters,
    window: Arc<Window>,
    overflow: mpsc::UnboundedSender<AckToken>,
) {
    let linger = Duration::from_millis(bridge.config.linger_ms);
    let max = usize::from(bridge.config.max_inflight);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        let mut by_topic: Vec<(Arc<str>, Vec<InboundRecord>)> = Vec::new();
        let mut acks = Vec::with_capacity(batch.len());
        for p in batch {
            match by_topic.iter_mut().find(|(t, _)| *t == p.topic) {
                Some((_, records)) => records.push(p.record),
                None => by_topic.push((p.topic, vec![p.record])),
            }
            acks.push(p.ack);
        }
        for (topic, records) in by_topic {
            append_until_durable(&bridge, log.as_ref(), &meters, &topic, &records).await;
        }
        for ack in acks {
            // Never waits. rumqttc drains its request queue only between network reads,
            // so under a flood the queue can fill: those PUBACKs go to the polling task,
            // which writes them itself before it reads again.
            if client.try_ack(&ack).is_err() && overflow.send(ack).is_err() {
                return; // the connection is gone: the broker will send the message again
            }
            meters.acked.inc();
            meters.inflight.dec();
            window.release();
        }
    }
}

async fn append_until_durable<L: TernLog>(
    bridge: &CompiledBridge,
    log: &L,
    meters: &Meters,
    topic: &str,
    records: &[InboundRecord],
) {
    let mut retry = Backoff::new(100, 5_000);
    let count = records.len() as u64;
    loop {
        match log.append(topic, records).await {
            Ok(rejected) => {
                meters.appended.inc_by(count - rejected as u64);
                meters.dropped.inc_by(rejected as u64);
                return;
            }
            Err(e) => {
                meters.error();
                let delay = retry.next_delay();
                warn!(bridge = %bridge.config.name, topic, error = %e,
                      "append failed; PUBACKs withheld (messages stay in the MQTT broker), retrying in {} ms",
                      delay.as_millis());
                tokio::time::sleep(delay).await;
            }
        }
    }
}
