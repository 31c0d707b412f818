//! One MQTT connection, whichever protocol version: rumqttc's v3.1.1 and v5 clients
//! behind a small enum, so the bridge logic is written once.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet as Packet5, PublishProperties, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{Event, Outgoing, Packet, QoS, SubscribeFilter, TlsConfiguration, Transport};

use crate::config::{CompiledBridge, MqttVersion, RetainedPolicy};

/// A message delivered by the broker.
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub user_properties: Vec<(String, String)>,
    pub ack: AckToken,
}

/// What `Client::ack` needs to acknowledge one message.
pub enum AckToken {
    V4(rumqttc::Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

pub enum MqttEvent {
    Connected {
        session_present: bool,
    },
    Message(Box<Message>),
    /// A publish of ours went out with this packet id (0 for QoS 0).
    Sent(u16),
    /// The broker acknowledged our publish with this packet id.
    Acked(u16),
    /// The broker answered a SUBSCRIBE: one entry per filter, `Err` with the reason when
    /// it refused that filter.
    Subscribed(Vec<Result<u8, String>>),
    Other,
}

#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub enum Connection {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

fn qos4(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn qos5(q: u8) -> QoS5 {
    if q == 0 {
        QoS5::AtMostOnce
    } else {
        QoS5::AtLeastOnce
    }
}

/// How one connection is set up.
pub struct ConnectSpec<'a> {
    pub bridge: &'a CompiledBridge,
    pub client_id: String,
    /// Keep the session in the broker (inbound) or start clean (outbound).
    pub persistent: bool,
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Creates the client and its connection; nothing is sent until the first `poll`.
pub fn connect(spec: &ConnectSpec<'_>) -> (Client, Connection) {
    let b = spec.bridge;
    let c = &b.config;
    let transport = match &spec.tls {
        Some(tls) => Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())),
        None => Transport::tcp(),
    };
    // Requests: our acks (at most 4 × max_inflight unacknowledged messages, see inbound)
    // and publishes (at most max_inflight): sending them never waits.
    let capacity = 4 * usize::from(c.max_inflight) + 64;
    match c.protocol {
        MqttVersion::V311 => {
            let mut o = rumqttc::MqttOptions::new(spec.client_id.clone(), c.host.clone(), b.port);
            o.set_keep_alive(Duration::from_secs(c.keep_alive_secs))
                .set_clean_session(!spec.persistent)
                .set_manual_acks(true)
                .set_transport(transport)
                // rumqttc's own window is twice ours: packet ids then never collide.
                .set_inflight(c.max_inflight.saturating_mul(2).max(2))
                .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
            if let Some(user) = &c.username {
                o.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(o, capacity);
            (Client::V4(client), Connection::V4(Box::new(eventloop)))
        }
        MqttVersion::V5 => {
            let mut o =
                rumqttc::v5::MqttOptions::new(spec.client_id.clone(), c.host.clone(), b.port);
            o.set_keep_alive(Duration::from_secs(c.keep_alive_secs))
                .set_clean_start(!spec.persistent)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_receive_maximum(Some(c.max_inflight))
                .set_outgoing_inflight_upper_limit(c.max_inflight.saturating_mul(2).max(2))
                .set_max_packet_size(Some(16 * 1024 * 1024));
            if spec.persistent {
                o.set_session_expiry_interval(Some(c.session_expiry_secs));
            }
            if let Some(user) = &c.username {
                o.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(o, capacity);
            (Client::V5(client), Connection::V5(Box::new(eventloop)))
        }
    }
}

impl Connection {
    /// The next event; an error means the connection is gone.
    pub async fn poll(&mut self) -> Result<MqttEvent, String> {
        match self {
            Connection::V4(e) => match e.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(ack)) => Ok(MqttEvent::Connected {
                    session_present: ack.session_present,
                }),
                Event::Incoming(Packet::Publish(p)) => Ok(MqttEvent::Message(Box::new(Message {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    user_properties: Vec::new(),
                    ack: AckToken::V4(p),
                }))),
                Event::Incoming(Packet::PubAck(ack)) => Ok(MqttEvent::Acked(ack.pkid)),
                Event::Incoming(Packet::SubAck(ack)) => Ok(MqttEvent::Subscribed(
                    ack.return_codes
                        .iter()
                        .map(|c| match c {
                            rumqttc::SubscribeReasonCode::Success(q) => Ok(*q as u8),
                            rumqttc::SubscribeReasonCode::Failure => Err("Failure".to_string()),
                        })
                        .collect(),
                )),
                Event::Outgoing(Outgoing::Publish(pkid)) => Ok(MqttEvent::Sent(pkid)),
                _ => Ok(MqttEvent::Other),
            },
            Connection::V5(e) => match e.poll().await.map_err(|e| e.to_string())? {
                rumqttc::v5::Event::Incoming(Packet5::ConnAck(ack)) => {
                    if ack.code != rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success {
                        return Err(format!("connection refused: {:?}", ack.code));
                    }
                    Ok(MqttEvent::Connected {
                        session_present: ack.session_present,
                    })
                }
                rumqttc::v5::Event::Incoming(Packet5::Publish(p)) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let user_properties = p
                        .properties
                        .as_ref()
                        .map(|props| props.user_properties.clone())
                        .unwrap_or_default();
                    Ok(MqttEvent::Message(Box::new(Message {
                        topic,
                        payload: p.payload.clone(),
                        qos: p.qos as u8,
                        retain: p.retain,
                        user_properties,
                        ack: AckToken::V5(p),
                    })))
                }
                rumqttc::v5::Event::Incoming(Packet5::PubAck(ack)) => {
                    Ok(MqttEvent::Acked(ack.pkid))
                }
                rumqttc::v5::Event::Outgoing(Outgoing::Publish(pkid)) => Ok(MqttEvent::Sent(pkid)),
                rumqttc::v5::Event::Incoming(Packet5::SubAck(ack)) => Ok(MqttEvent::Subscribed(
                    ack.return_codes
                        .iter()
                        .map(|c| match c {
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(q) => {
                                Ok(*q as u8)
                            }
                            other => Err(format!("{other:?}")),
                        })
                        .collect(),
                )),
                _ => Ok(MqttEvent::Other),
            },
        }
    }
}

