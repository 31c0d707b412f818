//! SCRAM (RFC 5802, with SHA-256 and SHA-512 as Kafka uses them, RFC 7677): credentials
//! derived from a password, the server side of one authentication exchange (tern's Kafka
//! listener) and the client side (the Kafka sink). PLAIN passwords are checked against
//! the same stored credentials, so no password is ever kept.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Kafka's minimum (and default) iteration count.
pub const MIN_ITERATIONS: u32 = 4096;
/// The most a credential may ask for (librdkafka's limit too): a server sending more
/// would make a client burn seconds of CPU on one login.
pub const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// What the server stores for one user and mechanism (base64 in the users file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub salt: String,
    pub iterations: u32,
    pub stored_key: String,
    pub server_key: String,
}

fn hmac_bytes(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(m.hmac(), key), data)
        .as_ref()
        .to_vec()
}

fn salted_password(m: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; m.len()];
    let rounds = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(m.pbkdf2(), rounds, salt, password, &mut out);
    out
}

/// (stored key, server key) for a password.
fn keys(m: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>) {
    let salted = salted_password(m, password, salt, iterations);
    let client_key = hmac_bytes(m, &salted, b"Client Key");
    let stored_key = digest::digest(m.digest(), &client_key).as_ref().to_vec();
    let server_key = hmac_bytes(m, &salted, b"Server Key");
    (stored_key, server_key)
}

pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| "no random numbers from the operating system".to_string())?;
    Ok(out)
}

impl Credential {
    pub fn new(m: Mechanism, password: &str, iterations: u32) -> Result<Credential, String> {
        let salt = random_bytes(32)?;
        let (stored, server) = keys(m, password.as_bytes(), &salt, iterations);
        Ok(Credential {
            salt: B64.encode(&salt),
            iterations,
            stored_key: B64.encode(stored),
            server_key: B64.encode(server),
        })
    }

