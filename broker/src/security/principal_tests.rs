use super::*;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// A self-signed certificate made with
/// `openssl req -x509 -utf8 -multivalue-rdn -subj "/DC=com/DC=acme/C=US/ST=CA/L=San Francisco/
/// O=Acme, Inc. <x>/OU=eng+OU=ops/CN= al#ice;\"x\"=y\\z /emailAddress=a@b.c/serialNumber=42/
/// UID=alice/title=Dr/CN=Jürgen"`.
const CERT_B64: &str = "MIIDYTCCAwegAwIBAgIUUU2LKM7xtQJL1tYxKlIdIBD+TWwwCgYIKoZIzj0EAwIwggEEMRMwEQYKCZImiZPyLGQBGRYDY29tMRQwEgYKCZImiZPyLGQBGRYEYWNtZTELMAkGA1UEBhMCVVMxCzAJBgNVBAgMAkNBMRYwFAYDVQQHDA1TYW4gRnJhbmNpc2NvMRcwFQYDVQQKDA5BY21lLCBJbmMuIDx4PjEYMAoGA1UECwwDZW5nMAoGA1UECwwDb3BzMRkwFwYDVQQDDBAgYWwjaWNlOyJ4Ij15XHogMRQwEgYJKoZIhvcNAQkBFgVhQGIuYzELMAkGA1UEBRMCNDIxFTATBgoJkiaJk/IsZAEBDAVhbGljZTELMAkGA1UEDAwCRHIxEDAOBgNVBAMMB0rDvHJnZW4wHhcNMjYxMjAyMTkxMTA3WhcNMzYxMTI5MTkxMTA3WjCCAQQxEzARBgoJkiaJk/IsZAEZFgNjb20xFDASBgoJkiaJk/IsZAEZFgRhY21lMQswCQYDVQQGEwJVUzELMAkGA1UECAwCQ0ExFjAUBgNVBAcMDVNhbiBGcmFuY2lzY28xFzAVBgNVBAoMDkFjbWUsIEluYy4gPHg+MRgwCgYDVQQLDANlbmcwCgYDVQQLDANvcHMxGTAXBgNVBAMMECBhbCNpY2U7IngiPXlceiAxFDASBgkqhkiG9w0BCQEWBWFAYi5jMQswCQYDVQQFEwI0MjEVMBMGCgmSJomT8ixkAQEMBWFsaWNlMQswCQYDVQQMDAJEcjEQMA4GA1UEAwwHSsO8cmdlbjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFe1kUmsmB53oEKxngZUmaE9y42xW60jYfeCrTj0M9T45g5QZJP0rXIO0CmtWjKoKqlo/OfexA4+t9KA3ldCrhajUzBRMB0GA1UdDgQWBBQQuM/yANDrQBElkpEiN3+g5YkE2TAfBgNVHSMEGDAWgBQQuM/yANDrQBElkpEiN3+g5YkE2TAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCqdjxbqN7sGskP4pCDOQnx21PiJTIANM0plJiDhlKmYQIgSQPo5RYcnQ8txxTX8KSNr+/Y535i8rzIvMVyCi3i0KM=";

/// `X509Certificate.getSubjectX500Principal().getName()` of that certificate, printed by
/// OpenJDK.
const JAVA_NAME: &str = "CN=Jürgen,2.5.4.12=#0c024472,UID=alice,2.5.4.5=#13023432,\
    1.2.840.113549.1.9.1=#16056140622e63,CN=\\ al\\#ice\\;\\\"x\\\"\\=y\\\\z\\ ,OU=eng+OU=ops,\
    O=Acme\\, Inc. \\<x\\>,L=San Francisco,ST=CA,C=US,DC=acme,DC=com";

#[test]
fn certificate_subject_matches_java() {
    let der = BASE64.decode(CERT_B64).unwrap();
    assert_eq!(subject_dn_from_certificate(&der).unwrap(), JAVA_NAME);
    assert_eq!(
        principal_from_certificate(&der).unwrap().to_string(),
        format!("User:{JAVA_NAME}")
    );
}

