//! Sluice's chaos harness: a multi-process cluster behind in-process TCP proxies, faults
//! from a seeded schedule, workloads (idempotent, transactional, consume-transform-produce)
//! that record a history, and a checker over it.
//!
//! ```text
//!  workloads (rdkafka) ──► proxy ──► broker 1 ◄──► proxy ◄──► broker 2 …
//!        │ history.jsonl        ▲ cut / delay / one-way per (src, dst)
//!        ▼                      │
//!  checker ◄── final read-back   nemesis (kill -9, SIGSTOP, partitions, slow, disk, restarts)
//! ```

pub mod checker;
pub mod cluster;
pub mod ctp_checker;
pub mod ctp_workload;
pub mod history;
pub mod nemesis;
pub mod probe;
pub mod proxy;
pub mod report;
pub mod run;
pub mod txn_checker;
pub mod txn_workload;
pub mod workload;
