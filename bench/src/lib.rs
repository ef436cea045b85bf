//! sluice-bench: a load generator and physical-limit probe for Kafka-protocol brokers.
//!
//! ```text
//!  limits (io_uring) ─┐
//!  workload / CLI ──► engine: producer threads (rdkafka BaseProducer, paced) ──► broker
//!                             consumer threads (rdkafka BaseConsumer) ◄────────┘
//!                     ──► stats (hdrhistogram) ──► report (table / JSON) ──► suite ratios
//! ```
//! Every number comes from a real measurement; nothing here talks to the broker except
//! through librdkafka, so the figures are what librdkafka applications see (`transactions`
//! included: it drives librdkafka's transactional API), except
//! `old_formats`, which speaks Produce / Fetch itself at versions librdkafka cannot be made
//! to pick (the cost of message-format conversion).

mod broker_process;
pub mod compaction;
pub mod disk_settle;
pub mod engine;
pub mod html_report;
pub mod kafka;
pub mod limits;
pub mod metadata;
pub mod old_formats;
pub mod pacer;
pub mod partitions;
mod partitions_durability;
pub mod partitions_load;
mod partitions_raw;
pub mod partitions_report;
pub mod procstat;
mod progress;
pub mod record;
pub mod replication;
pub mod report;
pub mod stats;
pub mod suite;
pub mod timeline;
pub mod tls;
mod tls_pki;
pub mod tls_report;
pub mod transactions;
pub mod transactions_report;
pub mod workload;
