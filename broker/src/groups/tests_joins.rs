//! JoinGroup of a member that already has one parked: the earlier is answered, told to
//! join again, and the later one takes its place in the rebalance. Same harness as
//! `tests.rs`.

use std::time::Duration;

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
