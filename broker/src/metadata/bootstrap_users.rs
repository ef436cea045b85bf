//! SCRAM users that exist before the first start (`sluice user add … --data-dir DIR`, as
//! Kafka's `kafka-storage format --add-scram`). The verb writes salted credentials (never
//! the password) to `DIR/bootstrap-users.bin`; at start, before the broker serves clients,
//! shard 0 sends them to the controller as "set unless present" and renames the file to
//! `.applied`, so a restart never undoes a later change (a deleted user stays deleted).
//!
//! ```text
//!  sluice user add ─► bootstrap-users.bin (SecurityOp, prost) ─► start: controller
//!                      (only_if_absent) ─► committed ─► bootstrap-users.bin.applied
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use prost::Message;
use sluice_proto::metadata::UserScramCredentialRecord;

use super::security_ops::SecurityOp;
use crate::security::scram::{ScramCredential, ScramMechanism};

const FILE: &str = "bootstrap-users.bin";

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Adds (or replaces) a user's credential for `mechanism` in the data dir's bootstrap file.
pub fn add_bootstrap_user(
    data_dir: &Path,
    name: &str,
    mechanism: &str,
    password: &str,
    iterations: u32,
) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("the user name is empty");
    }
    if password.is_empty() {
        bail!("the password is empty");
    }
    let m = ScramMechanism::from_name(&mechanism.to_ascii_uppercase())
        .with_context(|| format!("{mechanism} is not SCRAM-SHA-256 or SCRAM-SHA-512"))?;
    let iterations_i32 = i32::try_from(iterations).unwrap_or(i32::MAX);
    m.validate_iterations(iterations_i32)
        .map_err(|e| anyhow::anyhow!("--iterations {iterations}: {e}"))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut op = read(data_dir)?.unwrap_or_default();
    let c = ScramCredential::with_random_salt(m, password, iterations);
    let mechanism_code = i32::from(m.type_code());
    op.scram_upserts
        .retain(|u| !(u.name == name && u.mechanism == mechanism_code));
    op.scram_upserts.push(UserScramCredentialRecord {
        name: name.to_string(),
        mechanism: mechanism_code,
        salt: c.salt,
        stored_key: c.stored_key,
        server_key: c.server_key,
        iterations: iterations_i32,
    });
    op.only_if_absent = true;
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, op.encode_to_vec())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path(data_dir)).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// The pending bootstrap users, if any.
pub(crate) fn read(data_dir: &Path) -> anyhow::Result<Option<SecurityOp>> {
    match std::fs::read(path(data_dir)) {
        Ok(bytes) => {
            let mut op = SecurityOp::decode(bytes.as_slice())
                .with_context(|| format!("{} does not decode", path(data_dir).display()))?;
            op.only_if_absent = true;
            Ok(Some(op))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path(data_dir).display())),
    }
}

/// The bootstrap users are in the metadata log: keep the file only as a record.
pub(crate) fn mark_applied(data_dir: &Path) -> anyhow::Result<()> {
    let applied = data_dir.join(format!("{FILE}.applied"));
    std::fs::rename(path(data_dir), &applied)
        .with_context(|| format!("renaming {}", path(data_dir).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_accumulate_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        add_bootstrap_user(dir.path(), "admin", "SCRAM-SHA-512", "pw1", 4096).unwrap();
        add_bootstrap_user(dir.path(), "app", "scram-sha-256", "pw2", 8192).unwrap();
        add_bootstrap_user(dir.path(), "admin", "SCRAM-SHA-512", "pw3", 4096).unwrap();
        let op = read(dir.path()).unwrap().unwrap();
        assert!(op.only_if_absent);
        assert_eq!(op.scram_upserts.len(), 2);
        let admin = op.scram_upserts.iter().find(|u| u.name == "admin").unwrap();
        let cred = ScramCredential {
            salt: admin.salt.clone(),
            stored_key: admin.stored_key.clone(),
            server_key: admin.server_key.clone(),
            iterations: 4096,
        };
        assert!(cred.verify_password(ScramMechanism::Sha512, "pw3"));
        assert!(!cred.verify_password(ScramMechanism::Sha512, "pw1"));
        assert!(add_bootstrap_user(dir.path(), "x", "PLAIN", "p", 4096).is_err());
        assert!(add_bootstrap_user(dir.path(), "x", "SCRAM-SHA-256", "p", 100).is_err());
        mark_applied(dir.path()).unwrap();
        assert!(read(dir.path()).unwrap().is_none());
    }
}
