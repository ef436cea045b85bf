//! Certificates for `sluice-bench tls`, made at run time with rcgen into the run's work
//! dir: a CA, and a broker certificate for 127.0.0.1 / localhost signed by it. Private
//! keys are written with mode 0600 and live only as long as the work dir.
//!
//! ```text
//!  CA (self-signed) ──signs──► broker cert (SAN 127.0.0.1, localhost)
//!  ca.pem ─► clients' ssl.ca.location      broker.pem + broker.key ─► the broker
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of one run.
#[derive(Clone, Debug)]
pub(crate) struct Pki {
    /// The CA certificate: the clients' `ssl.ca.location`.
    pub(crate) ca: PathBuf,
    /// The broker's certificate (`ssl.certificate.location`).
    pub(crate) cert: PathBuf,
    /// The broker's private key (`ssl.key.location`).
    pub(crate) key: PathBuf,
}

/// Writes `text` to `path`, readable by this user only when `secret`.
pub(crate) fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes the CA and the broker certificate in `dir`.
pub(crate) fn make(dir: &Path) -> Result<Pki> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice-bench CA");
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "sluice-bench broker");
    let key = KeyPair::generate().context("broker key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("broker certificate")?;

    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("broker.pem"),
        key: dir.join("broker.key"),
    };
    write_file(&pki.ca, &ca_cert.pem(), false)?;
    write_file(&pki.cert, &cert.pem(), false)?;
    write_file(&pki.key, &key.serialize_pem(), true)?;
    Ok(pki)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_pem_files_and_keeps_the_key_private() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pki = make(&dir).expect("pki");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert!(read(&pki.ca).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(read(&pki.cert).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(read(&pki.key).contains("PRIVATE KEY-----"));
        let mode = std::fs::metadata(&pki.key)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
