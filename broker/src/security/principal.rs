//! `KafkaPrincipal` ("User:alice") and the name Kafka gives an mTLS client: with
//! `ssl.principal.mapping.rules=DEFAULT` that is `X500Principal.getName()`, the RFC 2253 form
//! of the certificate subject — RDNs in reverse DER order, keywords only for CN, C, L, ST,
//! O, OU, STREET, DC and UID (other attributes as `OID=#hex-of-DER`), Java's escaping.
//!
//! ```text
//!  certificate DER ─▶ subject Name DER ─▶ [[DnAttribute]] ─▶ "CN=alice,OU=eng,O=acme"
//! ```
//!
//! The DER reading here is a small strict TLV walker over the certificate and its subject
//! only (definite lengths, bounds checked); it does not validate the certificate.

use std::fmt;
use std::str::FromStr;

/// A principal as Kafka prints it, `type:name`. ACLs and `super.users` compare these.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct KafkaPrincipal {
    pub(crate) principal_type: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PrincipalError {
    #[error("expected a string in format principalType:principalName but got {0:?}")]
    NoColon(String),
}

impl KafkaPrincipal {
    pub(crate) const USER_TYPE: &'static str = "User";

    pub(crate) fn new(principal_type: &str, name: &str) -> Self {
        KafkaPrincipal {
            principal_type: principal_type.to_string(),
            name: name.to_string(),
        }
    }

    pub(crate) fn user(name: &str) -> Self {
        Self::new(Self::USER_TYPE, name)
    }

