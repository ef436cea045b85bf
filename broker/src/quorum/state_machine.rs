//! The raft state machine (the metadata image, applied from committed entries and
//! restored from snapshots) and the reader of a pre-quorum release's metadata log, which
//! seeds the first start after an upgrade.

use std::path::Path;

use anyhow::Context;
use prost::Message;
use sluice_controller::StateMachine;
use sluice_proto::metadata::{MetadataBatch, MetadataRecord, Record};

use super::LEGACY_METADATA_DIR;
use crate::metadata::image::MetadataImage;

/// The raft state machine: the metadata image.
#[derive(Default)]
pub(super) struct MetadataSm {
    pub(super) image: MetadataImage,
}

pub(super) fn decode_batch(index: u64, data: &[u8]) -> Vec<MetadataRecord> {
    match MetadataBatch::decode(data) {
        Ok(b) => b.records,
        Err(e) => {
            // every node skips the same entry, so the images stay the same
            tracing::error!(index, error = %e, "metadata entry does not decode; skipped");
            Vec::new()
        }
    }
}

impl StateMachine for MetadataSm {
    fn apply(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> Result<(), sluice_controller::StateMachineError> {
        for r in decode_batch(index, data) {
            self.image.apply(index, &r);
        }
        Ok(())
    }
    fn snapshot(&self) -> Result<Vec<u8>, sluice_controller::StateMachineError> {
        Ok(MetadataBatch {
            records: self.image.to_records(),
        }
        .encode_to_vec())
    }
    fn restore(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> Result<(), sluice_controller::StateMachineError> {
        let batch = MetadataBatch::decode(data)?;
        self.image = MetadataImage::default();
        for r in &batch.records {
            self.image.apply(index, r);
        }
        Ok(())
    }
}

/// Reads the metadata log of a release before the quorum (`__cluster_metadata-0`, Kafka
/// record batches of metadata records) and gives its records with this node as the only
/// replica and leader of every partition. Empty when there is none.
///
/// Blocking reads: called from `start`, on the main thread before any shard runs.
pub(crate) fn read_legacy_log(data_dir: &Path, node: i32) -> anyhow::Result<Vec<MetadataRecord>> {
    let dir = data_dir.join(LEGACY_METADATA_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut bases: Vec<(i64, std::path::PathBuf)> = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = e?.path();
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(b) = base {
            bases.push((b, path));
        }
    }
    bases.sort();
    let mut out = Vec::new();
    for (base, path) in bases {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (valid, _) = sluice_storage::scan_prefix(&bytes, base);
        let mut data = bytes::Bytes::from(bytes);
        data.truncate(valid as usize);
        let mut at = 0usize;
        while at < data.len() {
            let h = sluice_proto::batch::RecordBatchHeader::parse(&data[at..])
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let size = h.total_size();
            let batch = data.slice(at..at + size);
            for rec in sluice_proto::batch::decode_records(&batch)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            {
                if let Some(v) = rec.value {
                    let mut r = MetadataRecord::decode(v)
                        .with_context(|| format!("metadata record at offset {}", rec.offset))?;
                    if let Some(Record::Partition(p)) = &mut r.record {
                        if p.replicas.is_empty() {
                            p.replicas = vec![node];
                            p.isr = vec![node];
                            p.leader = node;
                        }
                    }
                    out.push(r);
                }
            }
            at += size;
        }
    }
    Ok(out)
}
