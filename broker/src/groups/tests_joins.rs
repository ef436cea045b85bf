//! JoinGroup tests: KIP-394's member id round trip, one generation for several members
//! (the protocol by votes), rejoins in a stable group, a member that does not rejoin, and
//! a member that already has a JoinGroup parked (the earlier is told to join again).
//! Same harness as `tests.rs`.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::tests::support::*;

#[test]
fn a_superseded_join_is_told_to_join_again_and_keeps_its_member_id() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                join_v5(&c, &Join::new("gsup", "", &["t"])).await
            }));
        }
        let a = tasks.remove(0).await;
        let b = tasks.remove(0).await;
        let (ida, idb) = (a.member_id.to_string(), b.member_id.to_string());
        // A rejoins with new metadata: the rebalance waits for B, A's join parks
        let rejoin = |c: std::rc::Rc<super::GroupCoordinator>, id: String| {
            glommio::spawn_local(async move {
                let j = Join::new("gsup", &id, &["t", "u"]);
                c.join_group(j.request(), 5, "client", "h").await
            })
        };
        let first = rejoin(c.clone(), ida.clone());
        glommio::timer::sleep(Duration::from_millis(50)).await;
        // A's second JoinGroup (another connection, or a client that pipelines)
        let second = rejoin(c.clone(), ida.clone());
        let first = first.await;
        assert_eq!(
            first.error_code,
            ResponseError::RebalanceInProgress.code(),
            "{first:?}"
        );
        assert_eq!(first.member_id.as_str(), ida);
        // B rejoins: the rebalance completes with A's second join
        let rb = c
            .join_group(Join::new("gsup", &idb, &["t"]).request(), 5, "client", "h")
            .await;
        assert_eq!(rb.error_code, 0);
        let second = second.await;
        assert_eq!(second.error_code, 0);
        assert_eq!(second.generation_id, a.generation_id + 1);
        assert_eq!(second.member_id.as_str(), ida);
    });
}

#[test]
fn kip394_member_id_required_round_trip() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let j = Join::new("g", "", &["t"]);
        let first = c.join_group(j.request(), 5, "client-1", "/10.0.0.1").await;
        assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
        assert_eq!(first.generation_id, -1);
        let id = first.member_id.as_str().to_owned();
        assert!(id.starts_with("client-1-"), "{id}");
        // An unknown id (not the handed-out one) is rejected.
        let bogus = Join::new("g", "nobody", &["t"]);
        let r = c.join_group(bogus.request(), 5, "client-1", "h").await;
        assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
        let second = Join::new("g", &id, &["t"]);
        let r = c
            .join_group(second.request(), 5, "client-1", "/10.0.0.1")
            .await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.member_id.as_str(), id);
        assert_eq!(r.leader.as_str(), id);
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
        // v3 clients join without the round trip.
        let old = Join::new("g-old", "", &["t"]);
        let r = c.join_group(old.request(), 3, "c", "h").await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, 1);
    });
}

#[test]
fn three_members_one_generation_protocol_by_votes() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let prefs: [&[&str]; 3] = [
            &["range", "roundrobin"],
            &["roundrobin", "range"],
            &["roundrobin", "range"],
        ];
        let mut tasks = Vec::new();
        for (i, p) in prefs.iter().enumerate() {
            let c = c.clone();
            let names: Vec<&'static str> = p.to_vec();
            tasks.push(glommio::spawn_local(async move {
                let meta = Bytes::from(vec![i as u8; 3]);
                let mut j = Join::new("g3", "", &[]);
                j.protocols = names.iter().map(|n| (*n, meta.clone())).collect();
                join_v5(&c, &j).await
            }));
        }
        let mut rs = Vec::new();
        for t in tasks {
            rs.push(t.await);
        }
        let leader = rs[0].leader.as_str().to_owned();
        for r in &rs {
            assert_eq!(r.error_code, 0);
            assert_eq!(r.generation_id, 1);
            assert_eq!(r.leader.as_str(), leader);
            assert_eq!(
                r.protocol_name.as_ref().map(|p| p.as_str()),
                Some("roundrobin")
            );
            if r.member_id.as_str() == leader {
                assert_eq!(r.members.len(), 3);
                for m in &r.members {
                    assert_eq!(m.metadata.len(), 3);
                }
            } else {
                assert!(r.members.is_empty());
            }
        }
        let d = c.describe_group("g3").await;
        assert_eq!(d.group_state.as_str(), "CompletingRebalance");
        assert_eq!(d.members.len(), 3);
    });
}

#[test]
fn in_a_stable_group_a_follower_rejoins_in_place_and_the_leader_starts_a_rebalance() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let (generation, ids, leader) = stable_group(&c, "gs", 2, &["t"]).await;
        let follower = ids
            .iter()
            .find(|id| **id != leader)
            .cloned()
            .expect("2 members"); // ok: test

        // Kafka's doCurrentMemberJoinGroup, Stable: a follower with unchanged metadata is
        // answered the current generation at once, and nothing rebalances...
        let j = Join::new("gs", &follower, &["t"]);
        let r = c.join_group(j.request(), 5, "c", "h").await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, generation);
        assert_eq!(r.leader.as_str(), leader);
        assert!(r.members.is_empty());
        assert_eq!(c.describe_group("gs").await.group_state.as_str(), "Stable");
        assert_eq!(heartbeat(&c, "gs", generation, &follower).await, 0);
        // ...while the leader's JoinGroup starts one (the leader may ask for a new
        // assignment), which the others learn of from their heartbeats. kafka-python
        // 3.0.12 sends such a JoinGroup when it drops a join that finished outside poll().
        let (c2, l) = (c.clone(), leader.clone());
        let rejoin = glommio::spawn_local(async move {
            let j = Join::new("gs", &l, &["t"]);
            c2.join_group(j.request(), 5, "c", "h").await
        });
        for _ in 0..100 {
            if c.describe_group("gs").await.group_state.as_str() == "PreparingRebalance" {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            heartbeat(&c, "gs", generation, &follower).await,
            ResponseError::RebalanceInProgress.code()
        );
        let j = Join::new("gs", &follower, &["t"]);
        let r = c.join_group(j.request(), 5, "c", "h").await;
        assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
        let r = rejoin.await;
        assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
        assert_eq!(r.leader.as_str(), leader);
        assert_eq!(r.members.len(), 2);
    });
}

#[test]
fn member_that_does_not_rejoin_is_removed_at_rebalance_timeout() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut j = Join::new("gr", "", &["t"]);
                j.rebalance_ms = 50;
                join_v5(&c, &j).await
            }));
        }
        let a = tasks.remove(0).await;
        let b = tasks.remove(0).await;
        let ida = a.member_id.as_str().to_owned();
        let idb = b.member_id.as_str().to_owned();
        // A forces a new rebalance by rejoining with new metadata; B (long session) never
        // rejoins, so the rebalance completes at the rebalance timeout without it.
        let mut j = Join::new("gr", &ida, &["t", "u"]);
        j.rebalance_ms = 50;
        let r = c.join_group(j.request(), 5, "c", "h").await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, a.generation_id + 1);
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.leader.as_str(), ida);
        let d = c.describe_group("gr").await;
        assert!(d.members.iter().all(|m| m.member_id.as_str() != idb));
    });
}
