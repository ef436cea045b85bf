//! SaslHandshake (v0–1) and SaslAuthenticate (v0–2, KIP-152) on SASL_PLAINTEXT and SASL_SSL
//! listeners: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 against the salted credentials of the
//! metadata image, re-authentication (KIP-368) within `connections.max.reauth.ms`. Each
//! step runs before the next frame is read (the reader dispatches in order), so the
//! connection's state is settled when its next request arrives. A failed login is
//! answered SASL_AUTHENTICATION_FAILED after `connection.failed.authentication.delay.ms`
//! and the connection is then closed; until a connection has authenticated, anything but
//! ApiVersions, SaslHandshake and SaslAuthenticate closes it (as Kafka does). After a v0
//! handshake the tokens come as bare size-prefixed frames (Kafka's pre-KIP-152 form) and
//! are answered the same way; a failure then closes the connection without an answer.
//!
//! ```text
//!  AwaitHandshake ─SaslHandshake(mech)─► Mechanism ─SaslAuthenticate…─► Authenticated
//!        ▲                                  │ failure: answer after a delay, close
//!        └──── SaslHandshake (re-auth, same mechanism and principal) ◄──┘
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::connection::Conn;
use crate::security::plain::authenticate_plain;
use crate::security::scram::{
    ScramCredential, ScramMechanism, ScramMockSecret, ScramServer, ScramStep,
};
use crate::shard::ShardCtx;

/// The mechanisms Sluice implements (`sasl.enabled.mechanisms` must be among them).
pub(crate) const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Where a connection is in SASL authentication. Owned by its connection's shard.
pub(crate) enum SaslState {
    /// Not a SASL listener, or authenticated; `expires` ends the session
    /// (`connections.max.reauth.ms`) unless the client re-authenticates first.
    Ready { expires: Option<Instant> },
    /// A SASL listener's connection before (or, `reauth`, during) authentication.
    AwaitHandshake { reauth: Option<Reauth> },
    /// The mechanism was chosen; SaslAuthenticate rounds follow.
    Plain { reauth: Option<Reauth> },
    Scram {
        server: Box<ScramServer>,
        reauth: Option<Reauth>,
    },
    /// A login failed: the connection closes after its answer.
    Failed,
}

/// What a re-authentication must keep: the mechanism and the principal.
#[derive(Clone)]
pub(crate) struct Reauth {
    mechanism: String,
    principal: Rc<str>,
}

impl SaslState {
    /// The state of a new connection on a listener with (or without) SASL.
    pub(crate) fn initial(sasl: bool) -> Self {
        if sasl {
            Self::AwaitHandshake { reauth: None }
        } else {
            Self::Ready { expires: None }
        }
    }

    /// Whether the authenticated session has passed its lifetime: Kafka closes such a
    /// connection at its next request, whatever the request (a SaslHandshake that would
    /// start a re-authentication too), so a client must re-authenticate before.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        matches!(self, Self::Ready { expires: Some(t) } if now >= *t)
    }

    /// Whether a request other than ApiVersions and the SASL ones may be served now; else
    /// the reason to close.
    pub(crate) fn check_request(&self, now: Instant) -> Result<(), &'static str> {
        match self {
            _ if self.expired(now) => Err(SESSION_EXPIRED),
            Self::Ready { .. } => Ok(()),
            Self::Failed => Err("SASL authentication failed"),
            _ => Err(
                "a request other than SaslHandshake or SaslAuthenticate during SASL authentication",
            ),
        }
    }
}

/// Why a connection whose session expired is closed.
pub(crate) const SESSION_EXPIRED: &str =
    "the SASL session expired (connections.max.reauth.ms) without re-authentication";

/// One process-wide secret for the fake credentials of unknown users, so an unknown user
/// looks the same on every shard and connection (a real user's salt is stable too).
fn mock_secret() -> ScramMockSecret {
    static MOCK: OnceLock<ScramMockSecret> = OnceLock::new();
    *MOCK.get_or_init(ScramMockSecret::random)
}

/// The credential of `user` for `mechanism` in the shard's metadata image.
fn lookup(ctx: &ShardCtx) -> impl Fn(&str, ScramMechanism) -> Option<ScramCredential> + '_ {
    move |user: &str, mechanism: ScramMechanism| {
        let image = ctx.image.borrow();
        let c = image.scram(user, i32::from(mechanism.type_code()))?;
        Some(ScramCredential {
            salt: c.salt.clone(),
            stored_key: c.stored_key.clone(),
            server_key: c.server_key.clone(),
            iterations: u32::try_from(c.iterations).ok()?,
        })
    }
}

