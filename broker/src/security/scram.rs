//! SCRAM-SHA-256 and SCRAM-SHA-512, server side (RFC 5802, RFC 7677), as Kafka's
//! `ScramSaslServer` and `ScramFormatter` compute them (no SASLprep: the password's UTF-8
//! bytes go into Hi, as Kafka does). One [`ScramServer`] per connection's SASL exchange,
//! fed each SaslAuthenticate `auth_bytes`; no I/O, no clock.
//!
//! ```text
//!  client-first ──▶ step ──▶ Challenge(server-first: r=cnonce+snonce,s=salt,i=n)
//!  client-final ──▶ step ──▶ Complete { server-final: v=ServerSignature, username }
//! ```
//!
//! Unlike Kafka, which fails an unknown user at client-first, an unknown user here runs the
//! whole exchange against a fake credential derived from [`ScramMockSecret`] (stable salt
//! per user name) and fails at client-final exactly as a wrong password does (RFC 5802 §9).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::{distr::Alphanumeric, Rng};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::scram_messages::{parse_client_final, parse_client_first};

/// A SCRAM mechanism, with Kafka's names and admin-API type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// Kafka's minimum (`ScramMechanism.minIterations`), also enforced at login.
    pub(crate) const MIN_ITERATIONS: u32 = 4096;
    /// Kafka's maximum for AlterUserScramCredentials.
    pub(crate) const MAX_ITERATIONS: u32 = 16384;
    pub(crate) const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name, "SCRAM-SHA-256" or "SCRAM-SHA-512".
    pub(crate) fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The `Mechanism` code of Describe/AlterUserScramCredentials (0 is UNKNOWN).
    pub(crate) fn type_code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub(crate) fn from_type_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.type_code() == code)
    }

    /// Length of the hash, hence of StoredKey, ServerKey, the proof and the salted password.
    pub(crate) fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    /// AlterUserScramCredentials' iteration check; the message is Kafka's, sent with
    /// UNACCEPTABLE_CREDENTIAL.
    pub(crate) fn validate_iterations(self, iterations: i32) -> Result<(), &'static str> {
        if iterations < Self::MIN_ITERATIONS as i32 {
            Err("Too few iterations")
        } else if iterations > Self::MAX_ITERATIONS as i32 {
            Err("Too many iterations")
        } else {
            Ok(())
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with HMAC of this hash.
    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.hash_len()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }

    pub(super) fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    pub(super) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        const ANY_KEY: &str = "HMAC accepts keys of any length";
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect(ANY_KEY);
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect(ANY_KEY);
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// What the broker stores per (user, mechanism): never the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ScramCredential {
    pub(crate) salt: Vec<u8>,
    /// H(ClientKey), ClientKey = HMAC(SaltedPassword, "Client Key").
    pub(crate) stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub(crate) server_key: Vec<u8>,
    pub(crate) iterations: u32,
}

impl ScramCredential {
    /// From a password (as `kafka-configs --add-config 'SCRAM-SHA-256=[password=...]'`).
    pub(crate) fn new(
        mechanism: ScramMechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        Self::from_salted_password(mechanism, salt, &salted, iterations)
    }

