//! How a shard follows the metadata image: it opens, reconfigures and deletes the
//! replicas it owns and loads or drops the group coordinators of the offsets partitions
//! it leads.

use std::collections::HashSet;
use std::rc::Rc;

use sluice_storage::PartitionLog;

use super::ShardCtx;
use crate::coordinator_log::ReplicatedAcks;
use crate::groups::OFFSETS_TOPIC;
use crate::groups_glue::{group_config, load_coordinator};
use crate::metadata::image::Change;
use crate::metadata::topic_config::topic_log_config;
use crate::partition_meta;
use crate::placement::shard_for;
use crate::txn::TRANSACTION_STATE_TOPIC;

impl ShardCtx {
    /// Opens, reconfigures or deletes the partitions this shard owns as the image changed,
    /// and loads or drops the group coordinators of the offsets partitions it leads.
    pub(super) async fn act_on(self: &Rc<Self>, changes: Vec<Change>) {
        self.open_new_replicas(&changes).await;
        for change in changes {
            match change {
                Change::AclsChanged => self.access.rebuild(&self.config, &self.image.borrow()),
                Change::PartitionAdded {
                    topic,
                    id,
                    partition,
                }
                | Change::PartitionChanged {
                    topic,
                    id,
                    partition,
                } => {
                    if shard_for(&id, partition, self.shards) != self.id {
                        continue;
                    }
                    let (replica, leader_id, epoch) =
                        match self.image.borrow().partition(&topic, partition) {
                            Some(p) => {
                                self.metrics
                                    .partition_changed(&topic, partition, p, self.node_id);
                                (p.replicas.contains(&self.node_id), p.leader, p.leader_epoch)
                            }
                            None => continue,
                        };
                    let leader = leader_id == self.node_id;
                    if replica && self.log(&topic, partition).is_none() {
                        self.open_partition(&topic, partition).await;
                    }
                    if leader {
                        self.followers.unfollow(&topic, partition);
                        if let Some(log) = self.log(&topic, partition) {
                            log.set_leader_epoch(epoch);
                        }
                    } else if replica && leader_id >= 0 {
                        if let Some(log) = self.log(&topic, partition) {
                            log.set_leader_epoch(-1);
                        }
                        self.followers
                            .follow(self, &topic, partition, leader_id, epoch);
                    } else {
                        self.followers.unfollow(&topic, partition);
                    }
                    if !replica {
                        self.remove_replica(&topic, partition).await;
                    }
                    if topic == OFFSETS_TOPIC {
                        self.sync_coordinator(partition, leader.then_some(epoch))
                            .await;
                    }
                    if topic == TRANSACTION_STATE_TOPIC {
                        self.sync_txn_coordinator(partition, leader.then_some(epoch))
                            .await;
                    }
                }
                Change::TopicRemoved {
                    topic,
                    id,
                    partitions,
                } => {
                    tracing::info!(%topic, id = %uuid::Uuid::from_bytes(id), partitions, shard = self.id, "deleting topic");
                    self.metrics.topic_removed(&topic);
                    for p in 0..partitions {
                        self.followers.unfollow(&topic, p);
                    }
                    let owned = self.partitions.borrow_mut().remove(&topic);
                    for (partition, log) in owned.into_iter().flatten() {
                        if let Err(e) = log.delete().await {
                            tracing::error!(%topic, partition, error = %e, "cannot delete partition");
                        }
                    }
                    let coordinators: Vec<_> = self.groups.borrow().values().cloned().collect();
                    for c in coordinators {
                        let removed = c.remove_topic_offsets(&topic);
                        if removed > 0 {
                            tracing::info!(%topic, removed, shard = self.id, "removed the deleted topic's committed offsets");
                        }
                    }
                    if topic == OFFSETS_TOPIC {
                        let unloaded: Vec<_> = self.groups.borrow_mut().drain().collect();
                        for (_, c) in unloaded {
                            c.unload();
                        }
                        self.group_epochs.borrow_mut().clear();
                    }
                    if topic == TRANSACTION_STATE_TOPIC {
                        self.txn_coordinators.clear();
                    }
                }
                Change::ConfigChanged { topic } => {
                    let config = match self.image.borrow().topic(&topic) {
                        Some(t) => topic_log_config(t, &self.config),
                        None => continue,
                    };
                    if let Some(parts) = self.partitions.borrow().get(&topic) {
                        for log in parts.values() {
                            log.set_config(config.clone());
                        }
                    }
                }
            }
        }
    }