fn enabled_mechanisms(ctx: &ShardCtx) -> Vec<String> {
    ctx.config
        .str_value("sasl.enabled.mechanisms")
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

/// SaslHandshake: picks the mechanism (or starts a re-authentication).
pub(crate) fn handshake(
    ctx: &ShardCtx,
    conn: &Conn,
    req: SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    let enabled = enabled_mechanisms(ctx);
    let resp = SaslHandshakeResponse::default().with_mechanisms(
        enabled
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect(),
    );
    let mechanism = req.mechanism.to_string().to_ascii_uppercase();
    let mut state = conn.sasl.borrow_mut();
    let reauth = match &*state {
        _ if !conn.listener.listener.protocol.sasl() => {
            return resp
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_mechanisms(Vec::new());
        }
        SaslState::AwaitHandshake { reauth } => reauth.clone(),
        SaslState::Ready { .. } => Some(Reauth {
            mechanism: conn.mechanism.borrow().clone(),
            principal: conn.principal(),
        }),
        _ => {
            *state = SaslState::Failed;
            return resp.with_error_code(ResponseError::IllegalSaslState.code());
        }
    };
    if !enabled.contains(&mechanism) {
        *state = SaslState::Failed;
        return resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
    }
    if reauth.as_ref().is_some_and(|r| r.mechanism != mechanism) {
        *state = SaslState::Failed;
        return resp.with_error_code(ResponseError::IllegalSaslState.code());
    }
    *state = match ScramMechanism::from_name(&mechanism) {
        Some(m) => SaslState::Scram {
            server: Box::new(ScramServer::new(m, mock_secret())),
            reauth,
        },
        None => SaslState::Plain { reauth },
    };
    *conn.mechanism.borrow_mut() = mechanism;
    conn.sasl_raw.set(version == 0);
    resp
}

/// A bare SASL token after a v0 handshake: the answer is a bare size-prefixed token too;
/// a failure closes the connection (v0 has no way to say why).
pub(crate) fn raw_token(
    ctx: &ShardCtx,
    conn: &Conn,
    token: Bytes,
) -> (Result<Vec<Bytes>, String>, Option<Duration>) {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(token);
    let (resp, delay) = authenticate(ctx, conn, req, 0);
    if resp.error_code != 0 {
        let why = resp
            .error_message
            .map_or_else(String::new, |m| m.to_string());
        return (Err(format!("SASL authentication failed: {why}")), delay);
    }
    if matches!(*conn.sasl.borrow(), SaslState::Ready { .. }) {
        conn.sasl_raw.set(false);
    }
    let mut out = bytes::BytesMut::with_capacity(4 + resp.auth_bytes.len());
    out.extend_from_slice(&(resp.auth_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&resp.auth_bytes);
    (Ok(vec![out.freeze()]), None)
}

/// SaslAuthenticate: one round of the chosen mechanism. The answer to a failed round is
/// delayed; the connection then closes (`SaslState::Failed`).
pub(crate) fn authenticate(
    ctx: &ShardCtx,
    conn: &Conn,
    req: SaslAuthenticateRequest,
    version: i16,
) -> (SaslAuthenticateResponse, Option<Duration>) {
    let mut state = conn.sasl.borrow_mut();
    let taken = std::mem::replace(&mut *state, SaslState::Failed);
    let lookup = lookup(ctx);
    let (user, reply, reauth) = match taken {
        SaslState::Plain { reauth } => {
            match authenticate_plain(&req.auth_bytes, &lookup, &mock_secret()) {
                Ok(user) => (user, Bytes::new(), reauth),
                Err(e) => {
                    tracing::info!(peer = %conn.peer, mechanism = "PLAIN", reason = %e, "SASL authentication failed");
                    drop(state);
                    return failed(ctx, format!("Authentication failed: {e}"));
                }
            }
        }
        SaslState::Scram { mut server, reauth } => match server.step(&req.auth_bytes, &lookup) {
            Ok(ScramStep::Challenge(bytes)) => {
                *state = SaslState::Scram { server, reauth };
                return (
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                    None,
                );
            }
            Ok(ScramStep::Complete {
                server_final,
                username,
            }) => (username, Bytes::from(server_final), reauth),
            Err(e) => {
                tracing::info!(peer = %conn.peer, mechanism = server.mechanism().name(), reason = %e, "SASL authentication failed");
                let m = e.client_message(server.mechanism());
                drop(state);
                return failed(ctx, m);
            }
        },
        other => {
            *state = other;
            let failed_now = !matches!(*state, SaslState::Ready { .. });
            if failed_now {
                *state = SaslState::Failed;
            }
            return (
                SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "SaslAuthenticate without a SaslHandshake first",
                    ))),
                None,
            );
        }
    };
    let principal: Rc<str> = Rc::from(format!("User:{user}"));
    if let Some(r) = reauth.filter(|r| r.principal != principal) {
        drop(state);
        return failed(
            ctx,
            format!(
                "Cannot change principals during re-authentication from {}: {principal}",
                r.principal
            ),
        );
    }
    let lifetime = ctx.config.int("connections.max.reauth.ms");
    *state = SaslState::Ready {
        expires: (lifetime > 0).then(|| Instant::now() + Duration::from_millis(lifetime as u64)),
    };
    conn.set_principal(principal);
    ctx.metrics.sasl_authenticated(true);
    let mut resp = SaslAuthenticateResponse::default().with_auth_bytes(reply);
    if version >= 1 {
        resp = resp.with_session_lifetime_ms(lifetime.max(0));
    }
    (resp, None)
}

fn failed(ctx: &ShardCtx, message: String) -> (SaslAuthenticateResponse, Option<Duration>) {
    ctx.metrics.sasl_authenticated(false);
    let delay =
        Duration::from_millis(ctx.config.int("connection.failed.authentication.delay.ms") as u64);
    (
        SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
            .with_error_message(Some(StrBytes::from_string(message))),
        Some(delay),
    )
}

/// The state a connection starts in.
pub(crate) fn new_state(sasl: bool) -> RefCell<SaslState> {
    RefCell::new(SaslState::initial(sasl))
}
