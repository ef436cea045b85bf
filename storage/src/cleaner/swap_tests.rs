//! Unit tests of `cleaner.rs`.

use crate::swap::{CleanerHook, SwapStep};
use crate::{CleanupPolicy, LogConfig, PartitionLog};
use sluice_proto::batch::{build_batch, RecordBatchHeader, SimpleRecord};
use std::rc::Rc;

fn tempdir() -> tempfile::TempDir {
    crate::test_dir()
}

/// A read that looked its segment up before the switch (its layout epoch is the old
/// one) must not return or cache what it finds at the old position: the file under
/// that name is, or soon is, the cleaned one. The retrying read gets the new batch.
#[test]
fn a_read_that_looked_up_a_segment_before_the_switch_starts_again() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    crate::on_test_shard(move |shard| async move {
        let cfg = LogConfig {
            segment_bytes: 1024,
            cleanup_policy: CleanupPolicy::parse("compact").unwrap(), // ok: test
            ..Default::default()
        };
        let log = PartitionLog::open(&shard, path, cfg).await.unwrap(); // ok: test
        for i in 0..200i64 {
            let k = format!("k{}", i % 7).into_bytes();
            let r = [SimpleRecord {
                key: Some(&k),
                value: Some(b"some value"),
                timestamp: i,
                headers: &[],
            }];
            log.append(build_batch(0, &r), 1).unwrap(); // ok: test
        }
        log.wait_durable(199).await.unwrap(); // ok: test
        let old = log.inner.state().layout_epoch();
        let (s, l) = (log.shard.clone(), log.inner.clone());
        let hook: CleanerHook = Rc::new(move |step, _| {
            let (s, l) = (s.clone(), l.clone());
            Box::pin(async move {
                if step == SwapStep::Switched || step == SwapStep::Installed {
                    for o in [0, 50, 100] {
                        let stale = crate::read::read_disk_in(&s, &l, o, 1 << 16, true, old)
                            .await
                            .unwrap_or_default();
                        assert!(stale.is_empty(), "{step:?}: a stale read at {o}");
                        let fresh = crate::read::read_disk(&s, &l, o, 1, false).await.unwrap(); // ok: test
                        let h = RecordBatchHeader::parse(&fresh[0].2).unwrap(); // ok: test
                                                                                // offset 0 was superseded: the new log has a later batch
                        assert!(h.last_offset() >= o && h.base_offset > 0, "{step:?}: {h:?}");
                    }
                    assert!(s.inner.borrow().cache.get(l.id, 0).is_none());
                }
                true
            })
        });
        log.set_cleaner_hook(Some(hook));
        log.compact(10_000).await.unwrap().unwrap(); // ok: test
        shard.shutdown().await.unwrap(); // ok: test
    });
}
