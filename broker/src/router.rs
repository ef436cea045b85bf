//! Cross-shard calls over a glommio channel mesh. A shard submits a `ShardRequest` to the
//! owner of the data; the owner runs the synchronous part of the request in arrival order
//! (so appends from one connection keep their order), then answers when the rest completes.
//!
//! ```text
//!  shard A: submit(B, req) ──mesh──► shard B recv loop: start(req) [sync part, in order]
//!        ▲                                        │ spawn rest
//!        └──────── Resp{id} ◄──mesh──────────────┘
//! ```
//! Responses are matched to callers by id in a shard-local table; nothing is shared.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use crate::shard_msg::{ShardRequest, ShardResponse};

/// What travels on the mesh.
pub(crate) enum Envelope {
    Req {
        id: u64,
        from: usize,
        body: ShardRequest,
    },
    Resp {
        id: u64,
        body: ShardResponse,
    },
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A shard-local one-shot slot.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// Receiving end of a local one-shot.
pub(crate) struct Reply<T>(Rc<RefCell<Slot<T>>>);

impl<T> Future for Reply<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.0.borrow_mut();
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn complete<T>(slot: &Rc<RefCell<Slot<T>>>, value: Option<T>) {
    let mut s = slot.borrow_mut();
    s.value = value;
    s.closed = true;
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// Owned by one shard; never crosses cores.
pub(crate) struct Router {
    pub(crate) shard_id: usize,
    /// Indexed by destination shard; None for this shard.
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    pending: RefCell<HashMap<u64, Rc<RefCell<Slot<ShardResponse>>>>>,
    next_id: Cell<u64>,
}

impl Router {
    pub(crate) fn new(shard_id: usize, senders: Vec<Option<ConnectedSender<Envelope>>>) -> Self {
        Self {
            shard_id,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        }
    }

    /// Sends `body` to `shard` (not this one). Resolves once the request is queued on the
    /// mesh; the returned future resolves with the answer (`None` if the peer went away).
    pub(crate) async fn send(&self, shard: usize, body: ShardRequest) -> Reply<ShardResponse> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot = Rc::new(RefCell::new(Slot {
            value: None,
            waker: None,
            closed: false,
        }));
        self.pending.borrow_mut().insert(id, slot.clone());
        let env = Envelope::Req {
            id,
            from: self.shard_id,
            body,
        };
        if self.send_to(shard, env).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            complete(&slot, None);
        }
        Reply(slot)
    }

    /// Answers a request that came from `to`.
    pub(crate) async fn respond(&self, to: usize, id: u64, body: ShardResponse) {
        if self.send_to(to, Envelope::Resp { id, body }).await.is_err() {
            tracing::debug!(to, id, "peer shard gone; dropping response");
        }
    }

    /// Queues `env` on the channel to `shard`; Err if there is none or the peer is gone.
    async fn send_to(&self, shard: usize, env: Envelope) -> Result<(), ()> {
        match self.senders.get(shard) {
            Some(Some(tx)) => tx.send(env).await.map_err(|_| ()),
            _ => Err(()),
        }
    }

    fn resolve(&self, id: u64, body: ShardResponse) {
        if let Some(slot) = self.pending.borrow_mut().remove(&id) {
            complete(&slot, Some(body));
        }
    }
}

/// Runs this shard's receive loops: requests are started in arrival order by `start`,
/// responses resolve pending calls.
pub(crate) fn spawn_receivers<F>(
    receivers: Vec<(usize, ConnectedReceiver<Envelope>)>,
    router: Rc<Router>,
    start: F,
) where
    F: Fn(ShardRequest) -> BoxFuture<ShardResponse> + Clone + 'static,
{
    for (_peer, rx) in receivers {
        let router = router.clone();
        let start = start.clone();
        glommio::spawn_local(async move {
            while let Some(env) = rx.recv().await {
                match env {
                    Envelope::Req { id, from, body } => {
                        let fut = start(body);
                        let router = router.clone();
                        glommio::spawn_local(async move {
                            let resp = fut.await;
                            router.respond(from, id, resp).await;
                        })
                        .detach();
                    }
                    Envelope::Resp { id, body } => router.resolve(id, body),
                }
            }
        })
        .detach();
    }
}
