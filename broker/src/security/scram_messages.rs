//! Parsing of the two SCRAM client messages (RFC 5802 §7) and the `saslname` escaping, with
//! Kafka's restrictions: the gs2 header must be `n,` (no channel binding, `y` and `p=` are
//! refused as Kafka's `ClientFirstMessage` pattern refuses them), the proof comes last in
//! client-final, and every attribute is checked before a byte of it is trusted.
//!
//! ```text
//!  client-first  = gs2-header client-first-bare
//!  gs2-header    = "n," ["a=" saslname] ","
//!  client-first-bare = "n=" saslname ",r=" nonce ("," ext)*
//!  client-final  = "c=" base64 ",r=" nonce ("," ext)* ",p=" base64
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::scram::ScramError;

/// The client-first message, borrowed from the bytes the client sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ClientFirst<'a> {
    /// `n,,` or `n,a=...,`: the client-final's `c=` must be its base64.
    pub(super) gs2_header: &'a str,
    /// The part after the gs2 header; the start of the AuthMessage.
    pub(super) bare: &'a str,
    /// The authorization id, unescaped, when the client sent one.
    pub(super) authzid: Option<String>,
    /// The user name, unescaped (`=2C` → `,`, `=3D` → `=`).
    pub(super) username: String,
    pub(super) nonce: &'a str,
    /// The `tokenauth=true` extension (delegation tokens, which Sluice does not have).
    pub(super) token_auth: bool,
}

/// The client-final message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ClientFinal<'a> {
    /// The decoded `c=` attribute: the gs2 header again (no channel binding data).
    pub(super) channel_binding: Vec<u8>,
    pub(super) nonce: &'a str,
    /// Everything before `,p=`: the end of the AuthMessage.
    pub(super) without_proof: &'a str,
    pub(super) proof: Vec<u8>,
}

pub(super) fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, ScramError> {
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(ScramError::Malformed("client-first has no gs2 header"))?;
    match flag {
        "n" => {}
        "y" => return Err(ScramError::Unsupported("gs2 flag 'y' (channel binding)")),
        f if f.starts_with("p=") => return Err(ScramError::Unsupported("channel binding")),
        _ => return Err(ScramError::Malformed("client-first gs2 flag is not 'n'")),
    }
    let (authz, bare) = rest.split_once(',').ok_or(ScramError::Malformed(
        "client-first gs2 header is not closed",
    ))?;
    let authzid = if authz.is_empty() {
        None
    } else if let Some(a) = authz.strip_prefix("a=") {
        Some(unescape_saslname(a)?)
    } else {
        return Err(ScramError::Malformed("client-first authzid is not 'a='"));
    };
    let gs2_header = &msg[..msg.len() - bare.len()];

    let mut attrs = bare.split(',');
    let user = attrs.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(ScramError::Unsupported("mandatory extension 'm='"));
    }
    let username = unescape_saslname(
        user.strip_prefix("n=")
            .ok_or(ScramError::Malformed("client-first has no 'n=' username"))?,
    )?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("client-first has no 'r=' nonce"))?;
    check_nonce(nonce)?;
    let mut token_auth = false;
    for ext in attrs {
        let (key, value) = parse_extension(ext)?;
        if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
            token_auth = true;
        }
        // Other extensions are ignored, as Kafka's ScramSaslServer ignores them.
    }
    Ok(ClientFirst {
        gs2_header,
        bare,
        authzid,
        username,
        nonce,
        token_auth,
    })
}

pub(super) fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, ScramError> {
    let (without_proof, proof) = msg
        .rsplit_once(",p=")
        .ok_or(ScramError::Malformed("client-final has no 'p=' proof"))?;
    let proof = decode_base64(proof, "client-final proof is not base64")?;
    let mut attrs = without_proof.split(',');
    let channel_binding =
        attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed(
                "client-final has no 'c=' channel binding",
            ))?;
    let channel_binding = decode_base64(channel_binding, "client-final 'c=' is not base64")?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("client-final has no 'r=' nonce"))?;
    check_nonce(nonce)?;
    for ext in attrs {
        parse_extension(ext)?;
    }
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// `saslname` to user name: `=2C` is `,`, `=3D` is `=`, and any other `=` (or a raw `,`,
/// or NUL) is malformed, as Kafka's `ScramFormatter.username` and RFC 5802 §5.1 say.
pub(super) fn unescape_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::Malformed("empty saslname"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', ',', '\0']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = t;
        } else {
            return Err(ScramError::Malformed(
                "invalid character or escape in saslname",
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// User name to `saslname` (the client's side of [`unescape_saslname`]).
#[cfg(test)]
pub(super) fn escape_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E, at least one.
fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("nonce is empty or not printable"));
    }
    Ok(())
}

