//! Kafka wire protocol for Sluice, sans I/O: it turns bytes into typed requests and
//! typed responses into bytes, and never touches a socket or a file.
//!
//! ```text
//!  socket bytes ──► frame (size-bounded) ──► RequestHeader + api dispatch ──► broker
//!  produce records ──► batch::RecordBatchView (CRC-32C, counts) ──► storage
//!  keys ──► murmur2 partitioner (Java-compatible)
//!  metadata changes ──► metadata::MetadataRecord (prost) ──► the metadata log
//! ```

pub mod batch;
