//! Fetch: resolve the session, read every partition on its owning shard, and long-poll when
//! fewer than `min_bytes` are ready: each involved shard is asked to report the first new
//! durable data, and the first report (or `max_wait_ms`) ends the wait. Answers are encoded
//! zero-copy by `fetch_encode`. Fetch v0-3 (read by `legacy`) take the same path; only
//! their answer differs: the batches read are down-converted to message sets of format v0
//! (Fetch v0-1) or v1 (v2-3) on this shard, after the wait, and never stored that way.
//!
//! ```text
//!  read_all ─► enough? ─yes─► (v0-3: down_convert) ─► encode
//!      ▲          │no
//!      └── any shard reports new data (WaitData) or deadline
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;
use sluice_proto::request::{decode_body, RequestFrame};

use super::fetch_encode::{down_convert, encode, TopicOut};
use super::fetch_session::{FetchSessions, Plan};
use super::{legacy, Dispatch, Response};
use crate::connection::Conn;
use crate::metadata::topic_config::stores_zstd;
use crate::router::BoxFuture;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::{check_leader_epoch_in, ShardCtx};
use crate::shard_msg::{FetchPart, FetchPartResult, ShardRequest, ShardResponse, WaitPart};
use futures_lite::future;

pub(crate) fn dispatch(ctx: &Rc<ShardCtx>, frame: &RequestFrame, conn: &Rc<Conn>) -> Dispatch {
    let (version, corr) = (frame.version(), frame.correlation_id());
    let req = if version <= 3 {
        legacy::fetch_v0_v3_request(&frame.body, version).map_err(|e| e.to_string())
    } else {
        decode_body::<FetchRequest>(&frame.body, version).map_err(|e| e.to_string())
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => return Dispatch::Close(format!("Fetch v{version}: {e}")),
    };
    let (ctx, conn) = (ctx.clone(), conn.clone());
    Dispatch::Respond(Box::pin(async move {
        handle(ctx, req, version, corr, conn).await
    }))
}

async fn handle(
    ctx: Rc<ShardCtx>,
    req: FetchRequest,
    version: i16,
    corr: i32,
    conn: Rc<Conn>,
) -> Response {
    let plan = match ctx
        .fetch_sessions
        .borrow_mut()
        .resolve(&req, version, conn.id)
    {
        Ok(p) => p,
        Err(code) => return encode(version, corr, code, 0, &[]),
    };
    // The broker's caps (`fetch.max.bytes`, `fetch.max.wait.ms`) bound what a client asks.
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .clamp(1, ctx.limits.fetch_max_bytes);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0))
        .min(ctx.limits.fetch_max_wait);
    let deadline = Instant::now() + max_wait;
    let replica = req.replica_id.0;
    let read_committed = req.isolation_level == 1;
    // a follower needs CLUSTER_ACTION, a consumer READ on each topic (checked once per
    // run of a topic's partitions; nothing is allocated unless a topic is denied)
    let mut denied: std::collections::HashSet<String> = Default::default();
    if ctx.access.enabled() {
        if replica >= 0 {
            if !ctx
                .access
                .allows_cluster(&conn, AclOperation::ClusterAction)
            {
                denied.extend(plan.parts.iter().map(|p| p.topic.to_string()));
            }
        } else {
            let mut last: Option<&str> = None;
            for p in &plan.parts {
                if last == Some(&*p.topic) {
                    continue;
                }
                last = Some(&p.topic);
                if !denied.contains(&*p.topic)
                    && !ctx
                        .access
                        .allows(&conn, AclOperation::Read, ResourceType::Topic, &p.topic)
                {
                    denied.insert(p.topic.to_string());
                }
            }
        }
    }
    let mut results;
    loop {
        let asked = Asked {
            max_bytes,
            replica,
            read_committed,
            // Kafka: a zstd topic is unreadable below Fetch v10 (KIP-110)
            refuse_zstd: version < 10 && replica < 0,
        };
        results = read_all(&ctx, &plan, &asked, &denied).await;
        let total: usize = results.iter().map(FetchPartResult::bytes).sum();
        let any_error = results.iter().any(|r| r.error != 0);
        let now = Instant::now();
        if total >= min_bytes
            || any_error
            || now >= deadline
            || plan.parts.is_empty()
            || conn.is_closed()
            || (replica >= 0 && FetchSessions::log_start_news(&plan, &results))
        {
            break;
        }
        // A client that goes away ends its long poll at once.
        future::or(
            wait_any(&ctx, &plan, &results, deadline - now, replica),
            conn.closed(),
        )
        .await;
    }
    let include = ctx.fetch_sessions.borrow_mut().record(&plan, &results);
    if version <= 3 {
        down_convert(&mut results, &plan.parts, max_bytes, version).await;
    }
    crate::metrics::count_fetch(&ctx, &plan.parts, &results, &include, replica >= 0);
    let mut topics: Vec<TopicOut> = Vec::new();
    for (i, ((p, r), inc)) in plan.parts.iter().zip(results).zip(include).enumerate() {
        if !inc {
            continue;
        }
        match topics.last_mut() {
            Some(t) if *t.name == *p.topic => t.partitions.push((p.partition, r)),
            _ => {
                // sized for the rest of the topic's run: 10,000 partitions of one topic
                // are one vector, not fourteen doublings of it
                let run = plan.parts[i..]
                    .iter()
                    .take_while(|q| q.topic == p.topic)
                    .count();
                let mut partitions = Vec::with_capacity(run);
                partitions.push((p.partition, r));
                topics.push(TopicOut {
                    name: p.topic.to_string(),
                    partitions,
                });
            }
        }
    }
    encode(version, corr, 0, plan.session_id, &topics)
}

