//! SASL/PLAIN (RFC 4616) as Kafka's `PlainSaslServer` parses it (`authzid \0 authcid \0
//! passwd`, exactly three tokens, Kafka's error messages), but checked against the broker's
//! SCRAM credentials instead of a JAAS file: the password is run through Hi with the stored
//! salt and iterations and its StoredKey compared in constant time, SCRAM-SHA-512 first,
//! then SCRAM-SHA-256. An unknown user still costs one Hi, so timing does not tell.
//!
//! ```text
//!  auth_bytes ─▶ parse_plain ─▶ (authzid, user, password) ─▶ verify vs ScramCredential ─▶ user
//! ```

use super::scram::{ScramCredentialLookup, ScramMechanism, ScramMockSecret};

/// The three tokens of a PLAIN message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PlainMessage {
    pub(crate) authzid: String,
    pub(crate) username: String,
    pub(crate) password: String,
}

/// A PLAIN failure. `Display` is Kafka's message, which Kafka sends to the client as the
/// SaslAuthenticate `error_message` (SASL_AUTHENTICATION_FAILED); none of them says whether
/// the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlainError {
    #[error("Invalid SASL/PLAIN response: expected 3 tokens, got {0}")]
    Tokens(usize),
    #[error("Authentication failed: username not specified")]
    NoUsername,
    #[error("Authentication failed: password not specified")]
    NoPassword,
    #[error("Authentication failed: Invalid username or password")]
    InvalidCredentials,
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthzidMismatch,
}

/// Splits `authzid \0 authcid \0 passwd`. Invalid UTF-8 is replaced, as Java's `new String`
/// does; a fourth NUL-separated token is an error, as in Kafka.
pub(crate) fn parse_plain(auth_bytes: &[u8]) -> Result<PlainMessage, PlainError> {
    let text = String::from_utf8_lossy(auth_bytes);
    // Kafka counts at most four tokens before giving up.
    let tokens: Vec<&str> = text.splitn(4, '\0').collect();
    let [authzid, username, password] = tokens.as_slice() else {
        return Err(PlainError::Tokens(tokens.len()));
    };
    if username.is_empty() {
        return Err(PlainError::NoUsername);
    }
    if password.is_empty() {
        return Err(PlainError::NoPassword);
    }
    Ok(PlainMessage {
        authzid: authzid.to_string(),
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// The whole PLAIN exchange (one message, empty answer on success): the authenticated user
/// name, to take as principal `User:<name>`.
pub(crate) fn authenticate_plain<L>(
    auth_bytes: &[u8],
    lookup: &L,
    mock: &ScramMockSecret,
) -> Result<String, PlainError>
where
    L: ScramCredentialLookup + ?Sized,
{
    let msg = parse_plain(auth_bytes)?;
    let mut known = false;
    let mut verified = false;
    for mechanism in [ScramMechanism::Sha512, ScramMechanism::Sha256] {
        if let Some(cred) = lookup.scram_credential(&msg.username, mechanism) {
            known = true;
            verified |= cred.verify_password(mechanism, &msg.password);
        }
    }
    if !known {
        // Same work as one real check, against a credential nobody has.
        let fake = mock.fake_credential(ScramMechanism::Sha512, &msg.username);
        let _ = fake.verify_password(ScramMechanism::Sha512, &msg.password);
    }
    if !verified {
        return Err(PlainError::InvalidCredentials);
    }
    if !msg.authzid.is_empty() && msg.authzid != msg.username {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok(msg.username)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::ScramCredential;

    fn store(
        sha512: Option<&'static str>,
        sha256: Option<&'static str>,
    ) -> impl Fn(&str, ScramMechanism) -> Option<ScramCredential> {
        move |user: &str, m: ScramMechanism| {
            if user != "alice" {
                return None;
            }
            let pw = match m {
                ScramMechanism::Sha512 => sha512?,
                ScramMechanism::Sha256 => sha256?,
            };
            Some(ScramCredential::new(m, pw, b"NaCl", 4096))
        }
    }

    fn auth(bytes: &[u8], lookup: &impl ScramCredentialLookup) -> Result<String, PlainError> {
        authenticate_plain(bytes, lookup, &ScramMockSecret::from_bytes([1; 32]))
    }

    #[test]
    fn parses_three_tokens() {
        let m = parse_plain(b"\0alice\0pw").unwrap();
        assert_eq!(
            (m.authzid.as_str(), m.username.as_str(), m.password.as_str()),
            ("", "alice", "pw")
        );
        assert_eq!(parse_plain(b"alice\0pw"), Err(PlainError::Tokens(2)));
        assert_eq!(parse_plain(b"a\0b\0c\0d\0e"), Err(PlainError::Tokens(4)));
        assert_eq!(parse_plain(b"\0\0pw"), Err(PlainError::NoUsername));
        assert_eq!(parse_plain(b"\0alice\0"), Err(PlainError::NoPassword));
        assert_eq!(
            parse_plain(b"").unwrap_err().to_string(),
            "Invalid SASL/PLAIN response: expected 3 tokens, got 1"
        );
    }

    #[test]
    fn verifies_against_either_scram_credential() {
        let both = store(Some("p512"), Some("p256"));
        assert_eq!(auth(b"\0alice\0p512", &both), Ok("alice".to_string()));
        assert_eq!(auth(b"\0alice\0p256", &both), Ok("alice".to_string()));
        assert_eq!(
            auth(b"\0alice\0nope", &both),
            Err(PlainError::InvalidCredentials)
        );
        let only256 = store(None, Some("p256"));
        assert_eq!(
            auth(b"alice\0alice\0p256", &only256),
            Ok("alice".to_string())
        );
        assert_eq!(
            auth(b"\0alice\0p512", &only256),
            Err(PlainError::InvalidCredentials)
        );
    }

    #[test]
    fn unknown_user_and_wrong_password_look_the_same() {
        let s = store(Some("pw"), None);
        let unknown = auth(b"\0bob\0pw", &s).unwrap_err();
        let wrong = auth(b"\0alice\0bad", &s).unwrap_err();
        assert_eq!(unknown, wrong);
        assert_eq!(
            unknown.to_string(),
            "Authentication failed: Invalid username or password"
        );
    }

    #[test]
    fn authzid_must_match_after_the_password_is_checked() {
        let s = store(Some("pw"), None);
        assert_eq!(
            auth(b"admin\0alice\0pw", &s),
            Err(PlainError::AuthzidMismatch)
        );
        // a wrong password is reported first, as in Kafka
        assert_eq!(
            auth(b"admin\0alice\0no", &s),
            Err(PlainError::InvalidCredentials)
        );
    }
}
