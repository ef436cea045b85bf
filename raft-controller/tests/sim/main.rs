//! Deterministic simulation of the metadata quorum: seeded schedules of elections,
//! proposals, message loss, delay, reordering and duplication, partitions, power cuts with
//! torn writes and disk failures mid-write, each ending with a healed cluster that must
//! converge to the committed history. Plus targeted scenarios (`scenarios.rs`).
//!
//! `SLUICE_SIM_SCHEDULES=N` runs N schedules (default 1000) from seed
//! `SLUICE_SIM_FIRST_SEED` (default 0); `SLUICE_SIM_SEED=S` runs only seed S (to replay a
//! failure: every failed check names its seed).

mod harness;
mod scenarios;
mod schedules;
