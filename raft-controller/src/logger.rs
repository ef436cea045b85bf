//! Routes raft-rs's `slog` records to `tracing` (target `raft`), so the controller logs
//! where the broker logs. raft-rs's info level narrates every election step, so it maps to
//! debug; warnings and errors keep their level. Nothing is formatted for a disabled level.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

/// A `slog` drain that emits each record as a `tracing` event.
struct TracingDrain;

/// Collects a record's key-value pairs as ` key=value` text.
struct KvText(String);

impl Serializer for KvText {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        // Writing to a String cannot fail.
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

fn text(record: &Record<'_>, values: &OwnedKVList) -> String {
    let mut kv = KvText(String::new());
    let _ = record.kv().serialize(record, &mut kv);
    let _ = values.serialize(record, &mut kv);
    format!("{}{}", record.msg(), kv.0)
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", "{}", text(record, values));
            }
            Level::Warning => {
                if tracing::enabled!(target: "raft", tracing::Level::WARN) {
                    tracing::warn!(target: "raft", "{}", text(record, values));
                }
            }
            Level::Info => {
                if tracing::enabled!(target: "raft", tracing::Level::DEBUG) {
                    tracing::debug!(target: "raft", "{}", text(record, values));
                }
            }
            Level::Debug | Level::Trace => {
                if tracing::enabled!(target: "raft", tracing::Level::TRACE) {
                    tracing::trace!(target: "raft", "{}", text(record, values));
                }
            }
        }
        Ok(())
    }
}

/// The logger handed to raft-rs for node `id`.
pub(crate) fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => id))
}