    /// Whether `password` is the one this credential was made from (for SASL/PLAIN).
    pub fn verify_password(&self, m: Mechanism, password: &str) -> bool {
        let (Ok(salt), Ok(stored)) = (B64.decode(&self.salt), B64.decode(&self.stored_key)) else {
            return false;
        };
        let (computed, _) = keys(m, password.as_bytes(), &salt, self.iterations);
        constant_time_eq(&computed, &stored)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `=2C` and `=3D` in a SCRAM user name.
fn unescape_name(name: &str) -> Option<String> {
    let out = name.replace("=2C", ",").replace("=3D", "=");
    (!out.contains('=') || name.contains("=3D")).then_some(out)
}

/// The server's side of one SCRAM exchange: client-first → server-first, client-final →
/// server-final.
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

enum State {
    Start,
    SentFirst {
        user: String,
        credential: Option<Credential>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// What one step produced.
pub enum Step {
    /// Send this to the client and wait for its next message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send the final message.
    Success { user: String, message: Vec<u8> },
    /// Refused, with a reason for the log (never containing secrets).
    Failure(String),
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::Start,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// One client message. `lookup` finds a user's credential for this mechanism.
    pub fn step(&mut self, message: &[u8], lookup: &dyn Fn(&str) -> Option<Credential>) -> Step {
        let Ok(text) = std::str::from_utf8(message) else {
            return Step::Failure("SCRAM message is not UTF-8".into());
        };
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => self.first(text, lookup),
            State::SentFirst {
                user,
                credential,
                client_first_bare,
                server_first,
                nonce,
            } => self.last(
                text,
                &user,
                credential,
                &client_first_bare,
                &server_first,
                &nonce,
            ),
            State::Done => Step::Failure("SCRAM exchange already finished".into()),
        }
    }

    fn first(&mut self, text: &str, lookup: &dyn Fn(&str) -> Option<Credential>) -> Step {
        // gs2 header: "n,," (no channel binding, no authzid) or "y,,"; then the bare part.
        let mut parts = text.splitn(3, ',');
        let (Some(binding), Some(_authzid), Some(bare)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Step::Failure("malformed SCRAM client-first message".into());
        };
        if binding.starts_with('p') {
            return Step::Failure("SCRAM channel binding is not supported".into());
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = unescape_name(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v.to_string());
            } else if attr.starts_with("tokenauth=") {
                return Step::Failure("delegation tokens are not supported".into());
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Step::Failure("SCRAM client-first message without user or nonce".into());
        };
        if client_nonce.is_empty() || user.is_empty() {
            return Step::Failure("SCRAM client-first message with an empty user or nonce".into());
        }
        let credential = lookup(&user);
        // An unknown user gets a made-up salt, so the answer does not tell who exists.
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                B64.encode(random_bytes(32).unwrap_or_default()),
                MIN_ITERATIONS,
            ),
        };
        let Ok(server_nonce) = random_bytes(24) else {
            return Step::Failure("no random numbers".into());
        };
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!("r={nonce},s={salt},i={iterations}");
        let reply = server_first.clone().into_bytes();
        self.state = State::SentFirst {
            user,
            credential,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        };
        Step::Continue(reply)
    }

    fn last(
        &mut self,
        text: &str,
        user: &str,
        credential: Option<Credential>,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
    ) -> Step {
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return Step::Failure("SCRAM client-final message without a proof".into());
        };
        // librdkafka before 2.6.1 (Debian's kcat among them) sends the client nonce once
        // more in front of the combined nonce (librdkafka#4895); Kafka 3.8.1–3.9 accepted
        // that too. It still carries the whole server nonce, so replay stays impossible.
        let client_nonce = client_first_bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .unwrap_or_default();
        let accepted = [format!("r={nonce}"), format!("r={client_nonce}{nonce}")];
        if !without_proof
            .split(',')
            .any(|a| accepted.iter().any(|ok| a == ok))
        {
            return Step::Failure("SCRAM nonce does not match".into());
        }
        let Some(credential) = credential else {
            return Step::Failure(format!("unknown user {user:?}"));
        };
        let m = self.mechanism;
        let (Ok(proof), Ok(stored_key), Ok(server_key)) = (
            B64.decode(proof),
            B64.decode(&credential.stored_key),
            B64.decode(&credential.server_key),
        ) else {
            return Step::Failure("SCRAM proof is not base64".into());
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_bytes(m, &stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Step::Failure(format!("invalid credentials for user {user:?}"));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let computed = digest::digest(m.digest(), &client_key);
        if !constant_time_eq(computed.as_ref(), &stored_key) {
            return Step::Failure(format!("invalid credentials for user {user:?}"));
        }
        let server_signature = hmac_bytes(m, &server_key, auth_message.as_bytes());
        Step::Success {
            user: user.to_string(),
            message: format!("v={}", B64.encode(server_signature)).into_bytes(),
        }
    }
}

/// The client side of one SCRAM exchange (RFC 5802 §3): `first()`, then `last()` with
/// the server's first message, then `verify()` with its final message.
pub struct ScramClient {
    mechanism: Mechanism,
    user: String,
    password: String,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Result<ScramClient, String> {
        let nonce = B64.encode(random_bytes(24)?);
        let escaped = user.replace('=', "=3D").replace(',', "=2C");
        Ok(ScramClient {
            mechanism,
            user: user.to_string(),
            password: password.to_string(),
            client_first_bare: format!("n={escaped},r={nonce}"),
            nonce,
            server_signature: None,
        })
    }

    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message for the server-first message.
    pub fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "SCRAM server-first message is not UTF-8".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            } else if let Some(v) = attr.strip_prefix("e=") {
                return Err(format!("the server refused: {v}"));
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!(
                "malformed SCRAM server-first message for {}",
                self.user
            ));
        };
        if !nonce.starts_with(&self.nonce)
            || !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations)
        {
            return Err("the server's SCRAM nonce or iteration count is not acceptable".into());
        }
        let m = self.mechanism;
        let salted = salted_password(m, self.password.as_bytes(), &salt, iterations);
        let client_key = hmac_bytes(m, &salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac_bytes(m, stored_key.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac_bytes(m, &salted, b"Server Key");
        self.server_signature = Some(hmac_bytes(m, &server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the credential too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).unwrap_or_default();
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let given = text.strip_prefix("v=").and_then(|v| B64.decode(v).ok());
        match (given, &self.server_signature) {
            (Some(given), Some(expected)) if constant_time_eq(&given, expected) => Ok(()),
            _ => Err(
                "the server's SCRAM signature is wrong: it does not know this user's credential"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, written from RFC 5802, to drive the server.
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        client_final_as(m, password, client_first_bare, server_first, "")
    }

    /// The same, with `extra` in front of the nonce it sends back (old librdkafka).
    fn client_final_as(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        extra: &str,
    ) -> String {
        let attrs: std::collections::HashMap<&str, &str> = server_first
            .split(',')
            .filter_map(|a| a.split_once('='))
            .collect();
        let salt = B64.decode(attrs["s"]).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let salted = salted_password(m, password.as_bytes(), &salt, iterations);
        let client_key = hmac_bytes(m, &salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c={},r={extra}{}", B64.encode("n,,"), attrs["r"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_bytes(m, stored_key.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn exchange(m: Mechanism, stored: &Credential, user: &str, password: &str) -> Step {
        let mut server = ScramServer::new(m);
        let lookup = |u: &str| (u == "alice").then(|| stored.clone());
        let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
        let Step::Continue(first) = server.step(format!("n,,{bare}").as_bytes(), &lookup) else {
            panic!("no server-first");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        server.step(client_final(m, password, &bare, &first).as_bytes(), &lookup)
    }

    #[test]
    fn the_right_password_authenticates_and_wrong_ones_or_strangers_do_not() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let stored = Credential::new(m, "s3cret", MIN_ITERATIONS).unwrap();
            match exchange(m, &stored, "alice", "s3cret") {
                Step::Success { user, message } => {
                    assert_eq!(user, "alice");
                    assert!(message.starts_with(b"v="));
                }
                _ => panic!("{m:?}: the right password was refused"),
            }
            assert!(matches!(
                exchange(m, &stored, "alice", "wrong"),
                Step::Failure(_)
            ));
            match exchange(m, &stored, "mallory", "s3cret") {
                Step::Failure(why) => assert!(why.contains("unknown user")),
                _ => panic!("a stranger was let in"),
            }
            assert!(stored.verify_password(m, "s3cret"));
            assert!(!stored.verify_password(m, "s3cret "));
        }
    }

    #[test]
    fn the_client_and_the_server_agree_and_the_client_checks_the_server() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let stored = Credential::new(m, "pw,=x", MIN_ITERATIONS).unwrap();
            let lookup = |u: &str| (u == "a,b=c").then(|| stored.clone());
            let mut client = ScramClient::new(m, "a,b=c", "pw,=x").unwrap();
            let mut server = ScramServer::new(m);
            let Step::Continue(first) = server.step(&client.first(), &lookup) else {
                panic!("no server-first");
            };
            let last = client.last(&first).unwrap();
            let Step::Success { user, message } = server.step(&last, &lookup) else {
                panic!("{m:?}: refused");
            };
            assert_eq!(user, "a,b=c");
            client.verify(&message).unwrap();
            assert!(client.verify(b"v=AAAA").is_err());
        }
    }

    #[test]
    fn a_client_refuses_a_server_that_asks_for_too_many_or_too_few_iterations() {
        let mut client = ScramClient::new(Mechanism::Sha256, "a", "pw").unwrap();
        let nonce = client.nonce.clone();
        for i in [1, 4095, 1_000_001, u32::MAX] {
            let first = format!("r={nonce}xyz,s=c2FsdA==,i={i}");
            assert!(client.last(first.as_bytes()).is_err(), "{i}");
        }
        assert!(client
            .last(format!("r={nonce}xyz,s=c2FsdA==,i=4096").as_bytes())
            .is_ok());
    }

    #[test]
    fn the_old_librdkafka_nonce_with_the_client_part_twice_is_accepted() {
        let m = Mechanism::Sha512;
        let stored = Credential::new(m, "pw", MIN_ITERATIONS).unwrap();
        let lookup = |_: &str| Some(stored.clone());
        let mut server = ScramServer::new(m);
        let bare = "n=alice,r=abc";
        let Step::Continue(first) = server.step(format!("n,,{bare}").as_bytes(), &lookup) else {
            panic!("no server-first");
        };
        let first = String::from_utf8(first).unwrap();
        // As librdkafka < 2.6.1 builds it: r=<client nonce><combined nonce>.
        let message = client_final_as(m, "pw", bare, &first, "abc");
        assert!(matches!(
            server.step(message.as_bytes(), &lookup),
            Step::Success { .. }
        ));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let stored = Credential::new(Mechanism::Sha256, "pw", MIN_ITERATIONS).unwrap();
        let lookup = |_: &str| Some(stored.clone());
        for bad in [
            &b"garbage"[..],
            b"n,,r=abc",
            b"p=tls-unique,,n=a,r=b",
            b"n,,n=a,r=b,tokenauth=true",
            b"\xff\xfe",
        ] {
            let mut server = ScramServer::new(Mechanism::Sha256);
            assert!(
                matches!(server.step(bad, &lookup), Step::Failure(_)),
                "{bad:?}"
            );
        }
        let mut server = ScramServer::new(Mechanism::Sha256);
        assert!(matches!(
            server.step(b"n,,n=a,r=b", &lookup),
            Step::Continue(_)
        ));
        assert!(matches!(
            server.step(b"c=biws,r=other,p=AAAA", &lookup),
            Step::Failure(_)
        ));
    }
}
