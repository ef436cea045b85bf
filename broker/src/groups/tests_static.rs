//! Static membership tests (KIP-345): a static member's rejoin keeps the generation and
//! fences its old member id, a failed replacement is reverted, and a static member that
//! does not rejoin stays in the generation; and the initial rebalance delay. Same
//! harness as `tests.rs`.

use kafka_protocol::messages::{GroupId, HeartbeatRequest};
use kafka_protocol::ResponseError;

use super::tests::support::*;

#[test]
fn static_member_rejoin_keeps_generation_and_fences_old_id() {
    run(|| async {
        let (log, c) = coordinator(config());
        let mut j = Join::new("gst", "", &["t"]);
        j.instance = Some("inst-1");
        let first = join_v5(&c, &j).await;
        assert_eq!(first.error_code, 0);
        let old_id = first.member_id.as_str().to_owned();
        assert!(old_id.starts_with("inst-1-"));
        let r = c
            .sync_group(
                sync_req("gst", first.generation_id, &old_id, &[(&old_id, &[7])]),
                5,
            )
            .await;
        assert_eq!(r.error_code, 0);
        // The instance restarts: same instance id, no member id, same subscription.
        let again = c.join_group(j.request(), 5, "client", "h").await;
        assert_eq!(again.error_code, 0);
        assert_eq!(again.generation_id, first.generation_id);
        let new_id = again.member_id.as_str().to_owned();
        assert_ne!(new_id, old_id);
        // Pre-KIP-814 (v5): the leader is told the old leader id, so it does not reassign.
        assert_eq!(again.leader.as_str(), old_id);
        assert_eq!(c.describe_group("gst").await.group_state.as_str(), "Stable");
        let sync = c
            .sync_group(sync_req("gst", first.generation_id, &new_id, &[]), 5)
            .await;
        assert_eq!((sync.error_code, &sync.assignment[..]), (0, &[7u8][..]));
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s("gst")))
            .with_generation_id(first.generation_id)
            .with_member_id(s(&old_id))
            .with_group_instance_id(Some(s("inst-1")));
        assert_eq!(
            c.heartbeat(hb, 4).await.error_code,
            ResponseError::FencedInstanceId.code()
        );
        let v = log.last_group_value("gst").expect("record"); // ok: test
        assert_eq!(v.members[0].member_id, new_id);
        assert_eq!(v.members[0].group_instance_id.as_deref(), Some("inst-1"));
        // v9 (KIP-814): the static leader gets members back with skip_assignment.
        let v9 = c.join_group(j.request(), 9, "client", "h").await;
        assert_eq!(v9.error_code, 0);
        assert!(v9.skip_assignment);
        assert_eq!(v9.leader, v9.member_id);
        assert_eq!(v9.members.len(), 1);
        assert_eq!(v9.generation_id, first.generation_id);
    });
}

#[test]
fn initial_rebalance_delay_collects_members_into_one_generation() {
    run(|| async {
        let mut cfg = config();
        cfg.initial_rebalance_delay_ms = 300;
        let (_log, c) = coordinator(cfg);
        let c1 = c.clone();
        let first =
            glommio::spawn_local(async move { join_v5(&c1, &Join::new("gd", "", &["t"])).await });
        // A join arriving while the initial delay runs lands in generation 1 too.
        let second = join_v5(&c, &Join::new("gd", "", &["t"])).await;
        let first = first.await;
        assert_eq!((first.generation_id, second.generation_id), (1, 1));
        assert_eq!(first.leader, second.leader);
    });
}

/// A Stable group of one static member `instance`, assigned `[assignment]`: its join
/// (for rejoining) and its first JoinGroup answer.
async fn lone_static_member(
    c: &super::GroupCoordinator,
    group: &'static str,
    instance: &'static str,
    assignment: u8,
) -> (Join<'static>, kafka_protocol::messages::JoinGroupResponse) {
    let mut j = Join::new(group, "", &["t"]);
    j.instance = Some(instance);
    let first = join_v5(c, &j).await;
    let id = first.member_id.as_str().to_owned();
    let sync = sync_req(group, first.generation_id, &id, &[(&id, &[assignment])]);
    assert_eq!(c.sync_group(sync, 5).await.error_code, 0);
    (j, first)
}

/// A static member replaced in a Stable group awaits its join while the group record is
/// written: a rebalance that completes meanwhile counts it as joined and answers it with
/// the new generation (Kafka's updateMember with the join future), rather than waiting
/// for it until the rebalance timeout and then answering the old generation.
#[test]
fn a_static_replacement_being_written_is_counted_in_a_rebalance() {
    run(|| async {
        let (log, c) = coordinator(config());
        let (j, first) = lone_static_member(&c, "gsw", "inst-w", 1).await;
        let old_id = first.member_id.as_str().to_owned();
        log.slow_ms.set(300);
        let rejoin = {
            let c = c.clone();
            let req = j.request();
            glommio::spawn_local(async move { c.join_group(req, 5, "client", "h").await })
        };
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        // a new member starts a rebalance while the replacement is being written
        let newcomer = join_v5(&c, &Join::new("gsw", "", &["t"])).await;
        assert_eq!(newcomer.error_code, 0);
        assert_eq!(newcomer.generation_id, first.generation_id + 1);
        let rejoined = rejoin.await;
        log.slow_ms.set(0);
        assert_eq!(rejoined.error_code, 0);
        assert_eq!(rejoined.generation_id, first.generation_id + 1);
        assert_ne!(rejoined.member_id.as_str(), old_id);
        assert_eq!(c.describe_group("gsw").await.members.len(), 2);
    });
}

#[test]
fn failed_static_replacement_is_reverted() {
    run(|| async {
        let (log, c) = coordinator(config());
        let (j, first) = lone_static_member(&c, "gsr", "inst-9", 3).await;
        let old_id = first.member_id.as_str().to_owned();
        // the leadership of the offsets partition was lost under the write
        log.fail
            .set(Some(ResponseError::NotLeaderOrFollower.code()));
        let again = c.join_group(j.request(), 5, "client", "h").await;
        assert_eq!(again.error_code, ResponseError::NotCoordinator.code());
        log.fail.set(None);
        // The old incarnation keeps working, as in Kafka.
        assert_eq!(heartbeat(&c, "gsr", first.generation_id, &old_id).await, 0);
        let d = c.describe_group("gsr").await;
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].member_id.as_str(), old_id);
    });
}

#[test]
fn static_member_that_does_not_rejoin_stays_in_the_generation() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let mut tasks = Vec::new();
        for inst in [None, Some("static-1")] {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut j = Join::new("gk", "", &["t"]);
                j.instance = inst;
                j.rebalance_ms = 50;
                join_v5(&c, &j).await
            }));
        }
        let dynamic = tasks.remove(0).await;
        let stat = tasks.remove(0).await;
        let dyn_id = dynamic.member_id.as_str().to_owned();
        // The dynamic member forces a rebalance; the static one (long session) is silent.
        let mut j = Join::new("gk", &dyn_id, &["t", "u"]);
        j.rebalance_ms = 50;
        let r = c.join_group(j.request(), 5, "c", "h").await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, dynamic.generation_id + 1);
        // Kafka keeps static members across a rebalance they miss; the leader (the member
        // that rejoined) assigns for both.
        assert_eq!(r.leader.as_str(), dyn_id);
        let ids: Vec<&str> = r.members.iter().map(|m| m.member_id.as_str()).collect();
        assert!(ids.contains(&stat.member_id.as_str()), "{ids:?}");
        assert_eq!(ids.len(), 2);
    });
}
