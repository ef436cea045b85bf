//! Shard 0's wait, at start, until this broker is in service (unfenced by its controller
//! quorum), and the test `/ready` shares with it.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use crate::config::BrokerConfig;
use crate::shard::ShardCtx;

/// Shard 0, at start: waits until the controller has unfenced this process's broker
/// incarnation (it registered
/// and its shards caught up with the metadata log) and, for a single node, until the
/// offsets topic exists, so the first clients find it in service. A single node serves
/// what it has after a bound; a node of a cluster waits for its quorum (below).
pub(super) async fn wait_until_in_service(
    ctx: &Rc<ShardCtx>,
    config: &BrokerConfig,
    incarnation: &[u8],
    stopped: &std::cell::Cell<bool>,
) {
    let election =
        Duration::from_millis(config.int("controller.quorum.election.timeout.ms") as u64);
    let bound = (election * 3).max(Duration::from_secs(10));
    let started = std::time::Instant::now();
    let mut deadline = started + bound;
    // A node of a cluster serves nothing until its controller quorum has unfenced it, as
    // a KRaft broker: one that served the metadata it had would lead partitions whose
    // leadership moved while it was down, and acknowledge writes the real leader's log
    // later truncates (an exploratory run lost acks=1 records so, restarting one node
    // while the other two were down). A single node (no voters configured) serves after
    // the bound: it is its own quorum, and nothing it has can be stale.
    let single = config.single_node();
    loop {
        if in_service(ctx, incarnation) {
            tracing::info!(node = ctx.node_id, "broker in service");
            return;
        }
        // a stop (SIGTERM) while waiting ends the wait: the start goes on straight into
        // the shutdown (a node of a cluster may otherwise wait here for good)
        if stopped.get() {
            tracing::info!(
                node = ctx.node_id,
                "stopping before this broker was in service"
            );
            return;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            if single {
                tracing::warn!(
                    node = ctx.node_id,
                    waited_ms = bound.as_millis() as u64,
                    "not unfenced by the controller yet; serving the metadata this node has"
                );
                return;
            }
            tracing::warn!(
                node = ctx.node_id,
                waited_ms = now.duration_since(started).as_millis() as u64,
                "not unfenced by an active controller yet (is a majority of the controller quorum up?); not serving until it is"
            );
            deadline = now + bound;
        }
        future::or(
            ctx.metadata_progress.wait(),
            glommio::timer::sleep(Duration::from_millis(50)),
        )
        .await;
    }
}

/// True when the image shows this process's broker incarnation registered and unfenced
/// (and, for a single node, the offsets topic created): the broker is in service.
pub(crate) fn in_service(ctx: &ShardCtx, incarnation: &[u8]) -> bool {
    let single = ctx.config.single_node();
    let image = ctx.image.borrow();
    image
        .broker(ctx.node_id)
        .is_some_and(|b| !b.fenced && b.incarnation == incarnation)
        && (!single || image.topic(crate::groups::OFFSETS_TOPIC).is_some())
}