/// `key=value` with an alphabetic key and a non-empty value.
fn parse_extension(ext: &str) -> Result<(&str, &str), ScramError> {
    match ext.split_once('=') {
        Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()) => {
            if v.is_empty() {
                Err(ScramError::Malformed("empty extension value"))
            } else {
                Ok((k, v))
            }
        }
        _ => Err(ScramError::Malformed("invalid extension attribute")),
    }
}

fn decode_base64(s: &str, what: &'static str) -> Result<Vec<u8>, ScramError> {
    BASE64.decode(s).map_err(|_| ScramError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_plain_and_with_authzid() {
        let m = parse_client_first("n,,n=user,r=abc").unwrap();
        assert_eq!(m.gs2_header, "n,,");
        assert_eq!(m.bare, "n=user,r=abc");
        assert_eq!(m.username, "user");
        assert_eq!(m.authzid, None);
        assert_eq!(m.nonce, "abc");
        assert!(!m.token_auth);

        let m = parse_client_first("n,a=b=2Cc,n=b=2Cc,r=x,tokenauth=true").unwrap();
        assert_eq!(m.gs2_header, "n,a=b=2Cc,");
        assert_eq!(m.authzid.as_deref(), Some("b,c"));
        assert_eq!(m.username, "b,c");
        assert!(m.token_auth);
        // unknown extensions are ignored
        assert!(!parse_client_first("n,,n=u,r=x,foo=bar").unwrap().token_auth);
    }

    #[test]
    fn client_first_rejections() {
        use ScramError::{Malformed, Unsupported};
        let bad = [
            ("", true),
            ("n", true),
            ("n,", true),
            ("y,,n=u,r=x", false),
            ("p=tls-unique,,n=u,r=x", false),
            ("x,,n=u,r=x", true),
            ("n,b=u,n=u,r=x", true),
            ("n,,m=ext,n=u,r=x", false),
            ("n,,u,r=x", true),
            ("n,,n=,r=x", true),
            ("n,,n=a=2Db,r=x", true),
            ("n,,n=a\0b,r=x", true),
            ("n,,n=u", true),
            ("n,,n=u,r=", true),
            ("n,,n=u,r=a b", true),
            ("n,,n=u,r=x,=v", true),
            ("n,,n=u,r=x,k=", true),
            ("n,,n=u,r=x,,", true),
        ];
        for (msg, malformed) in bad {
            match parse_client_first(msg) {
                Err(Malformed(_)) if malformed => {}
                Err(Unsupported(_)) if !malformed => {}
                other => panic!("{msg:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn client_final_parses_and_rejects() {
        let m = parse_client_final("c=biws,r=abc,p=AAEC").unwrap();
        assert_eq!(m.channel_binding, b"n,,");
        assert_eq!(m.nonce, "abc");
        assert_eq!(m.without_proof, "c=biws,r=abc");
        assert_eq!(m.proof, [0, 1, 2]);
        assert!(parse_client_final("c=biws,r=abc,e=x,p=AAEC").is_ok());
        for bad in [
            "",
            "c=biws,r=abc",
            "c=biws,r=abc,p=!!",
            "r=abc,c=biws,p=AAEC",
            "c=@@,r=abc,p=AAEC",
            "c=biws,p=AAEC",
            "c=biws,r=,p=AAEC",
            "c=biws,r=abc,x,p=AAEC",
        ] {
            assert!(
                matches!(parse_client_final(bad), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn saslname_escaping_round_trips() {
        for name in ["alice", "a,b", "a=b", "=2C", ",=,", "ünï"] {
            assert_eq!(unescape_saslname(&escape_saslname(name)).unwrap(), name);
        }
        assert_eq!(unescape_saslname("=3D2C").unwrap(), "=2C");
        assert!(unescape_saslname("a=").is_err());
        assert!(unescape_saslname("a=2").is_err());
        assert!(unescape_saslname("a,b").is_err());
    }
}
