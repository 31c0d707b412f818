//! SASL on a connection of a SASL_PLAINTEXT or SASL_SSL listener (KIP-152 framing):
//! SaslHandshake picks the mechanism, SaslAuthenticate carries the tokens — PLAIN, or the
//! two rounds of SCRAM-SHA-256/512. Until it succeeds a connection may send only
//! ApiVersions, SaslHandshake and SaslAuthenticate, in small frames; a failure is answered
//! (after a pause, which slows password guessing) and the connection closed.

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::listener::Listener;
use crate::users::scram::{Mechanism, ScramServer, Step};
use crate::users::Users;

/// Largest frame an unauthenticated connection may send.
pub const UNAUTHENTICATED_MAX_FRAME: u32 = 512 * 1024;

enum Chosen {
    Plain,
    Scram(ScramServer),
}

/// The authentication state of one connection.
pub struct SaslSession {
    required: bool,
    chosen: Option<Chosen>,
    principal: Option<String>,
}

/// The answer to an authentication message, and whether the connection must close.
pub struct Answer {
    pub response: SaslAuthenticateResponse,
    /// Why the connection closes after the answer (failed authentication), for the log.
    pub failed: Option<String>,
}

impl SaslSession {
    pub fn new(listener: &Listener) -> SaslSession {
        SaslSession {
            required: listener.protocol.uses_sasl(),
            chosen: None,
            principal: None,
        }
    }

    /// Whether the connection may send any request.
    pub fn authenticated(&self) -> bool {
        !self.required || self.principal.is_some()
    }

    /// `User:<name>` once authenticated.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    pub fn handshake(
        &mut self,
        listener: &Listener,
        request: SaslHandshakeRequest,
    ) -> SaslHandshakeResponse {
        let offered: Vec<StrBytes> = listener
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect();
        let wanted = request.mechanism.as_str();
        let usable = self.required
            && self.principal.is_none()
            && listener.mechanisms.iter().any(|m| m == wanted);
        let chosen = match wanted {
            "PLAIN" => Some(Chosen::Plain),
            other => Mechanism::parse(other).map(|m| Chosen::Scram(ScramServer::new(m))),
        };
        match (usable, chosen) {
            (true, Some(chosen)) => {
                self.chosen = Some(chosen);
                SaslHandshakeResponse::default().with_mechanisms(offered)
            }
            _ => {
                let code = if self.required && self.principal.is_some() {
                    ResponseError::IllegalSaslState
                } else {
                    ResponseError::UnsupportedSaslMechanism
                };
                SaslHandshakeResponse::default()
                    .with_error_code(code.code())
                    .with_mechanisms(if self.required { offered } else { Vec::new() })
            }
        }
    }

    pub fn authenticate(&mut self, users: &Users, request: SaslAuthenticateRequest) -> Answer {
        let fail = |code: ResponseError, message: String| Answer {
            response: SaslAuthenticateResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(match code {
                    ResponseError::SaslAuthenticationFailed => {
                        "Authentication failed: invalid username or password".to_string()
                    }
                    _ => message.clone(),
                }))),
            failed: Some(message),
        };
        if self.principal.is_some() {
            return fail(
                ResponseError::IllegalSaslState,
                "already authenticated".into(),
            );
        }
        let token = request.auth_bytes;
        match self.chosen.as_mut() {
            None => fail(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate before SaslHandshake".into(),
            ),
            Some(Chosen::Plain) => {
                // authzid NUL authcid NUL password
                let mut parts = token.split(|b| *b == 0);
                let (Some(authzid), Some(user), Some(password), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return fail(
                        ResponseError::SaslAuthenticationFailed,
                        "malformed PLAIN token".into(),
                    );
                };
                let (Ok(authzid), Ok(user), Ok(password)) = (
                    std::str::from_utf8(authzid),
                    std::str::from_utf8(user),
                    std::str::from_utf8(password),
                ) else {
                    return fail(
                        ResponseError::SaslAuthenticationFailed,
                        "PLAIN token is not UTF-8".into(),
                    );
                };
                if !authzid.is_empty() && authzid != user {
                    return fail(
                        ResponseError::SaslAuthenticationFailed,
                        format!("user {user:?} may not act as {authzid:?}"),
                    );
                }
                if !users.verify_plain(user, password) {
                    return fail(
                        ResponseError::SaslAuthenticationFailed,
                        format!("invalid credentials for user {user:?} (PLAIN)"),
                    );
                }
                self.principal = Some(format!("User:{user}"));
                Answer {
                    response: SaslAuthenticateResponse::default(),
                    failed: None,
                }
            }
            Some(Chosen::Scram(server)) => {
                let mechanism = server.mechanism();
                let lookup = |user: &str| users.credential(user, mechanism);
                match server.step(&token, &lookup) {
                    Step::Continue(message) => Answer {
                        response: SaslAuthenticateResponse::default()
                            .with_auth_bytes(message.into()),
                        failed: None,
                    },
                    Step::Success { user, message } => {
                        self.principal = Some(format!("User:{user}"));
                        Answer {
                            response: SaslAuthenticateResponse::default()
                                .with_auth_bytes(message.into()),
                            failed: None,
                        }
                    }
                    Step::Failure(why) => fail(
                        ResponseError::SaslAuthenticationFailed,
                        format!("{why} ({})", mechanism.name()),
                    ),
                }
            }
        }
    }
}