impl Connection {
    /// Sends PUBACKs without reading from the network. MQTT 3.1.1: written straight to
    /// the socket (rumqttc keeps no state for our manual PUBACKs). MQTT 5: queued on the
    /// client; those that do not fit stay in `acks` for the next call (the broker's
    /// receive maximum bounds them).
    pub async fn write_acks(
        &mut self,
        client: &Client,
        acks: &mut Vec<AckToken>,
    ) -> Result<(), String> {
        match self {
            Connection::V4(e) => {
                let network = e
                    .network
                    .as_mut()
                    .ok_or_else(|| "not connected".to_string())?;
                for ack in acks.drain(..) {
                    if let AckToken::V4(p) = ack {
                        if p.qos != QoS::AtMostOnce {
                            network
                                .write(Packet::PubAck(rumqttc::PubAck::new(p.pkid)))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                    }
                }
                network.flush().await.map_err(|e| e.to_string())
            }
            Connection::V5(_) => {
                acks.retain(|ack| client.try_ack(ack).is_err());
                Ok(())
            }
        }
    }
}

impl Client {
    pub async fn subscribe(
        &self,
        filters: &[(String, u8)],
        retained: RetainedPolicy,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| SubscribeFilter::new(f.clone(), qos4(*q))),
                )
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let rule = match retained {
                    RetainedPolicy::NewSubscription => RetainForwardRule::OnNewSubscribe,
                    RetainedPolicy::Always => RetainForwardRule::OnEverySubscribe,
                    RetainedPolicy::Never => RetainForwardRule::Never,
                };
                c.subscribe_many(filters.iter().map(|(f, q)| {
                    let mut filter = Filter::new(f.clone(), qos5(*q));
                    filter.retain_forward_rule = rule.clone();
                    filter
                }))
                .await
                .map_err(|e| e.to_string())
            }
        }
    }

    pub async fn ack(&self, token: &AckToken) -> Result<(), String> {
        match (self, token) {
            (Client::V4(c), AckToken::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("acknowledgement for another protocol version".to_string()),
        }
    }

    /// Acknowledges without waiting (for the polling task, which must never block).
    pub fn try_ack(&self, token: &AckToken) -> Result<(), String> {
        match (self, token) {
            (Client::V4(c), AckToken::V4(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V5(c), AckToken::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Err("acknowledgement for another protocol version".to_string()),
        }
    }

    pub async fn publish(
        &self,
        topic: String,
        qos: u8,
        retain: bool,
        payload: Bytes,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish_bytes(topic, qos4(qos), retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish_with_properties(
                    topic,
                    qos5(qos),
                    retain,
                    payload,
                    PublishProperties::default(),
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
