//! Kafka wire protocol for Sluice, sans I/O: it turns bytes into typed requests and
//! typed responses into bytes, and never touches a socket or a file.
//!
//! ```text
//!  socket bytes ──► frame (size-bounded) ──► RequestHeader + api dispatch ──► broker
//!  produce records ──► batch (RecordBatch header view, CRC-32C, counts) ──► storage
//!  message sets (formats v0/v1) ◄──► message_set ◄──► one v2 batch (Produce v0-2, Fetch v0-3)
//!  keys ──► murmur2 partitioner (Java-compatible)
//!  metadata changes ──► metadata::MetadataRecord (prost) ──► the metadata log
//! ```

pub mod batch;
pub mod decompress;
pub mod frame;
pub mod message_set;
pub mod metadata;
pub mod murmur2;
pub mod request;

pub use kafka_protocol;

/// Errors of the protocol layer. Any of them on a request frame closes that connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge { size: usize, max: usize },
    #[error("negative frame size {0}")]
    NegativeFrameSize(i32),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("response of {0} bytes is too large")]
    ResponseTooLarge(usize),
}
