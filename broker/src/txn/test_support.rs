//! Fakes and helpers for the coordinator tests: an in-memory `TxnLog`, partition leaders
//! answering markers (with scripted failures and a hold switch), a producer-id counter and
//! a manual clock, wired to a coordinator in a `Harness`; `run` drives a test inside a
//! glommio LocalExecutor, as the coordinator runs in production.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::records::{decode_key, TxnLogValue, TxnState};
use super::{
    Clock, MarkerRequest, MarkerResults, MarkerWriter, ProducerIds, TransactionCoordinator,
    TxnConfig, TxnIo, TxnLog, TxnLogError,
};

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

/// One clock for the log's and the markers' call sequence numbers, so tests can order
/// writes and markers.
#[derive(Default)]
pub(crate) struct Seq(Cell<u64>);

impl Seq {
    pub(crate) fn next(&self) -> u64 {
        let n = self.0.get() + 1;
        self.0.set(n);
        n
    }
}

/// In-memory `__transaction_state`; records land at call time (call order).
pub(crate) struct MemLog {
    pub(crate) seq: Rc<Seq>,
    pub(crate) records: RefCell<Vec<(u64, Bytes, Option<Bytes>)>>,
    /// The next appends fail with these (before landing), one per append.
    pub(crate) fail: RefCell<VecDeque<TxnLogError>>,
}

impl TxnLog for MemLog {
    fn append(
        &self,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Pin<Box<dyn Future<Output = Result<(), TxnLogError>>>> {
        if let Some(e) = self.fail.borrow_mut().pop_front() {
            return Box::pin(async move { Err(e) });
        }
        let n = self.seq.next();
        self.records
            .borrow_mut()
            .extend(records.into_iter().map(|(k, v)| (n, k, v)));
        Box::pin(async {
            glommio::timer::sleep(Duration::from_millis(1)).await;
            Ok(())
        })
    }
}

impl MemLog {
    /// Every record as (sequence, id, value); values decoded.
    pub(crate) fn decoded(&self) -> Vec<(u64, String, Option<TxnLogValue>)> {
        self.records
            .borrow()
            .iter()
            .map(|(n, k, v)| {
                let id = decode_key(k).expect("own key"); // ok: test
                let v = v
                    .as_ref()
                    .map(|v| TxnLogValue::decode(v).expect("own value")); // ok: test
                (*n, id, v)
            })
            .collect()
    }

    /// The states written for `id`, in order (None = tombstone).
    pub(crate) fn states(&self, id: &str) -> Vec<Option<TxnState>> {
        self.decoded()
            .into_iter()
            .filter(|(_, i, _)| i == id)
            .map(|(_, _, v)| v.map(|v| v.state))
            .collect()
    }

    pub(crate) fn last(&self, id: &str) -> Option<TxnLogValue> {
        self.decoded()
            .into_iter()
            .rev()
            .find(|(_, i, _)| i == id)
            .and_then(|(_, _, v)| v)
    }