    /// From the salted password that AlterUserScramCredentials carries.
    pub(crate) fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// With a fresh random salt shaped like the ones Kafka's tools make (base-36 text).
    pub(crate) fn with_random_salt(
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Self {
        let salt: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(26)
            .map(char::from)
            .collect();
        Self::new(
            mechanism,
            password,
            salt.to_ascii_lowercase().as_bytes(),
            iterations,
        )
    }

    /// Does `password` derive this credential's StoredKey? Constant time in the comparison.
    pub(crate) fn verify_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        let candidate = Self::new(mechanism, password, &self.salt, self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Where the server finds a user's credential. The broker implements it over its metadata
/// image; closures work too.
pub(crate) trait ScramCredentialLookup {
    fn scram_credential(
        &self,
        username: &str,
        mechanism: ScramMechanism,
    ) -> Option<ScramCredential>;
}

impl<F> ScramCredentialLookup for F
where
    F: Fn(&str, ScramMechanism) -> Option<ScramCredential>,
{
    fn scram_credential(
        &self,
        username: &str,
        mechanism: ScramMechanism,
    ) -> Option<ScramCredential> {
        self(username, mechanism)
    }
}

/// The broker's key for fake credentials of unknown users: the same user name always gets
/// the same fake salt, so probing cannot tell a real user from an absent one. Make one per
/// broker process (random) and give every shard a copy, so that all shards answer alike.
#[derive(Clone, Copy)]
pub(crate) struct ScramMockSecret([u8; 32]);

impl ScramMockSecret {
    pub(crate) fn random() -> Self {
        ScramMockSecret(rand::rng().random())
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        ScramMockSecret(bytes)
    }

    /// A credential nobody can log in with (its keys are derived from the secret, not a
    /// password), with a salt shaped like a real one. Also used by SASL/PLAIN.
    pub(super) fn fake_credential(
        &self,
        mechanism: ScramMechanism,
        username: &str,
    ) -> ScramCredential {
        let label = |what: &str| [mechanism.name(), what, username].join("\0");
        let seed = ScramMechanism::Sha256.hmac(&self.0, label("salt").as_bytes());
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let salt = seed
            .iter()
            .take(26)
            .map(|b| DIGITS[usize::from(*b) % DIGITS.len()])
            .collect();
        ScramCredential {
            salt,
            stored_key: mechanism.hmac(&self.0, label("stored").as_bytes()),
            server_key: mechanism.hmac(&self.0, label("server").as_bytes()),
            iterations: ScramMechanism::MIN_ITERATIONS,
        }
    }
}

impl std::fmt::Debug for ScramMockSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramMockSecret(..)")
    }
}

/// Why an exchange failed. `Display` is the detailed reason, for the broker's log only (it
/// says whether the user exists); [`ScramError::client_message`] is what the client is told.
/// Every variant maps to SASL_AUTHENTICATION_FAILED except `IllegalState`
/// (ILLEGAL_SASL_STATE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    #[error("client requested an authorization id that is different from username")]
    AuthzidMismatch,
    #[error("authentication failed: {0}")]
    Failed(&'static str),
    #[error("SCRAM message received after the exchange ended")]
    IllegalState,
}

impl ScramError {
    /// The SaslAuthenticate `error_message`, Kafka's words; never reveals whether the user
    /// exists.
    pub(crate) fn client_message(&self, mechanism: ScramMechanism) -> String {
        match self {
            ScramError::AuthzidMismatch => "Authentication failed: Client requested an \
                authorization id that is different from username"
                .to_string(),
            ScramError::IllegalState => {
                format!(
                    "Unexpected SASL/{} message after the exchange ended",
                    mechanism.name()
                )
            }
            _ => format!(
                "Authentication failed during authentication due to invalid credentials \
                 with SASL mechanism {}",
                mechanism.name()
            ),
        }
    }
}

/// What one step of the exchange produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScramStep {
    /// The server-first message, to send as SaslAuthenticate `auth_bytes`.
    Challenge(Vec<u8>),
    /// Authenticated: send `server_final` and take `username` as principal `User:<username>`.
    Complete {
        server_final: Vec<u8>,
        username: String,
    },
}

/// The server side of one SCRAM exchange. Owned by the connection doing the SASL handshake;
/// never crosses cores.
pub(crate) struct ScramServer {
    mechanism: ScramMechanism,
    mock: ScramMockSecret,
    state: State,
    #[cfg(test)]
    fixed_nonce: Option<String>,
}

enum State {
    ClientFirst,
    ClientFinal(Box<Pending>),
    Ended,
}

/// What client-first left for client-final to check.
struct Pending {
    username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
    /// False when `credential` is a fake one: the exchange must then fail.
    known_user: bool,
}

impl ScramServer {
    pub(crate) fn new(mechanism: ScramMechanism, mock: ScramMockSecret) -> Self {
        ScramServer {
            mechanism,
            mock,
            state: State::ClientFirst,
            #[cfg(test)]
            fixed_nonce: None,
        }
    }