#[test]
fn truncated_or_garbage_der_is_an_error_not_a_panic() {
    let der = BASE64.decode(CERT_B64).unwrap();
    for cut in 0..der.len() {
        let _ = subject_dn_from_certificate(&der[..cut]);
    }
    assert!(subject_dn_from_certificate(&der[..200]).is_err());
    assert!(dn_from_der(&[0x30, 0x81]).is_err());
    assert!(dn_from_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(dn_from_der(&[0x30, 0x80, 0, 0]).is_err());
    assert!(dn_from_der(&[0x31, 0x00]).is_err());
    assert!(dn_from_der(&[0x30, 0x00, 0x00]).is_err());
    // an OID whose last byte says "more follows"
    assert!(dn_from_der(&[0x30, 0x08, 0x31, 0x06, 0x30, 0x04, 0x06, 0x01, 0x85, 0x05]).is_err());
    assert_eq!(dn_from_der(&[0x30, 0x00]).unwrap(), "");
}

fn ava<'a>(oid: &'a str, tag: u8, value: &'a str) -> DnAttribute<'a> {
    DnAttribute {
        oid,
        tag,
        value: value.as_bytes(),
    }
}

#[test]
fn rfc2253_escaping_follows_java() {
    let one = |value: &str| rfc2253_name(&[vec![ava("2.5.4.3", 0x0c, value)]]);
    assert_eq!(one("alice"), "CN=alice");
    assert_eq!(one("a,b+c=d"), "CN=a\\,b\\+c\\=d");
    assert_eq!(one("#x"), "CN=\\#x");
    assert_eq!(one("  x "), "CN=\\ \\ x\\ ");
    assert_eq!(one("   "), "CN=\\ \\ \\ ");
    assert_eq!(one("a\0b"), "CN=a\\00b");
    assert_eq!(one("<\"\\;>"), "CN=\\<\\\"\\\\\\;\\>");
    assert_eq!(one(""), "CN=");
    // keyword attribute with a non-string value: hex of the DER
    assert_eq!(
        rfc2253_name(&[vec![DnAttribute {
            oid: "2.5.4.3",
            tag: 0x04,
            value: &[1, 2]
        }]]),
        "CN=#04020102"
    );
    // BMPString is UTF-16BE
    assert_eq!(
        rfc2253_name(&[vec![DnAttribute {
            oid: "2.5.4.10",
            tag: 0x1e,
            value: &[0, b'o', 0, b'k']
        }]]),
        "O=ok"
    );
    // reverse RDN order, DER order inside a multi-valued RDN
    let rdns = vec![
        vec![ava("2.5.4.6", 0x13, "US")],
        vec![ava("2.5.4.11", 0x0c, "b"), ava("2.5.4.11", 0x0c, "a")],
        vec![ava("2.5.4.3", 0x0c, "x")],
    ];
    assert_eq!(rfc2253_name(&rdns), "CN=x,OU=b+OU=a,C=US");
}

#[test]
fn long_values_use_long_form_lengths_in_hex() {
    let long = "x".repeat(200);
    let name = rfc2253_name(&[vec![ava("2.5.4.5", 0x13, &long)]]);
    assert!(name.starts_with("2.5.4.5=#1381c87878"), "{name}");
}

#[test]
fn principal_parse_and_print() {
    let p = KafkaPrincipal::parse("User:alice").unwrap();
    assert_eq!(p, KafkaPrincipal::user("alice"));
    assert_eq!(p.to_string(), "User:alice");
    let dn = KafkaPrincipal::parse("User:CN=a:b,O=c").unwrap();
    assert_eq!(dn.name, "CN=a:b,O=c");
    assert_eq!(
        "Group:ops"
            .parse::<KafkaPrincipal>()
            .unwrap()
            .principal_type,
        "Group"
    );
    assert!(KafkaPrincipal::parse("alice").is_err());
    assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
    assert_eq!(KafkaPrincipal::wildcard().to_string(), "User:*");
    assert!(KafkaPrincipal::wildcard().is_wildcard());
    assert!(!KafkaPrincipal::user("alice").is_wildcard());
    assert!(!KafkaPrincipal::new("Group", "*").is_wildcard());
}

#[test]
fn super_users_list() {
    assert_eq!(
        parse_super_users(" User:admin ; User:CN=broker,O=acme;;").unwrap(),
        vec![
            KafkaPrincipal::user("admin"),
            KafkaPrincipal::user("CN=broker,O=acme")
        ]
    );
    assert!(parse_super_users("admin").is_err());
    assert_eq!(parse_super_users("").unwrap(), vec![]);
}
