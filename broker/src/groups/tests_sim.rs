//! Randomised simulation of the group state machine: a handful of clients join, sync,
//! heartbeat, leave and go silent in a seeded random order, with short timeouts so that
//! expiry and rebalance timeouts fire too. After every step the coordinator's invariants are
//! checked, and every answer is checked against the others of its generation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::LeaveGroupRequest;
use kafka_protocol::ResponseError;

use super::state::GroupState;
use super::tests::support::*;
use super::GroupCoordinator;

#[derive(Clone, Default)]
struct Client {
    member_id: String,
    generation: i32,
    leader: String,
    members: Vec<String>,
    busy: bool,
}

#[derive(Default)]
struct Observed {
    /// generation -> leader every successful JoinGroup of that generation reported
    leaders: HashMap<i32, String>,
    /// (generation, member) -> assignment every successful SyncGroup reported
    assignments: HashMap<(i32, String), Vec<u8>>,
}

fn check_invariants(c: &GroupCoordinator, last_generation: &mut i32) {
    let st = c.state.borrow();
    let Some(g) = st.groups.get("sim") else {
        return;
    };
    assert!(
        g.generation_id >= *last_generation,
        "generation went backwards"
    );
    *last_generation = g.generation_id;
    if let Some(l) = &g.leader_id {
        assert!(
            g.members.is_empty() || g.members.contains_key(l),
            "leader not a member"
        );
    }
    for (inst, id) in &g.static_members {
        assert_eq!(
            g.members
                .get(id)
                .and_then(|m| m.group_instance_id.as_deref()),
            Some(inst.as_str())
        );
    }
    assert!(g.pending_sync.iter().all(|id| g.members.contains_key(id)));
    match g.state {
        GroupState::Empty => assert!(g.members.is_empty()),
        GroupState::CompletingRebalance | GroupState::Stable => {
            assert!(!g.members.is_empty());
            assert!(g.protocol_name.is_some());
            assert!(g.members.values().all(|m| m.awaiting_join.is_none()));
        }
        GroupState::PreparingRebalance => {}
        GroupState::Dead => panic!("Dead group left in the map"),
    }
    if !g.is(GroupState::CompletingRebalance) {
        assert!(g.members.values().all(|m| m.awaiting_sync.is_none()));
    }
}

#[test]
fn random_membership_churn_keeps_invariants() {
    for seed in [1u64, 7, 42] {
        run(move || async move {
            let mut cfg = config();
            cfg.initial_rebalance_delay_ms = 5;
            let (_log, c) = coordinator(cfg);
            let clients: Rc<RefCell<Vec<Client>>> =
                Rc::new(RefCell::new(vec![Client::default(); 4]));
            let observed = Rc::new(RefCell::new(Observed::default()));
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut last_generation = 0;
            let mut tasks = Vec::new();
            for _ in 0..400 {
                let i = (next() % 4) as usize;
                let action = next() % 10;
                let client = clients.borrow()[i].clone();
                if client.busy {
                    glommio::timer::sleep(Duration::from_millis(next() % 3)).await;
                    check_invariants(&c, &mut last_generation);
                    continue;
                }
                match action {
                    // (re)join, with the current member id if any
                    0..=2 => {
                        clients.borrow_mut()[i].busy = true;
                        let (c, clients, observed) = (c.clone(), clients.clone(), observed.clone());
                        tasks.push(glommio::spawn_local(async move {
                            let mut j = Join::new("sim", &client.member_id, &["t"]);
                            j.session_ms = 40;
                            j.rebalance_ms = 40;
                            let r = join_v5(&c, &j).await;
                            let mut cl = clients.borrow_mut();
                            cl[i].busy = false;
                            if r.error_code == 0 {
                                let leader = r.leader.as_str().to_owned();
                                let seen = observed
                                    .borrow_mut()
                                    .leaders
                                    .entry(r.generation_id)
                                    .or_insert(leader.clone())
                                    .clone();
                                assert_eq!(
                                    seen, leader,
                                    "two leaders in generation {}",
                                    r.generation_id
                                );
                                cl[i] = Client {
                                    member_id: r.member_id.as_str().to_owned(),
                                    generation: r.generation_id,
                                    leader,
                                    members: r
                                        .members
                                        .iter()
                                        .map(|m| m.member_id.as_str().to_owned())
                                        .collect(),
                                    busy: false,
                                };
                            } else {
                                cl[i] = Client::default();
                            }
                        }));
                    }
                    // sync (the leader assigns each member its id's length as one byte)
                    3..=5 if !client.member_id.is_empty() => {
                        clients.borrow_mut()[i].busy = true;
                        let (c, clients, observed) = (c.clone(), clients.clone(), observed.clone());
                        tasks.push(glommio::spawn_local(async move {
                            let assignment: Vec<(String, Vec<u8>)> =
                                if client.member_id == client.leader {
                                    client
                                        .members
                                        .iter()
                                        .map(|m| (m.clone(), vec![m.len() as u8]))
                                        .collect()
                                } else {
                                    Vec::new()
                                };
                            let a: Vec<(&str, &[u8])> = assignment
                                .iter()
                                .map(|(m, b)| (m.as_str(), b.as_slice()))
                                .collect();
                            let r = c
                                .sync_group(
                                    sync_req("sim", client.generation, &client.member_id, &a),
                                    5,
                                )
                                .await;
                            clients.borrow_mut()[i].busy = false;
                            if r.error_code == 0 {
                                assert_eq!(
                                    r.assignment.len(),
                                    1,
                                    "a synced member got no assignment"
                                );
                                assert_eq!(usize::from(r.assignment[0]), client.member_id.len());
                                let key = (client.generation, client.member_id.clone());
                                let mut obs = observed.borrow_mut();
                                let seen =
                                    obs.assignments.entry(key).or_insert(r.assignment.to_vec());
                                assert_eq!(&seen[..], &r.assignment[..]);
                            }
                        }));
                    }
                    6..=7 if !client.member_id.is_empty() => {
                        let e = heartbeat(&c, "sim", client.generation, &client.member_id).await;
                        if e == ResponseError::UnknownMemberId.code() {
                            clients.borrow_mut()[i] = Client::default();
                        }
                    }
                    8 if !client.member_id.is_empty() => {
                        let req = LeaveGroupRequest::default()
                            .with_group_id(GroupId(s("sim")))
                            .with_member_id(s(&client.member_id));
                        c.leave_group(req, 1).await;
                        clients.borrow_mut()[i] = Client::default();
                    }
                    _ => {
                        // silence: let timers run
                        glommio::timer::sleep(Duration::from_millis(next() % 5)).await;
                    }
                }
                check_invariants(&c, &mut last_generation);
            }
            for t in tasks {
                t.await;
                check_invariants(&c, &mut last_generation);
            }
            let synced = observed.borrow().assignments.len();
            eprintln!("seed {seed}: {last_generation} generations, {synced} syncs");
            assert!(
                last_generation > 1,
                "seed {seed}: no rebalance ever happened"
            );
            assert!(synced > 0, "seed {seed}: no SyncGroup ever succeeded");
        });
    }
}