    pub(crate) fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Feeds the next client message. After an error or `Complete`, every further call is
    /// `IllegalState`.
    pub(crate) fn step<L>(&mut self, auth_bytes: &[u8], lookup: &L) -> Result<ScramStep, ScramError>
    where
        L: ScramCredentialLookup + ?Sized,
    {
        let state = std::mem::replace(&mut self.state, State::Ended);
        let msg = std::str::from_utf8(auth_bytes).map_err(|_| ScramError::Malformed("not UTF-8"));
        match state {
            State::ClientFirst => {
                let pending = self.client_first(msg?, lookup)?;
                let server_first = pending.server_first.clone().into_bytes();
                self.state = State::ClientFinal(pending);
                Ok(ScramStep::Challenge(server_first))
            }
            State::ClientFinal(pending) => self.client_final(msg?, *pending),
            State::Ended => Err(ScramError::IllegalState),
        }
    }

    fn client_first<L>(&self, msg: &str, lookup: &L) -> Result<Box<Pending>, ScramError>
    where
        L: ScramCredentialLookup + ?Sized,
    {
        let first = parse_client_first(msg)?;
        if first.token_auth {
            return Err(ScramError::Unsupported("delegation token authentication"));
        }
        if first.authzid.as_ref().is_some_and(|a| *a != first.username) {
            return Err(ScramError::AuthzidMismatch);
        }
        let (credential, known_user) =
            match lookup.scram_credential(&first.username, self.mechanism) {
                Some(c) if c.iterations >= ScramMechanism::MIN_ITERATIONS => (c, true),
                _ => (
                    self.mock.fake_credential(self.mechanism, &first.username),
                    false,
                ),
            };
        let nonce = format!("{}{}", first.nonce, self.server_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        Ok(Box::new(Pending {
            username: first.username,
            gs2_header: first.gs2_header.to_string(),
            client_first_bare: first.bare.to_string(),
            server_first,
            nonce,
            credential,
            known_user,
        }))
    }

    fn client_final(&self, msg: &str, p: Pending) -> Result<ScramStep, ScramError> {
        let last = parse_client_final(msg)?;
        if last.channel_binding != p.gs2_header.as_bytes() {
            return Err(ScramError::Failed(
                "channel binding does not repeat the gs2 header",
            ));
        }
        // librdkafka 2.0.0-2.0.2 (Debian 12's kcat) sends its own nonce again in front of
        // the combined one; that exact shape is accepted (Kafka accepted any prefix until it
        // moved to equality), anything else is refused. The proof covers what was sent.
        let client_nonce = p
            .client_first_bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="));
        let librdkafka_2_0 =
            client_nonce.is_some_and(|c| last.nonce.strip_prefix(c) == Some(p.nonce.as_str()));
        if last.nonce != p.nonce && !librdkafka_2_0 {
            return Err(ScramError::Failed(
                "client-final nonce differs from the server's",
            ));
        }
        let m = self.mechanism;
        if last.proof.len() != m.hash_len() {
            return Err(ScramError::Failed("client proof has the wrong length"));
        }
        let auth_message = [
            p.client_first_bare.as_str(),
            &p.server_first,
            last.without_proof,
        ]
        .join(",");
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); check H(ClientKey).
        let signature = m.hmac(&p.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let proof_ok = bool::from(m.hash(&client_key).ct_eq(&p.credential.stored_key));
        if !proof_ok || !p.known_user {
            return Err(ScramError::Failed(if p.known_user {
                "invalid client proof"
            } else {
                "unknown user"
            }));
        }
        let server_signature = m.hmac(&p.credential.server_key, auth_message.as_bytes());
        Ok(ScramStep::Complete {
            server_final: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            username: p.username,
        })
    }

    fn server_nonce(&self) -> String {
        #[cfg(test)]
        if let Some(n) = &self.fixed_nonce {
            return n.clone();
        }
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    }

    #[cfg(test)]
    fn with_server_nonce(mut self, nonce: &str) -> Self {
        self.fixed_nonce = Some(nonce.to_string());
        self
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