/// What one Fetch asks of every partition it names.
struct Asked {
    max_bytes: usize,
    replica: i32,
    read_committed: bool,
    /// Answer partitions of topics stored in zstd UNSUPPORTED_COMPRESSION_TYPE.
    refuse_zstd: bool,
}

/// Reads every planned partition on its owner; results in plan order, `max_bytes` in all.
async fn read_all(
    ctx: &Rc<ShardCtx>,
    plan: &Plan,
    asked: &Asked,
    denied: &std::collections::HashSet<String>,
) -> Vec<FetchPartResult> {
    let &Asked {
        max_bytes,
        replica,
        read_committed,
        refuse_zstd,
    } = asked;
    let mut results: Vec<FetchPartResult> = vec![FetchPartResult::default(); plan.parts.len()];
    let mut by_shard: BTreeMap<usize, (Vec<usize>, Vec<FetchPart>)> = BTreeMap::new();
    {
        // one metadata lookup per run of a topic's partitions (10,000 partitions a round)
        let image = ctx.image.borrow();
        let mut last = None;
        for (i, p) in plan.parts.iter().enumerate() {
            if !denied.is_empty() && denied.contains(&*p.topic) {
                results[i] =
                    FetchPartResult::failed(ResponseError::TopicAuthorizationFailed.code());
                continue;
            }
            let t = image.topic_in_run(&mut last, &p.topic);
            if refuse_zstd
                && t.is_some_and(|t| {
                    !crate::metadata::is_internal(&t.name) && stores_zstd(&t.configs, &ctx.config)
                })
            {
                results[i] =
                    FetchPartResult::failed(ResponseError::UnsupportedCompressionType.code());
                continue;
            }
            match ctx.route_in(t, p.partition).and_then(|shard| {
                check_leader_epoch_in(t, p.partition, Some(p.epoch)).map(|()| shard)
            }) {
                Ok(shard) => {
                    let e = by_shard.entry(shard).or_default();
                    e.0.push(i);
                    e.1.push(FetchPart {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        fetch_offset: p.fetch_offset,
                        max_bytes: usize::try_from(p.max_bytes).unwrap_or(0),
                        log_start: p.log_start,
                    });
                }
                Err(error) => results[i] = FetchPartResult::failed(error.code()),
            }
        }
    }
    let mut pending = Vec::with_capacity(by_shard.len());
    for (shard, (slots, parts)) in by_shard {
        pending.push((
            slots,
            ctx.submit(
                shard,
                ShardRequest::Fetch {
                    parts,
                    max_bytes,
                    replica,
                    read_committed,
                },
            )
            .await,
        ));
    }
    for (slots, fut) in pending {
        let answers = match fut.await {
            ShardResponse::Fetch(a) => a,
            _ => Vec::new(),
        };
        let mut answers = answers.into_iter();
        for i in slots {
            results[i] = answers.next().unwrap_or(FetchPartResult::failed(
                ResponseError::NotLeaderOrFollower.code(),
            ));
        }
    }
    // Each shard had the whole budget; keep whole partitions in order until it is spent.
    let mut used = 0usize;
    for (i, r) in results.iter_mut().enumerate() {
        let size = r.bytes();
        if i > 0 && used > 0 && used + size > max_bytes {
            r.batches.clear();
        } else {
            used += size;
        }
    }
    results
}

/// Waits until any owner reports new durable data past what was just seen, or `wait`.
async fn wait_any(
    ctx: &Rc<ShardCtx>,
    plan: &Plan,
    seen: &[FetchPartResult],
    wait: Duration,
    replica: i32,
) {
    let mut by_shard: BTreeMap<usize, Vec<WaitPart>> = BTreeMap::new();
    {
        let image = ctx.image.borrow();
        let mut last = None;
        for (p, r) in plan.parts.iter().zip(seen) {
            let t = image.topic_in_run(&mut last, &p.topic);
            if let Ok(shard) = ctx.route_in(t, p.partition) {
                by_shard.entry(shard).or_default().push((
                    p.topic.clone(),
                    p.partition,
                    p.fetch_offset.max(r.high_watermark),
                    r.log_start_offset,
                ));
            }
        }
    }
    let wait_ms = wait.as_millis() as u64;
    let mut waits: Vec<BoxFuture<ShardResponse>> = Vec::with_capacity(by_shard.len() + 1);
    for (shard, parts) in by_shard {
        waits.push(
            ctx.submit(
                shard,
                ShardRequest::WaitData {
                    parts,
                    wait_ms,
                    replica,
                },
            )
            .await,
        );
    }
    waits.push(Box::pin(async move {
        glommio::timer::sleep(wait).await;
        ShardResponse::Done
    }));
    first_of(waits).await;
}

/// Resolves when the first of `futs` does.
async fn first_of(mut futs: Vec<BoxFuture<ShardResponse>>) {
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if Pin::new(f).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}
