//! Unit tests of the node driver: a vote survives a crash, nothing is answered before it is
//! durable, a single node applies in order and snapshots, a configuration change is
//! applied and persisted, and proposals are refused where they must be.

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Message, MessageType};

use super::{Node, NodeConfig, StateMachine};
use crate::error::{Error, StateMachineError};
use crate::memfs::MemFs;
use crate::storage::{RaftStore, StoreConfig};

/// Applied entries as "index:data" lines; the snapshot is the text itself.
#[derive(Default, Debug)]
struct Lines {
    text: String,
    last: u64,
}

impl StateMachine for Lines {
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError> {
        if index <= self.last {
            return Err(format!("{index} after {}", self.last).into());
        }
        self.last = index;
        self.text
            .push_str(&format!("{index}:{}\n", String::from_utf8_lossy(data)));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateMachineError> {
        Ok(self.text.clone().into_bytes())
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError> {
        self.text = String::from_utf8(data.to_vec())?;
        self.last = index;
        Ok(())
    }
}

fn open(fs: &MemFs, id: u64, voters: &[u64], snapshot_interval: u64) -> Node<Lines> {
    let mut cfg = NodeConfig::new(id);
    cfg.snapshot_interval = snapshot_interval;
    open_with(fs, voters, &cfg)
}

fn open_with(fs: &MemFs, voters: &[u64], cfg: &NodeConfig) -> Node<Lines> {
    let mut store = RaftStore::open(fs.clone(), "/raft", StoreConfig::default()).unwrap(); // ok: test
    store.bootstrap(voters).unwrap(); // ok: test
    Node::open(cfg, store, Lines::default()).unwrap() // ok: test
}

fn vote_request(from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgRequestVote);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn vote_granted(node: &mut Node<Lines>, from: u64) -> bool {
    ask_vote(node, vote_request(from, 1, 5))
}

fn ask_vote(node: &mut Node<Lines>, request: Message) -> bool {
    let from = request.from;
    node.step(request).unwrap(); // ok: test
    let out = node.advance().unwrap(); // ok: test
    let resp = out
        .messages
        .iter()
        .find(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse)
        .expect("a vote response"); // ok: test
    assert_eq!(resp.to, from);
    !resp.reject
}

#[test]
fn a_vote_survives_a_crash() {
    let fs = MemFs::new();
    let mut node = open(&fs, 1, &[1, 2, 3], 100);
    assert!(vote_granted(&mut node, 2));
    drop(node);
    fs.crash(&mut |_| 0);
    let mut node = open(&fs, 1, &[1, 2, 3], 100);
    assert_eq!(node.status().term, 5);
    assert!(
        !vote_granted(&mut node, 3),
        "one vote per term, across restarts"
    );
}

/// The vote changes while the term does not (the term was learned from an earlier,
/// refused candidate): the vote alone must still reach the disk before the answer.
#[test]
fn a_vote_within_a_known_term_survives_a_crash() {
    let fs = MemFs::new();
    let mut cfg = NodeConfig::new(1);
    cfg.check_quorum = false;
    let mut node = open_with(&fs, &[1, 2, 3], &cfg);
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    (append.from, append.to, append.term) = (2, 1, 4);
    append.mut_entries().push(raft::eraftpb::Entry {
        index: 1,
        term: 4,
        ..Default::default()
    });
    node.step(append).unwrap(); // ok: test
    node.advance().unwrap(); // ok: test
    let request = |from: u64, log_term: u64| {
        let mut m = vote_request(from, 1, 5);
        (m.index, m.log_term) = (1, log_term);
        m
    };
    assert!(
        !ask_vote(&mut node, request(3, 3)),
        "stale log: refused, term 5 learned"
    );
    assert!(ask_vote(&mut node, request(2, 4)));
    drop(node);
    fs.crash(&mut |_| 0);
    let mut node = open_with(&fs, &[1, 2, 3], &cfg);
    assert!(
        !ask_vote(&mut node, request(3, 4)),
        "already voted for 2 in term 5"
    );
}

#[test]
fn nothing_is_answered_before_it_is_durable() {
    let fs = MemFs::new();
    let mut node = open(&fs, 1, &[1, 2, 3], 100);
    fs.fail_after(0);
    node.step(vote_request(2, 1, 5)).unwrap(); // ok: test
    assert!(matches!(node.advance(), Err(Error::Io { .. })));
    drop(node);
    fs.crash(&mut |_| 0);
    let mut node = open(&fs, 1, &[1, 2, 3], 100);
    assert_eq!(node.status().term, 0, "the unanswered vote left no trace");
    assert!(vote_granted(&mut node, 3));
}

#[test]
fn a_single_node_applies_in_order_and_snapshots() {
    let fs = MemFs::new();
    let mut node = open(&fs, 1, &[1], 4);
    node.campaign().unwrap(); // ok: test
    let out = node.advance().unwrap(); // ok: test
    assert!(node.is_leader());
    let change = out.leader.expect("leader change reported"); // ok: test
    assert_eq!(change.leader, Some(1));
    let mut seen = Vec::new();
    for i in 0..10 {
        let p = node.propose(format!("p{i}").into_bytes()).unwrap(); // ok: test
        let out = node.advance().unwrap(); // ok: test
        assert_eq!(out.committed.len(), 1);
        assert_eq!(
            (out.committed[0].index, out.committed[0].term),
            (p.index, p.term)
        );
        seen.push(p.index);
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1));
    let status = node.status();
    assert_eq!(status.applied, 11);
    assert_eq!(status.snapshot_index, 8, "every 4 applied entries");
    let before = node.state_machine().text.clone();
    drop(node);

    let mut node = open(&fs, 1, &[1], 4);
    assert_eq!(node.state_machine().last, 8, "restored from the snapshot");
    node.campaign().unwrap(); // ok: test
    let out = node.advance().unwrap(); // ok: test
    let replayed: Vec<u64> = out.committed.iter().map(|c| c.index).collect();
    assert_eq!(
        replayed,
        vec![9, 10, 11],
        "the rest is re-applied from the log"
    );
    assert_eq!(node.state_machine().text, before);
}

#[test]
fn a_conf_change_is_applied_and_persisted() {
    let fs = MemFs::new();
    let mut node = open(&fs, 1, &[1], 100);
    node.campaign().unwrap(); // ok: test
    node.advance().unwrap(); // ok: test
    let mut cc = ConfChangeV2::default();
    let mut single = ConfChangeSingle::default();
    single.set_change_type(ConfChangeType::AddLearnerNode);
    single.node_id = 2;
    cc.mut_changes().push(single);
    node.propose_conf_change(cc).unwrap(); // ok: test
    let out = node.advance().unwrap(); // ok: test
    assert!(
        out.committed.is_empty(),
        "configuration entries are not state machine input"
    );
    assert_eq!(node.store().conf_state().learners, vec![2]);
    drop(node);
    let store = RaftStore::open(fs.clone(), "/raft", StoreConfig::default()).unwrap(); // ok: test
    assert_eq!(store.conf_state().learners, vec![2]);
    assert_eq!(store.conf_state().voters, vec![1]);
}

#[test]
fn proposals_are_refused_where_they_must_be() {
    let fs = MemFs::new();
    let mut node = open(&fs, 1, &[1, 2, 3], 100);
    assert!(matches!(
        node.propose(b"x".to_vec()),
        Err(Error::NotLeader { leader: None })
    ));
    assert!(matches!(
        node.propose(Vec::new()),
        Err(Error::EmptyProposal)
    ));
    let store = RaftStore::open(MemFs::new(), "/r", StoreConfig::default()).unwrap(); // ok: test
    let mut cfg = NodeConfig::new(1);
    cfg.snapshot_interval = 0;
    assert!(Node::open(&cfg, store, Lines::default()).is_err());
}