    /// `User:ANONYMOUS`: a PLAINTEXT client, or a TLS client without a certificate.
    pub(crate) fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }

    /// `User:*`, which an ACL uses to mean every principal.
    #[cfg(test)]
    pub(crate) fn wildcard() -> Self {
        Self::user("*")
    }

    /// Whether this is `User:*` (compared without making one).
    pub(crate) fn is_wildcard(&self) -> bool {
        self.principal_type == Self::USER_TYPE && self.name == "*"
    }

    /// Kafka's `SecurityUtils.parseKafkaPrincipal`: split at the first colon.
    pub(crate) fn parse(s: &str) -> Result<Self, PrincipalError> {
        match s.split_once(':') {
            Some((t, n)) => Ok(Self::new(t, n)),
            None => Err(PrincipalError::NoColon(s.to_string())),
        }
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

impl FromStr for KafkaPrincipal {
    type Err = PrincipalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Kafka's `super.users`: principals separated by `;`, blanks trimmed, empties skipped.
pub(crate) fn parse_super_users(value: &str) -> Result<Vec<KafkaPrincipal>, PrincipalError> {
    value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(KafkaPrincipal::parse)
        .collect()
}

/// One attribute of a distinguished name, as in the certificate: its type as a dotted OID
/// ("2.5.4.3"), the value's universal tag (0x0C UTF8String, 0x13 PrintableString, ...), and
/// the value's content octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DnAttribute<'a> {
    pub(crate) oid: &'a str,
    pub(crate) tag: u8,
    pub(crate) value: &'a [u8],
}

/// The RFC 2253 keywords Java knows (`AVAKeyword` entries marked RFC 2253 compliant).
const RFC2253_KEYWORDS: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// `X500Principal.getName()` of a subject given as its RDNs in certificate (DER) order, each
/// RDN a set of attributes in DER order.
pub(crate) fn rfc2253_name(rdns: &[Vec<DnAttribute<'_>>]) -> String {
    let rdn =
        |avas: &Vec<DnAttribute<'_>>| avas.iter().map(ava_rfc2253).collect::<Vec<_>>().join("+");
    rdns.iter().rev().map(rdn).collect::<Vec<_>>().join(",")
}

/// Java's `AVA.toRFC2253String`.
fn ava_rfc2253(a: &DnAttribute<'_>) -> String {
    let keyword = RFC2253_KEYWORDS
        .iter()
        .find(|(oid, _)| *oid == a.oid)
        .map(|(_, k)| *k);
    // PrintableString, T61String, IA5String, GeneralString, BMPString, UTF8String
    let is_string = matches!(a.tag, 0x13 | 0x14 | 0x16 | 0x1b | 0x1e | 0x0c);
    let Some(keyword) = keyword.filter(|_| is_string) else {
        // "#" and the hex of the value's whole DER encoding (tag, length, content)
        let mut der = vec![a.tag];
        der.extend(der_length(a.value.len()));
        der.extend_from_slice(a.value);
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        return format!("{}=#{hex}", keyword.unwrap_or(a.oid));
    };
    let text = if a.tag == 0x1e {
        let units: Vec<u16> = a
            .value
            .chunks(2)
            .map(|c| {
                u16::from_be_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(a.value).into_owned()
    };
    let mut escaped: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if ",=+<>#;\"\\".contains(c) {
            escaped.extend(['\\', c]);
        } else if c == '\0' {
            escaped.extend(['\\', '0', '0']);
        } else {
            escaped.push(c);
        }
    }
    // Leading and trailing blanks (space, CR) are escaped.
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.len() - escaped.iter().rev().take_while(|c| blank(c)).count();
    let mut value = String::with_capacity(escaped.len() + 4);
    for (i, c) in escaped.iter().enumerate() {
        if i < lead || i >= trail {
            value.push('\\');
        }
        value.push(*c);
    }
    format!("{keyword}={value}")
}

fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DnError {
    #[error("malformed DER: {0}")]
    Der(&'static str),
}

/// One DER element: (tag, content, rest of input).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DnError> {
    let (&tag, rest) = input.split_first().ok_or(DnError::Der("truncated tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(DnError::Der("high tag numbers are not supported"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(DnError::Der("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(DnError::Der("bad length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(DnError::Der("length past the end"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(
    input: &'a [u8],
    want: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DnError> {
    match tlv(input)? {
        (tag, content, rest) if tag == want => Ok((content, rest)),
        _ => Err(DnError::Der(what)),
    }
}

fn oid_to_string(bytes: &[u8]) -> Result<String, DnError> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        if acc > (u64::MAX >> 7) {
            return Err(DnError::Der("OID arc too large"));
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.extend([first, acc - first * 40]);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i + 1 == bytes.len() {
            return Err(DnError::Der("truncated OID"));
        }
    }
    if arcs.is_empty() {
        return Err(DnError::Der("empty OID"));
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// The RFC 2253 name of a DER `Name` (a certificate's subject field, tag and all).
pub(crate) fn dn_from_der(subject_der: &[u8]) -> Result<String, DnError> {
    let (mut rdns_der, rest) = expect(subject_der, 0x30, "Name is not a SEQUENCE")?;
    if !rest.is_empty() {
        return Err(DnError::Der("bytes after the Name"));
    }
    let mut oids: Vec<Vec<(String, u8, &[u8])>> = Vec::new();
    while !rdns_der.is_empty() {
        let (mut set, rest) = expect(rdns_der, 0x31, "RDN is not a SET")?;
        rdns_der = rest;
        let mut avas = Vec::new();
        while !set.is_empty() {
            let (ava, rest) = expect(set, 0x30, "attribute is not a SEQUENCE")?;
            set = rest;
            let (oid, value_der) = expect(ava, 0x06, "attribute type is not an OID")?;
            let (tag, value, rest) = tlv(value_der)?;
            if !rest.is_empty() {
                return Err(DnError::Der("bytes after an attribute value"));
            }
            avas.push((oid_to_string(oid)?, tag, value));
        }
        oids.push(avas);
    }
    let rdns: Vec<Vec<DnAttribute<'_>>> = oids
        .iter()
        .map(|avas| {
            avas.iter()
                .map(|(oid, tag, value)| DnAttribute {
                    oid,
                    tag: *tag,
                    value,
                })
                .collect()
        })
        .collect();
    Ok(rfc2253_name(&rdns))
}

/// The RFC 2253 subject name of an X.509 certificate in DER (as rustls hands over the peer's
/// end-entity certificate). Walks `Certificate → TBSCertificate → subject` only.
pub(crate) fn subject_dn_from_certificate(cert_der: &[u8]) -> Result<String, DnError> {
    let (cert, _) = expect(cert_der, 0x30, "certificate is not a SEQUENCE")?;
    let (mut tbs, _) = expect(cert, 0x30, "TBSCertificate is not a SEQUENCE")?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // [0] EXPLICIT version
    }
    tbs = expect(tbs, 0x02, "serial is not an INTEGER")?.1;
    tbs = expect(tbs, 0x30, "signature algorithm is not a SEQUENCE")?.1;
    tbs = expect(tbs, 0x30, "issuer is not a SEQUENCE")?.1;
    tbs = expect(tbs, 0x30, "validity is not a SEQUENCE")?.1;
    let (_, _, after_subject) = tlv(tbs)?;
    dn_from_der(&tbs[..tbs.len() - after_subject.len()])
}

/// The principal Kafka's default builder gives an mTLS client (DEFAULT mapping rule).
pub(crate) fn principal_from_certificate(cert_der: &[u8]) -> Result<KafkaPrincipal, DnError> {
    Ok(KafkaPrincipal::user(&subject_dn_from_certificate(
        cert_der,
    )?))
}

#[cfg(test)]
#[path = "principal_tests.rs"]
mod tests;
