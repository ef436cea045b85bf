//! The channel mesh between shards: one bounded single-producer channel for every ordered
//! pair of shards, all created on the main thread before the executors start.
//!
//! Why not glommio's `MeshBuilder`: it keeps its peer list in an `Rc` and is marked `Send`,
//! so every shard clones and drops that `Rc` on its own thread. Two shards starting at the
//! same moment race on the non-atomic count; the list was freed while still in use and the
//! stale increment corrupted the allocator (`malloc(): unaligned tcache chunk detected`,
//! in about one run of three of the durability tests). Here every channel end is created
//! once, moved to exactly one shard, and never cloned: each `Rc` inside lives on a single
//! thread. The hand-over is the only lock: taken once per shard at startup, before any
//! message flows; shards then talk only through their channels.

use std::sync::{Arc, Mutex};

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

/// One shard's unconnected channel ends, as handed over by the main thread.
pub(crate) struct MeshEnds<T: Send + 'static> {
    /// This shard's index, 0..shards.
    pub(crate) id: usize,
    /// `senders[to]`: the channel to shard `to` (None for this shard itself).
    senders: Vec<Option<SharedSender<T>>>,
    /// `receivers[from]`: the channel from shard `from` (None for this shard itself).
    receivers: Vec<Option<SharedReceiver<T>>>,
}

/// One shard's connected channel ends.
pub(crate) struct Links<T: Send + 'static> {
    pub(crate) id: usize,
    /// Indexed by destination shard; None for this shard.
    pub(crate) senders: Vec<Option<ConnectedSender<T>>>,
    /// (source shard, receiver) for every other shard.
    pub(crate) receivers: Vec<(usize, ConnectedReceiver<T>)>,
}

/// The ends of every shard, waiting to be claimed by the shard threads.
pub(crate) struct Mesh<T: Send + 'static> {
    unclaimed: Mutex<Vec<MeshEnds<T>>>,
}

impl<T: Send + 'static> Mesh<T> {
    /// Creates the full mesh for `shards` shards, each channel holding `capacity` messages.
    pub(crate) fn new(shards: usize, capacity: usize) -> Arc<Self> {
        let mut ends: Vec<MeshEnds<T>> = (0..shards)
            .map(|id| MeshEnds {
                id,
                senders: (0..shards).map(|_| None).collect(),
                receivers: (0..shards).map(|_| None).collect(),
            })
            .collect();
        for from in 0..shards {
            for to in 0..shards {
                if from != to {
                    let (tx, rx) = shared_channel::new_bounded(capacity);
                    ends[from].senders[to] = Some(tx);
                    ends[to].receivers[from] = Some(rx);
                }
            }
        }
        Arc::new(Self {
            unclaimed: Mutex::new(ends),
        })
    }

    /// Takes one shard's ends; each call gets a different shard id. None once all are taken.
    pub(crate) fn claim(&self) -> Option<MeshEnds<T>> {
        // a poisoned lock only means another shard panicked while claiming; the Vec is intact
        let mut unclaimed = self
            .unclaimed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        unclaimed.pop()
    }
}

impl<T: Send + 'static> MeshEnds<T> {
    /// Connects every end on the calling executor. All connections are started before any is
    /// awaited: a sender's connect completes only once its peer connected the receiver.
    pub(crate) async fn connect(self) -> Links<T> {
        let senders: Vec<_> = self
            .senders
            .into_iter()
            .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
            .collect();
        let receivers: Vec<_> = self
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(from, rx)| rx.map(|rx| (from, glommio::spawn_local(rx.connect()))))
            .collect();
        let mut links = Links {
            id: self.id,
            senders: Vec::with_capacity(senders.len()),
            receivers: Vec::with_capacity(receivers.len()),
        };
        for tx in senders {
            links.senders.push(match tx {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        for (from, task) in receivers {
            links.receivers.push((from, task.await));
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

    /// Every shard gets a distinct id and can reach every other shard, both ways.
    #[test]
    fn every_pair_of_shards_is_connected_both_ways() {
        let shards = 3;
        let mesh = Mesh::<(usize, usize)>::new(shards, 16);
        let results = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(shards))
            .on_all_shards(move || {
                let mesh = mesh.clone();
                async move {
                    let ends = mesh.claim().expect("an unclaimed shard"); // ok: test
                    let links = ends.connect().await;
                    for (to, tx) in links.senders.iter().enumerate() {
                        match tx {
                            Some(tx) => tx.send((links.id, to)).await.expect("send"), // ok: test
                            None => assert_eq!(to, links.id),
                        }
                    }
                    let mut got = Vec::new();
                    for (from, rx) in &links.receivers {
                        let (src, dst) = rx.recv().await.expect("a message"); // ok: test
                        assert_eq!((src, dst), (*from, links.id));
                        got.push(src);
                    }
                    (links.id, got)
                }
            })
            .expect("executors") // ok: test
            .join_all();
        let mut ids: Vec<usize> = Vec::new();
        for r in results {
            let (id, got) = r.expect("shard result"); // ok: test
            assert_eq!(got.len(), shards - 1);
            ids.push(id);
        }
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2]);
    }
}
