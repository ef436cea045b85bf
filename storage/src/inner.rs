//! `LogInner`: the shared core of one log — its id and directory, the `LogState` cell,
//! the I/O permit that serialises file changes (flush, truncate, retention, the cleaner's
//! swap, close) and the durable signal. A `PartitionLog` handle and the shard's registry and dirty list
//! point to it. The state is borrowed only for short synchronous sections (never across
//! an `.await`) and changed only through `LogState`'s methods; the async helpers here
//! (index loading, marker removal, directory fsync, `wait_durable`) follow that rule.

use crate::error::StorageError;
use crate::signal::Signal;
use crate::state::LogState;
use crate::swap::CleanerHook;
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::path::PathBuf;

/// Shared core of a log; owned by the partition's shard, never crosses cores.
pub(crate) struct LogInner {
    pub(crate) id: u64,
    pub(crate) dir: PathBuf,
    /// The device of the log's directory (a flusher cycle syncs each filesystem once).
    pub(crate) dev: u64,
    st: RefCell<LogState>,
    /// Serialises file mutations (flush, truncate, retention, cleaner swap, close).
    pub(crate) io: glommio::sync::Semaphore,
    /// Notified whenever durable advances, the log is truncated, fails or closes.
    pub(crate) durable_signal: Signal,
    /// One producer-state load at a time (`read::load_producers`): a caller arriving
    /// during a load waits for it and finds the state built instead of reading again.
    pub(crate) producer_load: glommio::sync::Semaphore,
    /// A test's hook into the cleaner's swap (`PartitionLog::set_cleaner_hook`).
    pub(crate) cleaner_hook: RefCell<Option<CleanerHook>>,
    /// The latest journal epoch holding entries of this log (0: none), so a change that
    /// rewrites or removes its files knows whether it must wait for a checkpoint.
    pub(crate) journal_epoch: std::cell::Cell<u64>,
    /// The write-behind found the log's permit taken and waits for it: cycles leave the
    /// log for a later one until it has had it (see `journal_flush::behind_loop`).
    pub(crate) behind_wanted: std::cell::Cell<bool>,
    /// The directory has an entry no directory fsync covered yet: a new log's first
    /// segment, created at open. The next `sync_dir` (any caller) clears it; a flush
    /// finding it set syncs the directory before its data counts as durable.
    dir_unsynced: Cell<bool>,
    /// The log's name in the shard's journal (`journal_flush::journal_name`), worked out
    /// once: neither `dir` nor the journal's directory changes while the log is open.
    pub(crate) journal_name: std::cell::OnceCell<Option<std::rc::Rc<str>>>,
}

impl LogInner {
    pub(crate) fn new(id: u64, dir: PathBuf, dev: u64, st: LogState) -> LogInner {
        LogInner {
            id,
            dir,
            dev,
            st: RefCell::new(st),
            io: glommio::sync::Semaphore::new(1),
            durable_signal: Signal::default(),
            producer_load: glommio::sync::Semaphore::new(1),
            cleaner_hook: RefCell::new(None),
            journal_epoch: std::cell::Cell::new(0),
            behind_wanted: std::cell::Cell::new(false),
            dir_unsynced: Cell::new(false),
            journal_name: std::cell::OnceCell::new(),
        }
    }

    /// A file was created in the directory without a directory fsync (open).
    pub(crate) fn set_dir_unsynced(&self) {
        self.dir_unsynced.set(true);
    }
    /// Whether the directory still needs a fsync for an entry created before.
    pub(crate) fn dir_unsynced(&self) -> bool {
        self.dir_unsynced.get()
    }
    /// A directory fsync that started after every entry `dir_unsynced` stands for
    /// completed.
    pub(crate) fn dir_synced(&self) {
        self.dir_unsynced.set(false);
    }

    /// The state, to read. Never hold it across an `.await`.
    pub(crate) fn state(&self) -> Ref<'_, LogState> {
        self.st.borrow()
    }
    /// The state, to call a changing method. Never hold it across an `.await`.
    pub(crate) fn state_mut(&self) -> RefMut<'_, LogState> {
        self.st.borrow_mut()
    }
    /// `state_mut` unless the state is borrowed (for drops and background sweeps).
    pub(crate) fn try_state_mut(&self) -> Option<RefMut<'_, LogState>> {
        self.st.try_borrow_mut().ok()
    }

    /// Resolves once every offset <= `last_offset` is fsynced, counting truncations from
    /// truncation epoch `since`; see `PartitionLog::wait_durable`.
    pub(crate) async fn wait_durable(
        &self,
        last_offset: i64,
        since: u64,
    ) -> Result<(), StorageError> {
        loop {
            let wait = self.durable_signal.wait();
            if let Some(answer) = self.state().durable_wait(last_offset, since) {
                return answer;
            }
            wait.await;
        }
    }

    /// Reads the index files of segment `base` on a blocking helper if they are not in
    /// memory, so a following `ensure_indexes` reads nothing on the shard thread.
    pub(crate) async fn load_indexes(&self, base: i64) {
        if !self.state().indexes_missing(base) {
            return;
        }
        let (ip, tp) = (
            crate::segment::index_path(&self.dir, base),
            crate::segment::timeindex_path(&self.dir, base),
        );
        let (idx, tidx) = crate::blocking::run(&self.dir, move || {
            (
                std::fs::read(ip).unwrap_or_default(),
                std::fs::read(tp).unwrap_or_default(),
            )
        })
        .await;
        self.state_mut().install_indexes(base, &idx, &tidx);
    }

    /// Reads segment `base`'s aborted-transaction entries from its `.txnindex` on the
    /// blocking helper if they are only on disk.
    pub(crate) async fn load_txn(&self, base: i64) -> Result<(), StorageError> {
        if !self.state().txn_on_disk(base) {
            return Ok(());
        }
        let dir = self.dir.clone();
        let read =
            crate::blocking::run(&self.dir, move || crate::txn::read_entries(&dir, base)).await?;
        self.state_mut().install_txn(base, read);
        Ok(())
    }

    /// Remove the clean-shutdown marker durably before the log's files change.
    pub(crate) async fn clear_marker(&self) -> Result<(), StorageError> {
        if !self.state().marker_present() {
            return Ok(());
        }
        crate::blocking::remove_file(crate::segment::marker_path(&self.dir)).await?;
        self.sync_dir().await?;
        self.state_mut().set_marker_present(false);
        Ok(())
    }

    /// fsync the log directory (new or removed files), on a blocking helper of the shard:
    /// glommio 0.9's `Directory::sync` leaks task waker references when many run
    /// concurrently from one task (refcount overflow panic).
    pub(crate) async fn sync_dir(&self) -> Result<(), StorageError> {
        crate::blocking::sync_dir(self.dir.clone()).await?;
        self.dir_synced();
        Ok(())
    }
}