    /// Opens, `OPEN_WINDOW` at a time and each in a task of its own, the logs of the
    /// partitions `changes` make this shard a replica of, before `act_on` goes through them
    /// in order (it then finds them open). After a `kill -9` every log is recovered as it
    /// opens (its tail rescanned, its indexes checked); one at a time, 10,000 partitions
    /// took ~20 s, during which the node stayed fenced. Topics removed in the same changes
    /// are left to the ordered pass (a new topic of an old name must not open the old
    /// one's directory before the old log is deleted).
    async fn open_new_replicas(self: &Rc<Self>, changes: &[Change]) {
        // storage bounds the opens that read and write (`OPEN_IO`); the rest of a window
        // waits for the group sync that makes a recovered log durable, shared by all
        const OPEN_WINDOW: u64 = 512;
        let removed: HashSet<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::TopicRemoved { topic, .. } => Some(topic.as_str()),
                _ => None,
            })
            .collect();
        let mut seen: HashSet<(&str, i32)> = HashSet::new();
        let mut wanted: Vec<(String, i32)> = Vec::new();
        for c in changes {
            let (Change::PartitionAdded {
                topic,
                id,
                partition,
            }
            | Change::PartitionChanged {
                topic,
                id,
                partition,
            }) = c
            else {
                continue;
            };
            if removed.contains(topic.as_str())
                || shard_for(id, *partition, self.shards) != self.id
                || self.log(topic, *partition).is_some()
                || !seen.insert((topic.as_str(), *partition))
            {
                continue;
            }
            let replica = self
                .image
                .borrow()
                .partition(topic, *partition)
                .is_some_and(|p| p.replicas.contains(&self.node_id));
            if replica {
                wanted.push((topic.clone(), *partition));
            }
        }
        if wanted.len() < 2 {
            return;
        }
        let gate = Rc::new(glommio::sync::Semaphore::new(OPEN_WINDOW));
        let tasks: Vec<_> = wanted
            .into_iter()
            .map(|(topic, partition)| {
                let (me, gate) = (self.clone(), gate.clone());
                glommio::spawn_local(async move {
                    // the semaphore is never closed: a permit always comes
                    let _permit = sluice_storage::acquire_permit(&gate, 1).await;
                    if me.log(&topic, partition).is_none() {
                        me.open_partition(&topic, partition).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    }

    /// This node is not (or no longer) a replica of the partition: its log, open or left
    /// on disk from before a restart, is deleted, as Kafka deletes a replica moved away.
    async fn remove_replica(&self, topic: &str, partition: i32) {
        let open = self
            .partitions
            .borrow_mut()
            .get_mut(topic)
            .and_then(|m| m.remove(&partition));
        let log = match open {
            Some(log) => log,
            None => {
                let dir = self.config.data_dir().join(format!("{topic}-{partition}"));
                let probe = dir.clone();
                // a stat, on a blocking helper (no file-system call on the reactor)
                if !sluice_storage::run_blocking(&dir, move || probe.exists()).await {
                    return;
                }
                let config = match self.image.borrow().topic(topic) {
                    Some(t) => topic_log_config(t, &self.config),
                    None => return,
                };
                match PartitionLog::open(&self.storage, dir, config).await {
                    Ok(log) => log,
                    Err(e) => {
                        tracing::error!(%topic, partition, error = %e, "cannot open a stray replica to delete it");
                        return;
                    }
                }
            }
        };
        tracing::info!(%topic, partition, shard = self.id, "not a replica here: deleting the local log");
        if let Err(e) = log.delete().await {
            tracing::error!(%topic, partition, error = %e, "cannot delete a replica moved away");
        }
    }

    async fn open_partition(&self, topic: &str, partition: i32) {
        let (config, id, replicated) = match self.image.borrow().topic(topic) {
            Some(t) => {
                let replicas = usize::try_from(partition)
                    .ok()
                    .and_then(|p| t.parts.get(p))
                    .map_or(1, |p| p.replicas.len());
                (topic_log_config(t, &self.config), t.id, replicas > 1)
            }
            None => return,
        };
        let dir = self.config.data_dir().join(format!("{topic}-{partition}"));
        let found = partition_meta::check(dir.clone(), id).await;
        if let partition_meta::Found::Other(other) = &found {
            // a topic of the same name deleted while this node was away: its log goes
            tracing::warn!(%topic, partition, found = %other, id = %partition_meta::topic_id_string(&id),
                "the partition directory belongs to an earlier topic of this name: deleting it");
            match PartitionLog::open(&self.storage, dir.clone(), config.clone()).await {
                Ok(old) => {
                    if let Err(e) = old.delete().await {
                        tracing::error!(%topic, partition, error = %e, "cannot delete an earlier topic's log");
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(%topic, partition, error = %e, "cannot open an earlier topic's log to delete it");
                    return;
                }
            }
        }
        let opened = PartitionLog::open(&self.storage, dir, config).await;
        if let Ok(log) = &opened {
            if found != partition_meta::Found::Same {
                if let Err(e) = partition_meta::mark(log, id).await {
                    tracing::error!(%topic, partition, error = %e, "cannot write partition.metadata");
                }
            }
        }
        match opened {
            Ok(log) => {
                if replicated {
                    // the cleaner stays below the high watermark (records above it may
                    // yet be cut by a leader change); until it is known, below everything
                    log.set_clean_limit(log.log_start_offset());
                }
                self.partitions
                    .borrow_mut()
                    .entry(topic.to_string())
                    .or_default()
                    .insert(partition, log);
            }
            Err(e) => {
                tracing::error!(%topic, partition, error = %e, "cannot open partition")
            }
        }
    }

    /// Loads the group coordinator of offsets partition `partition` when this node leads it
    /// (`epoch`: its leader epoch; a coordinator loaded under another leadership is loaded
    /// again, as writes may have happened elsewhere meanwhile), drops it when it does not.
    async fn sync_coordinator(self: &Rc<Self>, partition: i32, epoch: Option<i32>) {
        let loaded = self.group_epochs.borrow().get(&partition).copied();
        if loaded.is_some() && loaded != epoch {
            let unloaded = self.groups.borrow_mut().remove(&partition);
            if let Some(c) = unloaded {
                c.unload();
            }
            self.group_epochs.borrow_mut().remove(&partition);
            tracing::info!(
                partition,
                "no longer the group coordinator of this offsets partition under this leadership"
            );
        }
        let Some(epoch) = epoch else {
            return;
        };
        if loaded == Some(epoch) {
            return;
        }
        let Some(log) = self.log(OFFSETS_TOPIC, partition) else {
            return;
        };
        // group requests meanwhile: COORDINATOR_LOAD_IN_PROGRESS (a failed load leaves
        // them NOT_COORDINATOR, as Kafka's FAILED state)
        *self
            .groups_loading
            .borrow_mut()
            .entry(partition)
            .or_default() += 1;
        self.load_group_coordinator(partition, epoch, log).await;
        let mut loading = self.groups_loading.borrow_mut();
        if let Some(n) = loading.get_mut(&partition) {
            *n -= 1;
            if *n == 0 {
                loading.remove(&partition);
            }
        }
    }

    async fn load_group_coordinator(
        self: &Rc<Self>,
        partition: i32,
        epoch: i32,
        log: PartitionLog,
    ) {
        // transactional offset commits check the producer state: build it with async
        // reads now, not synchronously on the first one
        if let Err(e) = log.load_transaction_state().await {
            tracing::error!(partition, error = %e, "cannot load the producer state of an offsets partition");
            return;
        }
        let acks = ReplicatedAcks {
            ctx: Rc::downgrade(self),
            topic: OFFSETS_TOPIC,
            partition,
            epoch,
        };
        match load_coordinator(log, group_config(&self.config), acks).await {
            Ok(c) => {
                // the leadership may have ended while the log was read
                if self.leader_epoch_here(OFFSETS_TOPIC, partition) == Some(epoch) {
                    self.groups.borrow_mut().insert(partition, c);
                    self.group_epochs.borrow_mut().insert(partition, epoch);
                }
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "cannot load group coordinator")
            }
        }
    }
}