    pub(crate) fn replay(&self) -> Vec<(Bytes, Option<Bytes>)> {
        self.records
            .borrow()
            .iter()
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One WriteTxnMarkers call: its sequence number, the request, the answer.
pub(crate) type MarkerCall = (u64, MarkerRequest, Vec<(String, i32, i16)>);

/// Partition leaders: answer 0 unless an error is queued for the partition; `hold`
/// keeps every call waiting until it is cleared.
pub(crate) struct FakeMarkers {
    pub(crate) seq: Rc<Seq>,
    pub(crate) calls: RefCell<Vec<MarkerCall>>,
    pub(crate) errors: RefCell<HashMap<(String, i32), VecDeque<i16>>>,
    pub(crate) hold: Rc<Cell<bool>>,
}

impl MarkerWriter for FakeMarkers {
    fn write_markers(&self, m: MarkerRequest) -> Pin<Box<dyn Future<Output = MarkerResults>>> {
        let answer: Vec<(String, i32, i16)> = m
            .partitions
            .iter()
            .map(|(t, p)| {
                let e = self
                    .errors
                    .borrow_mut()
                    .get_mut(&(t.clone(), *p))
                    .and_then(|q| q.pop_front())
                    .unwrap_or(0);
                (t.clone(), *p, e)
            })
            .collect();
        let n = self.seq.next();
        self.calls.borrow_mut().push((n, m, answer.clone()));
        let hold = self.hold.clone();
        Box::pin(async move {
            glommio::timer::sleep(Duration::from_millis(1)).await;
            while hold.get() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            answer
        })
    }
}

impl FakeMarkers {
    pub(crate) fn fail(&self, topic: &str, partition: i32, codes: &[i16]) {
        self.errors
            .borrow_mut()
            .entry((topic.to_owned(), partition))
            .or_default()
            .extend(codes.iter().copied());
    }

    pub(crate) fn requests(&self) -> Vec<MarkerRequest> {
        self.calls
            .borrow()
            .iter()
            .map(|(_, m, _)| m.clone())
            .collect()
    }
}

pub(crate) struct FakeIds {
    pub(crate) next: Cell<i64>,
    pub(crate) fail: Cell<Option<i16>>,
}

impl ProducerIds for FakeIds {
    fn allocate(&self) -> Pin<Box<dyn Future<Output = Result<i64, i16>>>> {
        let r = match self.fail.get() {
            Some(e) => Err(e),
            None => {
                let id = self.next.get();
                self.next.set(id + 1);
                Ok(id)
            }
        };
        Box::pin(async move { r })
    }
}

pub(crate) struct ManualClock(pub(crate) Cell<i64>);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

pub(crate) const COORDINATOR_EPOCH: i32 = 5;

pub(crate) struct Harness {
    pub(crate) log: Rc<MemLog>,
    pub(crate) markers: Rc<FakeMarkers>,
    pub(crate) ids: Rc<FakeIds>,
    pub(crate) clock: Rc<ManualClock>,
    pub(crate) c: Rc<TransactionCoordinator>,
}

pub(crate) fn config() -> TxnConfig {
    TxnConfig {
        marker_retry_backoff_ms: 2,
        ..TxnConfig::default()
    }
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness::load(Vec::new(), config())
    }

    pub(crate) fn load(replay: Vec<(Bytes, Option<Bytes>)>, config: TxnConfig) -> Harness {
        let seq = Rc::new(Seq::default());
        let log = Rc::new(MemLog {
            seq: seq.clone(),
            records: RefCell::new(Vec::new()),
            fail: RefCell::new(VecDeque::new()),
        });
        let markers = Rc::new(FakeMarkers {
            seq,
            calls: RefCell::new(Vec::new()),
            errors: RefCell::new(HashMap::new()),
            hold: Rc::new(Cell::new(false)),
        });
        let ids = Rc::new(FakeIds {
            next: Cell::new(1000),
            fail: Cell::new(None),
        });
        let clock = Rc::new(ManualClock(Cell::new(1_000_000)));
        let io = TxnIo {
            log: log.clone(),
            markers: markers.clone(),
            producer_ids: ids.clone(),
            clock: clock.clone(),
        };
        let c = TransactionCoordinator::load(3, COORDINATOR_EPOCH, io, config, replay);
        Harness {
            log,
            markers,
            ids,
            clock,
            c,
        }
    }

    pub(crate) async fn init_v(
        &self,
        id: &str,
        timeout: i32,
        expected: (i64, i16),
        version: i16,
    ) -> (i16, i64, i16) {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(timeout)
            .with_producer_id(ProducerId(expected.0))
            .with_producer_epoch(expected.1);
        let r = self.c.init_producer_id(&req, version).await;
        (r.error_code, r.producer_id.0, r.producer_epoch)
    }

    pub(crate) async fn init(&self, id: &str) -> (i16, i64, i16) {
        self.init_v(id, 60_000, (-1, -1), 4).await
    }

    /// AddPartitionsToTxn v3 (the client form); the one code all partitions got.
    pub(crate) async fn add_v(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(&str, i32)],
        version: i16,
    ) -> i16 {
        let mut by_topic: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for (t, p) in parts {
            match by_topic.iter_mut().find(|x| x.name.0.as_str() == *t) {
                Some(x) => x.partitions.push(*p),
                None => by_topic.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(vec![*p]),
                ),
            }
        }
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(by_topic);
        let r = self.c.add_partitions_to_txn(&req, version).await;
        let codes: BTreeSet<i16> = r
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            })
            .collect();
        let n: usize = r
            .results_by_topic_v3_and_below
            .iter()
            .map(|t| t.results_by_partition.len())
            .sum();
        assert_eq!(n, parts.len(), "one result per partition");
        assert_eq!(codes.len(), 1, "one code for the transaction: {codes:?}");
        codes.into_iter().next().unwrap_or(-1)
    }

    pub(crate) async fn add(&self, id: &str, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> i16 {
        self.add_v(id, pid, epoch, parts, 3).await
    }

    pub(crate) async fn end_v(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        version: i16,
    ) -> i16 {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        self.c.end_txn(&req, version).await.error_code
    }

    pub(crate) async fn end(&self, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
        self.end_v(id, pid, epoch, commit, 3).await
    }

    pub(crate) fn state(&self, id: &str) -> Option<TxnState> {
        self.c.txns.borrow().get(id).map(|m| m.state)
    }

    /// Waits (up to 2 s) until `id` is in `state`.
    pub(crate) async fn wait_state(&self, id: &str, state: TxnState) {
        for _ in 0..2000 {
            if self.state(id) == Some(state) && self.pending(id).is_none() {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        panic!("{id} never reached {state:?}; it is {:?}", self.state(id));
    }

    pub(crate) fn pending(&self, id: &str) -> Option<TxnState> {
        self.c.txns.borrow().get(id).and_then(|m| m.pending)
    }

    pub(crate) fn epoch(&self, id: &str) -> i16 {
        self.c
            .txns
            .borrow()
            .get(id)
            .map_or(-9, |m| m.producer_epoch)
    }
}

pub(crate) fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("spawn executor"); // ok: test setup
    handle.join().expect("executor panicked"); // ok: test
}

pub(crate) fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    let set: BTreeSet<(String, i32)> = list.iter().map(|(t, p)| (t.to_string(), *p)).collect();
    set.into_iter().collect()
}
