//! The Sluice broker: configuration, the shard runtime, cross-shard routing, connections, and
//! one handler module per Kafka API family. See `shared/ARCHITECTURE.md` for the picture.

mod access;
mod admission;
pub mod config;
mod conn_limit;
mod connection;
mod coordinator_log;
mod errors;
mod fast_map;
mod groups;
mod groups_glue;
mod handlers;
mod hw;
pub mod listeners;
mod mesh;
mod metadata;
mod metrics;
mod partition_meta;
mod peer;
mod placement;
mod quorum;
mod record_reader;
mod replication;
mod router;
pub mod security;
mod server;
mod shard;
mod shard_msg;
mod socket;
mod tls;
mod txn;
mod txn_glue;
mod txn_markers;
mod txn_verify;
mod watchdog;

pub use config::BrokerConfig;
pub use errors::now_ms;
pub use metadata::bootstrap_users::add_bootstrap_user;
pub use server::run;
