//! Reading the metadata log of a release before the quorum.

use super::*;
use prost::Message as _;
use sluice_proto::batch::{build_batch, SimpleRecord};
use sluice_proto::metadata::{PartitionRecord, Record, TopicRecord};

#[test]
fn legacy_log_is_read_with_this_node_as_replica() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    assert!(read_legacy_log(dir.path(), 4).unwrap().is_empty()); // ok: test
    let log = dir.path().join(LEGACY_METADATA_DIR);
    std::fs::create_dir_all(&log).unwrap(); // ok: test
    let recs = [
        MetadataRecord::new(Record::Topic(TopicRecord {
            name: "old".into(),
            topic_id: vec![5; 16],
        })),
        MetadataRecord::new(Record::Partition(PartitionRecord {
            topic_id: vec![5; 16],
            partition_id: 0,
            ..Default::default()
        })),
    ];
    let values: Vec<Vec<u8>> = recs.iter().map(|r| r.encode_to_vec()).collect();
    let simple: Vec<SimpleRecord<'_>> = values
        .iter()
        .map(|v| SimpleRecord {
            key: None,
            value: Some(v),
            timestamp: 1,
            headers: &[],
        })
        .collect();
    let mut bytes = build_batch(0, &simple).to_vec();
    bytes.extend_from_slice(&[0u8; 300]); // the zero tail of a direct-I/O page
    std::fs::write(log.join(format!("{:020}.log", 0)), bytes).unwrap(); // ok: test
    let got = read_legacy_log(dir.path(), 4).unwrap(); // ok: test
    assert_eq!(got.len(), 2);
    match &got[1].record {
        Some(Record::Partition(p)) => {
            assert_eq!(
                (p.replicas.clone(), p.isr.clone(), p.leader),
                (vec![4], vec![4], 4)
            )
        }
        other => panic!("{other:?}"),
    }
}
