use super::*;
use crate::security::scram_messages::escape_saslname;

const MOCK: [u8; 32] = [7; 32];

fn b64(s: &str) -> Vec<u8> {
    BASE64.decode(s).unwrap()
}

fn lookup_one(
    user: &'static str,
    cred: ScramCredential,
) -> impl Fn(&str, ScramMechanism) -> Option<ScramCredential> {
    move |u: &str, _m| (u == user).then(|| cred.clone())
}

/// A minimal SCRAM client, the client side of RFC 5802 §3.
struct TestClient {
    mechanism: ScramMechanism,
    password: String,
    gs2_header: String,
    client_first_bare: String,
    auth_message: String,
    salted: Vec<u8>,
}

impl TestClient {
    fn new(mechanism: ScramMechanism, user: &str, password: &str, authzid: Option<&str>) -> Self {
        let gs2_header = match authzid {
            Some(a) => format!("n,a={},", escape_saslname(a)),
            None => "n,,".to_string(),
        };
        TestClient {
            mechanism,
            password: password.to_string(),
            gs2_header,
            client_first_bare: format!("n={},r=fyko+d2lbbFgONRv9qkxdawL", escape_saslname(user)),
            auth_message: String::new(),
            salted: Vec::new(),
        }
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    fn last(&mut self, server_first: &[u8]) -> Vec<u8> {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attr in sf.split(',') {
            match attr.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = b64(v),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => panic!("{attr}"),
            }
        }
        assert!(nonce.starts_with("fyko+d2lbbFgONRv9qkxdawL"));
        let m = self.mechanism;
        self.salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
        self.auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let client_key = m.hmac(&self.salted, b"Client Key");
        let signature = m.hmac(&m.hash(&client_key), self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes()
    }

    fn expected_server_final(&self) -> Vec<u8> {
        let m = self.mechanism;
        let server_key = m.hmac(&self.salted, b"Server Key");
        let v = m.hmac(&server_key, self.auth_message.as_bytes());
        format!("v={}", BASE64.encode(v)).into_bytes()
    }
}

fn challenge(step: Result<ScramStep, ScramError>) -> Vec<u8> {
    match step {
        Ok(ScramStep::Challenge(c)) => c,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[test]
fn rfc7677_sha256_test_vector() {
    let cred = ScramCredential::new(
        ScramMechanism::Sha256,
        "pencil",
        &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
        4096,
    );
    let lookup = lookup_one("user", cred);
    let mut server = ScramServer::new(ScramMechanism::Sha256, ScramMockSecret::from_bytes(MOCK))
        .with_server_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    let sf = challenge(server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &lookup));
    assert_eq!(
        sf,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let done = server.step(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
          p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        &lookup,
    );
    assert_eq!(
        done,
        Ok(ScramStep::Complete {
            server_final: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            username: "user".to_string(),
        })
    );
    assert_eq!(
        server.step(b"n,,n=user,r=x", &lookup),
        Err(ScramError::IllegalState)
    );
}

fn run(
    mechanism: ScramMechanism,
    stored: Option<ScramCredential>,
    user: &str,
    password: &str,
    authzid: Option<&str>,
) -> (Result<ScramStep, ScramError>, TestClient) {
    let lookup = move |_: &str, _m| stored.clone();
    let mut server = ScramServer::new(mechanism, ScramMockSecret::from_bytes(MOCK));
    let mut client = TestClient::new(mechanism, user, password, authzid);
    let sf = match server.step(&client.first(), &lookup) {
        Ok(ScramStep::Challenge(c)) => c,
        other => return (other, client),
    };
    let last = client.last(&sf);
    (server.step(&last, &lookup), client)
}

#[test]
fn sha512_round_trip_with_escaped_name_and_authzid() {
    let m = ScramMechanism::Sha512;
    let cred = ScramCredential::with_random_salt(m, "s3cr=t,", 8192);
    let (res, client) = run(m, Some(cred), "a,b=c", "s3cr=t,", Some("a,b=c"));
    assert_eq!(
        res,
        Ok(ScramStep::Complete {
            server_final: client.expected_server_final(),
            username: "a,b=c".to_string(),
        })
    );
}

#[test]
fn wrong_password_and_unknown_user_fail_alike_at_client_final() {
    let m = ScramMechanism::Sha256;
    let cred = ScramCredential::new(m, "right", b"salt", 4096);
    let (bad, _) = run(m, Some(cred), "alice", "wrong", None);
    let (unknown, _) = run(m, None, "mallory", "anything", None);
    assert_eq!(bad, Err(ScramError::Failed("invalid client proof")));
    assert_eq!(unknown, Err(ScramError::Failed("unknown user")));
    let (b, u) = (bad.unwrap_err(), unknown.unwrap_err());
    assert_eq!(b.client_message(m), u.client_message(m));
    assert!(!u.client_message(m).contains("user"));
}

#[test]
fn unknown_user_gets_a_stable_plausible_salt() {
    let m = ScramMechanism::Sha512;
    let first = |mock: [u8; 32]| {
        let mut s = ScramServer::new(m, ScramMockSecret::from_bytes(mock)).with_server_nonce("S");
        let lookup = |_: &str, _m| None;
        String::from_utf8(challenge(s.step(b"n,,n=ghost,r=C", &lookup))).unwrap()
    };
    let a = first(MOCK);
    assert_eq!(a, first(MOCK));
    assert_ne!(a, first([8; 32]));
    assert!(a.starts_with("r=CS,s=") && a.ends_with(",i=4096"), "{a}");
    let salt = b64(a.split(',').nth(1).unwrap().trim_start_matches("s="));
    assert_eq!(salt.len(), 26);
    assert!(salt.iter().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn too_few_iterations_is_treated_as_unknown() {
    let m = ScramMechanism::Sha256;
    let cred = ScramCredential::new(m, "pw", b"salt", 1000);
    assert_eq!(
        run(m, Some(cred), "u", "pw", None).0,
        Err(ScramError::Failed("unknown user"))
    );
}

#[test]
fn authzid_must_equal_username() {
    let m = ScramMechanism::Sha256;
    let cred = ScramCredential::new(m, "pw", b"salt", 4096);
    let (res, _) = run(m, Some(cred), "alice", "pw", Some("admin"));
    assert_eq!(res, Err(ScramError::AuthzidMismatch));
    assert!(ScramError::AuthzidMismatch
        .client_message(m)
        .contains("authorization id"));
}

/// Runs client-first, then sends `last` (built from the real client-final by `edit`).
fn tamper(edit: impl Fn(String) -> String) -> Result<ScramStep, ScramError> {
    let m = ScramMechanism::Sha256;
    let lookup = lookup_one("u", ScramCredential::new(m, "pw", b"salt", 4096));
    let mut server = ScramServer::new(m, ScramMockSecret::from_bytes(MOCK));
    let mut client = TestClient::new(m, "u", "pw", None);
    let sf = challenge(server.step(&client.first(), &lookup));
    let last = String::from_utf8(client.last(&sf)).unwrap();
    let res = server.step(edit(last).as_bytes(), &lookup);
    assert_eq!(
        server.step(b"c=biws,r=x,p=AA==", &lookup),
        Err(ScramError::IllegalState)
    );
    res
}

#[test]
fn tampered_client_final_fails() {
    assert!(matches!(tamper(|l| l), Ok(ScramStep::Complete { .. })));
    // nonce changed
    let r = tamper(|l| l.replacen(",r=fyko", ",r=Fyko", 1));
    assert_eq!(
        r,
        Err(ScramError::Failed(
            "client-final nonce differs from the server's"
        ))
    );
    // a proof bit flipped
    let r = tamper(|l| {
        let (head, proof) = l.rsplit_once(",p=").unwrap();
        let mut p = b64(proof);
        p[0] ^= 1;
        format!("{head},p={}", BASE64.encode(p))
    });
    assert_eq!(r, Err(ScramError::Failed("invalid client proof")));
    // truncated proof
    let r = tamper(|l| format!("{},p=AAAA", l.rsplit_once(",p=").unwrap().0));
    assert_eq!(
        r,
        Err(ScramError::Failed("client proof has the wrong length"))
    );
    // channel binding that is not the gs2 header
    let r = tamper(|l| l.replacen("c=biws", "c=eSws", 1));
    assert_eq!(
        r,
        Err(ScramError::Failed(
            "channel binding does not repeat the gs2 header"
        ))
    );
    // garbage
    assert!(matches!(
        tamper(|_| "hello".into()),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn malformed_or_unsupported_client_first_ends_the_exchange() {
    let lookup = |_: &str, _m| None;
    for (msg, want) in [
        (&b"\xff\xfe"[..], ScramError::Malformed("not UTF-8")),
        (
            b"p=tls-unique,,n=u,r=x",
            ScramError::Unsupported("channel binding"),
        ),
        (
            b"y,,n=u,r=x",
            ScramError::Unsupported("gs2 flag 'y' (channel binding)"),
        ),
        (
            b"n,,n=u,r=x,tokenauth=true",
            ScramError::Unsupported("delegation token authentication"),
        ),
    ] {
        let mut s = ScramServer::new(ScramMechanism::Sha512, ScramMockSecret::random());
        assert_eq!(s.step(msg, &lookup), Err(want));
        assert_eq!(
            s.step(b"n,,n=u,r=x", &lookup),
            Err(ScramError::IllegalState)
        );
    }
}

#[test]
fn server_nonce_is_fresh_each_exchange() {
    let lookup = |_: &str, _m| None;
    let nonce = || {
        let mut s = ScramServer::new(ScramMechanism::Sha256, ScramMockSecret::from_bytes(MOCK));
        let sf = String::from_utf8(challenge(s.step(b"n,,n=u,r=c", &lookup))).unwrap();
        sf.split(',').next().unwrap().to_string()
    };
    let (a, b) = (nonce(), nonce());
    assert_ne!(a, b);
    assert_eq!(a.len(), "r=c".len() + 32);
}

#[test]
fn mechanism_names_codes_and_iteration_bounds() {
    for m in ScramMechanism::ALL {
        assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
        assert_eq!(ScramMechanism::from_type_code(m.type_code()), Some(m));
        assert_eq!(m.salted_password(b"p", b"s", 4096).len(), m.hash_len());
    }
    assert_eq!(ScramMechanism::Sha256.type_code(), 1);
    assert_eq!(ScramMechanism::Sha512.type_code(), 2);
    assert_eq!(ScramMechanism::from_type_code(0), None);
    assert_eq!(ScramMechanism::from_name("SCRAM-SHA-1"), None);
    let m = ScramMechanism::Sha256;
    assert_eq!(m.validate_iterations(4095), Err("Too few iterations"));
    assert_eq!(m.validate_iterations(4096), Ok(()));
    assert_eq!(m.validate_iterations(16384), Ok(()));
    assert_eq!(m.validate_iterations(16385), Err("Too many iterations"));
}

#[test]
fn credential_from_salted_password_matches_password_derivation() {
    for m in ScramMechanism::ALL {
        let salted = m.salted_password(b"pw", b"salt", 4096);
        let a = ScramCredential::from_salted_password(m, b"salt", &salted, 4096);
        assert_eq!(a, ScramCredential::new(m, "pw", b"salt", 4096));
        assert!(a.verify_password(m, "pw"));
        assert!(!a.verify_password(m, "pW"));
        assert!(!format!("{a:?}").contains("stored_key"));
    }
}
