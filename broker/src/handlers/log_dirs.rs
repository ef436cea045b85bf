//! DescribeLogDirs (KIP-113): the partitions this broker holds a replica of, led or
//! followed, with their size on disk, in its one log directory (the data dir), and that
//! file system's total and usable bytes (v4, KIP-827). Every shard reports the logs it has
//! open; a request naming topics gets only those of its partitions held here. Kafka checks
//! DESCRIBE on the cluster: refused, v1-2 get no directory and v3+ the error code as well.
//! A failed `statvfs` gives -1 for both volume figures (Kafka's "unknown"), not an error.
//!
//! ```text
//!  DescribeLogDirs ─► LogSizes to every shard ─► filter, group by topic ─┐
//!                   statvfs(data dir) on a blocking helper ───────────────┴─► one result
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::connection::Conn;
use crate::security::acl::AclOperation;
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse};

/// What a request asks for: None for every partition, else the partitions named per topic.
type Wanted = Option<BTreeMap<String, BTreeSet<i32>>>;

pub(crate) async fn describe_log_dirs(
    ctx: Rc<ShardCtx>,
    req: DescribeLogDirsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> DescribeLogDirsResponse {
    if ctx.access.enabled() && !ctx.access.allows_cluster(&conn, AclOperation::Describe) {
        // the code is encoded from v3 on; set at every version, so the refusal counts as
        // an error answer in the metrics either way
        return DescribeLogDirsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let wanted: Wanted = req.topics.map(|topics| {
        let mut m: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for t in topics {
            m.entry(t.topic.0.to_string())
                .or_default()
                .extend(t.partitions);
        }
        m
    });
    let mut pending = Vec::with_capacity(ctx.shards);
    for s in 0..ctx.shards {
        pending.push(ctx.submit(s, ShardRequest::LogSizes).await);
    }
    let mut sizes = Vec::new();
    for (shard, p) in pending.into_iter().enumerate() {
        match p.await {
            ShardResponse::LogSizes(s) => sizes.extend(s),
            // only while the broker shuts down: that shard's partitions are left out
            _ => tracing::info!(shard, "a shard did not report its logs for DescribeLogDirs"),
        }
    }
    // the volume is in the answer from v4 on (-1: unknown, as Kafka answers when it
    // cannot read it); statvfs only for those
    let dir = ctx.config.data_dir();
    let want_volume = version >= 4;
    let (path, volume) = {
        let d = dir.clone();
        sluice_storage::run_blocking(&dir, move || {
            (absolute(&d), want_volume.then(|| volume_bytes(&d)))
        })
        .await
    };
    let (total_bytes, usable_bytes) = match volume {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::warn!(dir = %path.display(), error = %e, "statvfs of the data dir failed");
            (-1, -1)
        }
        None => (-1, -1),
    };
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(path.display().to_string()))
        .with_topics(group(sizes, &wanted))
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes)])
}

/// The sizes of the wanted partitions, grouped by topic, topics and partitions in order.
/// The offset lag is Kafka's for a current (not future) replica, max(high watermark −
/// log end, 0): 0, since a replica's own high watermark never passes its log end (Sluice
/// has no future replicas: it does not move partitions between directories).
fn group(sizes: Vec<(String, i32, u64)>, wanted: &Wanted) -> Vec<DescribeLogDirsTopic> {
    let mut by_topic: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for (topic, partition, size) in sizes {
        let keep = match wanted {
            None => true,
            Some(w) => w.get(&topic).is_some_and(|ps| ps.contains(&partition)),
        };
        if keep {
            by_topic.entry(topic).or_default().push((partition, size));
        }
    }
    by_topic
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_unstable();
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, size)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(p)
                                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                                .with_offset_lag(0)
                                .with_is_future_key(false)
                        })
                        .collect(),
                )
        })
        .collect()
}

/// `dir` as an absolute path, as Kafka names its log directories (blocking: it may read
/// the working directory).
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// (total, usable) bytes of the file system holding `dir`: Kafka's `FileStore`
/// `getTotalSpace` and `getUsableSpace` (the blocks an unprivileged writer may use).
/// Blocking: run it on a helper thread.
fn volume_bytes(dir: &Path) -> std::io::Result<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call and `st` points to
    // writable memory of the struct's size; statvfs writes only that struct, and it is
    // read only after a return of 0 says it was filled.
    #[allow(unsafe_code)]
    let st = unsafe {
        let rc = libc::statvfs(path.as_ptr(), st.as_mut_ptr());
        (rc == 0).then(|| st.assume_init())
    };
    match st {
        Some(st) => {
            let frag = u128::from(st.f_frsize);
            let bytes = |blocks: u64| i64::try_from(u128::from(blocks) * frag).unwrap_or(i64::MAX);
            Ok((bytes(st.f_blocks), bytes(st.f_bavail)))
        }
        None => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Vec<(String, i32, u64)> {
        vec![
            ("b".into(), 1, 10),
            ("a".into(), 2, 30),
            ("b".into(), 0, 20),
            ("a".into(), 0, 40),
        ]
    }

    fn flat(topics: &[DescribeLogDirsTopic]) -> Vec<(String, i32, i64)> {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.partition_size))
            })
            .collect()
    }

    #[test]
    fn every_partition_in_order_when_no_topic_is_named() {
        let got = flat(&group(sizes(), &None));
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 40),
                ("a".into(), 2, 30),
                ("b".into(), 0, 20),
                ("b".into(), 1, 10)
            ]
        );
    }

    #[test]
    fn only_the_named_partitions_held_here() {
        let wanted: Wanted = Some(BTreeMap::from([
            ("a".to_string(), BTreeSet::from([2, 7])),
            ("c".to_string(), BTreeSet::from([0])),
        ]));
        assert_eq!(flat(&group(sizes(), &wanted)), vec![("a".into(), 2, 30)]);
        let none: Wanted = Some(BTreeMap::new());
        assert!(group(sizes(), &none).is_empty());
    }

    #[test]
    fn the_volume_of_a_directory_and_an_error_for_a_missing_one() {
        let dir = tempfile::tempdir().unwrap(); // ok: test
        let (total, usable) = volume_bytes(dir.path()).unwrap(); // ok: test
        assert!(
            total > 0 && usable >= 0 && usable <= total,
            "{total} {usable}"
        );
        assert!(volume_bytes(&dir.path().join("missing")).is_err());
    }
}
