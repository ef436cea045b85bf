//! Topic metadata: an ordered log of `MetadataRecord`s owned by shard 0 (the controller),
//! and the image derived from it that every shard keeps a copy of.
//!
//! ```text
//!  CreateTopics ─► shard 0: controller validates, appends records to __cluster_metadata,
//!                  waits durable ─► broadcast Apply(records) ─► every shard: image.apply,
//!                  open/delete the partitions it owns ─► ack ─► response
//! ```

pub(crate) mod bootstrap_users;
pub(crate) mod controller;
pub(crate) mod elections;
pub(crate) mod image;
pub(crate) mod security_ops;
pub(crate) mod topic_config;

/// Topics the broker owns (`__consumer_offsets`; `__transaction_state` and
/// `__cluster_metadata` reserved): clients may read them but not create, write, grow,
/// reconfigure or delete them.
pub(crate) const INTERNAL_TOPICS: &[&str] = &[
    "__consumer_offsets",
    "__transaction_state",
    "__cluster_metadata",
];

pub(crate) fn is_internal(topic: &str) -> bool {
    INTERNAL_TOPICS.contains(&topic)
}
