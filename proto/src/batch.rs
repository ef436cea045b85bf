//! Zero-copy view of a Kafka v2 RecordBatch header (owned by the storage helper; in progress).
