//! Produce: split the request by owning shard and submit each part before the next request
//! on this connection is read, so appends keep the connection's order. acks=0 gets no
//! response; acks=1 is answered after the append; acks=-1 once the data is durable.
//! Produce v0-2 take the same path: their message sets (formats v0/v1) are up-converted to
//! one v2 batch per partition here, on the connection's shard, before they are routed,
//! and only their request and response layouts differ (`legacy`).
//!
//! ```text
//!  v3+  decode ─┐                                   ┌─► encode
//!               ├─► submit: checks, route, append ──┤
//!  v0-2 legacy ─┘   (v0-2: message set ─► v2 batch) └─► legacy layout
//! ```

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_proto::batch::{recompress_batch, BatchError, BatchIter};
use sluice_proto::decompress::MAX_DECOMPRESSED;
use sluice_proto::message_set;
use sluice_proto::request::{decode_body, RequestFrame};

use super::{encode, frame_body, legacy, Dispatch};
use crate::connection::Conn;
use crate::errors::storage_error_code;
use crate::metadata::image::TopicInfo;
use crate::metadata::topic_config::{self, target_codec, TargetCodec};
use crate::router::BoxFuture;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::ShardCtx;
use crate::shard_msg::{ByShard, ProducePartResult, ShardRequest, ShardResponse, Tp};
use crate::txn_verify::{produce_error, verify, ToVerify};
use sluice_storage::TxnVerification;

/// acks=all needs at least `min.insync.replicas` (topic override, else the broker's) in the
/// partition's ISR; fewer is NOT_ENOUGH_REPLICAS before anything is appended, as Kafka.
pub(crate) fn enough_in_sync(
    ctx: &ShardCtx,
    acks: i16,
    topic: &str,
    partition: i32,
) -> Result<(), ResponseError> {
    if acks != -1 {
        return Ok(());
    }
    let image = ctx.image.borrow();
    let Some(t) = image.topic(topic) else {
        return Ok(());
    };
    enough_in_sync_in(t, partition, ctx.min_insync_replicas(t))
}

/// `enough_in_sync` for acks=all with the topic and its `min` already looked up.
fn enough_in_sync_in(t: &TopicInfo, partition: i32, min: usize) -> Result<(), ResponseError> {
    let isr = usize::try_from(partition)
        .ok()
        .and_then(|p| t.parts.get(p))
        .map_or(0, |p| p.isr.len());
    if isr < min {
        return Err(ResponseError::NotEnoughReplicas);
    }
    Ok(())
}

/// A topic's codec and level to recompress to, with its max.message.bytes.
type Recompress = (TargetCodec, usize);

/// Where each partition of one topic of a request goes (its shard), or why not: one
/// metadata lookup for the topic, not one per partition; and what the topic's batches are
/// recompressed to, if anything.
fn route_topic(
    ctx: &ShardCtx,
    acks: i16,
    name: &str,
    partitions: impl Iterator<Item = i32>,
) -> (Vec<Result<usize, ResponseError>>, Option<Recompress>) {
    let image = ctx.image.borrow();
    let t = image.topic(name);
    let min = t.map(|t| ctx.min_insync_replicas(t));
    let owners = partitions
        .map(|p| {
            let shard = ctx.route_in(t, p)?;
            match (acks, t, min) {
                (-1, Some(t), Some(min)) => enough_in_sync_in(t, p, min).map(|()| shard),
                _ => Ok(shard),
            }
        })
        .collect();
    // with the topic's max.message.bytes, which the recompression checks
    let codec = t.and_then(|t| {
        let codec = target_codec(&t.configs, &ctx.config)?;
        let max = topic_config::log_config(&t.configs, &ctx.config).max_message_bytes;
        Some((codec, max as usize))
    });
    (owners, codec)
}

type Slot = (usize, usize);

pub(crate) async fn dispatch(ctx: &Rc<ShardCtx>, frame: &RequestFrame, conn: &Conn) -> Dispatch {
    let (version, corr) = (frame.version(), frame.correlation_id());
    if version <= 2 {
        let req = match legacy::produce_v0_v2_request(&frame.body) {
            Ok(r) => r,
            Err(e) => return Dispatch::Close(format!("Produce v{version}: {e}")),
        };
        return match submit(ctx, req, conn, up_convert).await {
            Submitted::Silent(done) => Dispatch::Silent(done),
            Submitted::Answer(answer) => Dispatch::Respond(Box::pin(async move {
                let resp = answer.await;
                match legacy::produce_v0_v2_response(&resp, version) {
                    Ok(body) => frame_body(ApiKey::Produce, version, corr, body),
                    Err(e) => Err(format!("encoding Produce v{version}: {e}")),
                }
            })),
        };
    }
    let req: ProduceRequest = match decode_body(&frame.body, version) {
        Ok(r) => r,
        Err(e) => return Dispatch::Close(format!("Produce v{version}: {e}")),
    };
    let submitted = if version < 7 {
        submit(ctx, req, conn, |r| one_client_batch(refuse_zstd(r)?)).await
    } else {
        submit(ctx, req, conn, one_client_batch).await
    };
    match submitted {
        Submitted::Silent(done) => Dispatch::Silent(done),
        Submitted::Answer(answer) => Dispatch::Respond(Box::pin(async move {
            encode(ApiKey::Produce, version, corr, &answer.await)
        })),
    }
}

/// Produce v0-6: zstd batches are UNSUPPORTED_COMPRESSION_TYPE (zstd came with Produce v7,
/// KIP-110; Kafka refuses them at v3-6, see `up_convert` for v0-2). Only the batch
/// headers are read.
fn refuse_zstd(records: Bytes) -> Result<Bytes, (i16, String)> {
    let zstd =
        BatchIter::headers_only(&records).any(|b| b.is_ok_and(|(h, _)| h.compression() == 4));
    if zstd {
        return Err((
            ResponseError::UnsupportedCompressionType.code(),
            "Produce requests below v7 may not use zstd compression".into(),
        ));
    }
    Ok(records)
}

/// Produce v3+: a partition's records are exactly one v2 batch, at base offset 0, or
/// INVALID_RECORD before the log sees them (Kafka's `ProduceRequest.validateRecords`
/// and `UnifiedLog.analyzeAndValidateRecords` for a client's append). A batch whose
/// header does not parse goes on to the log's validator, which names what is wrong.
fn one_client_batch(records: Bytes) -> Result<Bytes, (i16, String)> {
    let invalid = |why: String| Err((ResponseError::InvalidRecord.code(), why));
    let mut batches = BatchIter::headers_only(&records);
    match (batches.next(), batches.next()) {
        (Some(Ok(_)), Some(Ok(_))) => invalid(
            "Produce requests with version 3 or later are only allowed to contain exactly one record batch per partition"
                .into(),
        ),
        (Some(Ok((h, _))), None) if h.base_offset != 0 => invalid(format!(
            "The baseOffset of the record batch in the append to a partition should be 0, but it is {}",
            h.base_offset
        )),
        _ => Ok(records),
    }
}

/// Bytes one Produce request may inflate, in all its partitions, to recompress them for
/// their topics' `compression.type`: decompression bombs cost at most this much memory
/// and CPU per request (well above a client's request of 1 MiB batches, which Kafka
/// takes one per partition).
const RECOMPRESS_INFLATE_MAX: usize = 256 << 20;

/// A partition's batches in its topic's codec (`compression.type`, at its
/// `compression.<codec>.level`), recompressed here on the connection's shard, yielding
/// between batches, rather than in the owner's `append`, which would hold its shard for
/// every batch of the request at once (`append` still recompresses a batch that reaches
/// it in another codec, after a config change). Each batch's length and CRC are checked
/// first (a damaged batch never gets a fresh CRC), and its size against the topic's
/// `max_message` before and after, as Kafka checks both. What the batches inflate to
/// comes out of `budget`. Batches already in the codec are passed on as they are.
async fn to_topic_codec(
    records: Bytes,
    codec: u8,
    level: Option<i32>,
    max_message: usize,
    budget: &mut usize,
) -> Result<Bytes, (i16, String)> {
    let refused = |e: BatchError| (storage_error_code(&e.clone().into()), e.to_string());
    let too_large = |size: usize| {
        (
            ResponseError::MessageTooLarge.code(),
            format!("a record batch of {size} bytes is over max.message.bytes ({max_message})"),
        )
    };
    let mut ranges = Vec::new();
    let mut convert = false;
    for item in BatchIter::new(&records) {
        let (h, range) = item.map_err(refused)?;
        if h.total_size() > max_message {
            return Err(too_large(h.total_size()));
        }
        convert |= h.compression() != codec;
        ranges.push(range);
    }
    if !convert {
        return Ok(records);
    }
    let mut out = Vec::with_capacity(records.len());
    for range in ranges {
        let start = out.len();
        let inflated = recompress_batch(
            &records[range],
            codec,
            level,
            (*budget).min(MAX_DECOMPRESSED),
            &mut out,
        )
        .map_err(refused)?;
        *budget = budget.saturating_sub(inflated);
        if out.len() - start > max_message {
            return Err(too_large(out.len() - start));
        }
        glommio::yield_if_needed().await;
    }
    // sized to the input: a compressed result is far smaller, and the log and the cache
    // keep what is stored (counted by its length), so the slack must not go with it
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

/// The records of one Produce v0-2 partition as the log stores them: a message set
/// becomes one v2 batch (v2 batches, which Kafka also took at these versions, stay as they
/// are); Err is the partition's error code and why.
fn up_convert(records: Bytes) -> Result<Bytes, (i16, String)> {
    match message_set::to_record_batch(&records, MAX_DECOMPRESSED) {
        Ok(Some(batch)) => Ok(batch),
        // already v2 batches: no zstd either. Stricter than Kafka, whose validateRecords
        // checks zstd from v3 on only (below, it lets any batch through for old clients
        // that mislabel their magic); a v0-2 client predates zstd (Produce v7)
        Ok(None) => refuse_zstd(records),
        Err(e) => Err((crate::errors::message_set_error_code(&e), e.to_string())),
    }
}

/// A produce request submitted to its partitions' shards: nothing to answer (acks=0), or
/// the future of its answer.
enum Submitted {
    Silent(BoxFuture<Result<(), String>>),
    Answer(BoxFuture<ProduceResponse>),
}

/// Whether any partition's records hold a transactional batch (v2 batches' attributes;
/// a message set, v0-1, has none).
fn has_transactional_batches(req: &ProduceRequest) -> bool {
    req.topic_data.iter().any(|t| {
        t.partition_data.iter().any(|p| {
            p.records.as_ref().is_some_and(|r| {
                BatchIter::headers_only(r).any(|b| b.is_ok_and(|(h, _)| h.is_transactional()))
            })
        })
    })
}

/// A partition's verification outcome: the guard to append under, or its error and why.
type Verified = Result<TxnVerification, (i16, String)>;

/// The transactional batches of a produce request to verify with the coordinator
/// (KIP-890, `txn_verify.rs`): their producers (one expected), and each partition's answer
/// slot and owner shard.
#[derive(Default)]
struct Verifying {
    producers: std::collections::BTreeSet<(i64, i16)>,
    /// (topic index, partition index) in the answer, by `ToVerify::slot`.
    slots: Vec<Slot>,
    parts: Vec<ToVerify>,
}

impl Verifying {
    /// Notes `records` of the partition answered at `slot` if they hold a transactional
    /// batch (v3+: one batch; its header only is read).
    fn note(&mut self, records: &Bytes, slot: Slot, tp: &Tp, shard: usize) {
        let txn = BatchIter::headers_only(records)
            .filter_map(Result::ok)
            .find(|(h, _)| h.is_transactional() && !h.is_control());
        let Some((h, _)) = txn else {
            return;
        };
        self.producers.insert((h.producer_id, h.producer_epoch));
        self.parts.push(ToVerify {
            slot: self.slots.len(),
            tp: tp.clone(),
            shard,
            base_sequence: h.base_sequence,
        });
        self.slots.push(slot);
    }

    /// Verifies every noted partition: per answer slot, the verification to append under
    /// or the partition's error. Transactional batches of more than one producer (or
    /// epoch) in one request are INVALID_PRODUCER_ID_MAPPING, as Kafka refuses them.
    async fn run(
        self,
        ctx: &Rc<ShardCtx>,
        transactional_id: &str,
        timeout: std::time::Duration,
    ) -> Vec<(Slot, Verified)> {
        let Verifying {
            producers,
            slots,
            parts,
        } = self;
        let mut answers: std::collections::HashMap<usize, Verified> =
            match (producers.len(), producers.first()) {
                (1, Some(&producer)) => verify(ctx, transactional_id, producer, parts, timeout)
                    .await
                    .into_iter()
                    .map(|(slot, v)| (slot, v.map_err(produce_error)))
                    .collect(),
                _ => {
                    let e = (
                        ResponseError::InvalidProducerIdMapping.code(),
                        "Transactional records contained more than one producer ID".to_string(),
                    );
                    parts.iter().map(|p| (p.slot, Err(e.clone()))).collect()
                }
            };
        slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                let a = answers.remove(&i).unwrap_or(Err((
                    ResponseError::UnknownServerError.code(),
                    String::new(),
                )));
                (slot, a)
            })
            .collect()
    }
}

/// Puts each verified partition's guard on its part, and takes out (answering their
/// error) the partitions that failed verification: they are not appended.
fn apply_verification(
    outcome: Vec<(Slot, Verified)>,
    by_shard: &mut ByShard<(Tp, Bytes, TxnVerification)>,
    response: &mut ProduceResponse,
) {
    let outcome: std::collections::HashMap<Slot, Verified> = outcome.into_iter().collect();
    for (slots, parts) in by_shard.values_mut() {
        let kept: Vec<(Slot, (Tp, Bytes, TxnVerification))> = std::mem::take(slots)
            .into_iter()
            .zip(std::mem::take(parts))
            .filter_map(|(slot, (tp, records, v))| match outcome.get(&slot) {
                None => Some((slot, (tp, records, v))),
                Some(Ok(verified)) => Some((slot, (tp, records, *verified))),
                Some(Err((code, why))) => {
                    let pr = &mut response.responses[slot.0].partition_responses[slot.1];
                    pr.error_code = *code;
                    pr.error_message =
                        (!why.is_empty()).then(|| StrBytes::from_string(why.clone()));
                    None
                }
            })
            .collect();
        for (slot, part) in kept {
            slots.push(slot);
            parts.push(part);
        }
    }
    by_shard.retain(|_, (slots, _)| !slots.is_empty());
}

/// Checks each partition (acks, internal topic, leadership and ISR, records present),
/// turns its records into what the log stores with `prepare` (Err: the partition's error),
/// and submits every part to its owning shard before returning, so appends keep the
/// connection's order.
async fn submit(
    ctx: &Rc<ShardCtx>,
    req: ProduceRequest,
    conn: &Conn,
    prepare: impl Fn(Bytes) -> Result<Bytes, (i16, String)>,
) -> Submitted {
    // a transactional producer needs WRITE on its transactional id, every producer WRITE
    // on each topic (idempotence was checked at InitProducerId); transactional batches
    // without a transactional id are refused whole, as Kafka's handleProduceRequest does
    // (appended, they would open a transaction no coordinator ever ends)
    let txn_denied = match &req.transactional_id {
        Some(id) => {
            !ctx.access
                .allows(conn, AclOperation::Write, ResourceType::TransactionalId, id)
        }
        None => has_transactional_batches(&req),
    };
    let topic_denied = |name: &str| {
        !ctx.access
            .allows(conn, AclOperation::Write, ResourceType::Topic, name)
    };
    let conn = crate::admission::conn_key(ctx.id, conn.id);
    let acks = req.acks;
    let timeout_ms = req.timeout_ms;
    // KIP-890: whose transactional batches the coordinator is asked about
    let verify_for = req
        .transactional_id
        .as_ref()
        .filter(|_| ctx.config.flag("transaction.partition.verification.enable"))
        .map(|id| id.0.to_string());
    let mut verifying = Verifying::default();
    let mut response = ProduceResponse::default();
    let mut by_shard: ByShard<(Tp, bytes::Bytes, TxnVerification)> = BTreeMap::new();
    let bad_acks = !matches!(acks, -1..=1);
    // what one request may have inflated for recompression, in all its partitions
    let mut inflate_budget = RECOMPRESS_INFLATE_MAX;
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        // one allocation per topic, shared by its partitions' `Tp`s
        let shared_name: std::sync::Arc<str> = name.as_str().into();
        let internal = crate::metadata::is_internal(&name);
        let denied = if txn_denied {
            Some(ResponseError::TransactionalIdAuthorizationFailed.code())
        } else if topic_denied(&name) {
            Some(ResponseError::TopicAuthorizationFailed.code())
        } else {
            None
        };
        let mut tr = TopicProduceResponse::default().with_name(topic.name.clone());
        let (owners, codec) = route_topic(
            ctx,
            acks,
            &name,
            topic.partition_data.iter().map(|p| p.index),
        );
        for (pi, (part, owner)) in topic.partition_data.into_iter().zip(owners).enumerate() {
            let mut pr = PartitionProduceResponse::default()
                .with_index(part.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            match (bad_acks, owner, part.records) {
                (true, _, _) => pr.error_code = ResponseError::InvalidRequiredAcks.code(),
                _ if denied.is_some() => pr.error_code = denied.unwrap_or_default(),
                _ if internal => {
                    pr.error_code = ResponseError::InvalidTopicException.code();
                    pr.error_message = Some(StrBytes::from_static_str(
                        "Clients may not write to an internal topic.",
                    ));
                }
                (_, Err(e), _) => pr.error_code = e.code(),
                (_, Ok(_), None) => pr.error_code = ResponseError::CorruptMessage.code(),
                (_, Ok(shard), Some(records)) => match match (prepare(records), codec) {
                    (Ok(r), Some(((c, level), max))) => {
                        to_topic_codec(r, c, level, max, &mut inflate_budget).await
                    }
                    (prepared, _) => prepared,
                } {
                    Ok(records) => {
                        let tp = Tp {
                            topic: shared_name.clone(),
                            partition: part.index,
                        };
                        if verify_for.is_some() {
                            verifying.note(&records, (ti, pi), &tp, shard);
                        }
                        let entry = by_shard.entry(shard).or_default();
                        entry.0.push((ti, pi));
                        entry.1.push((tp, records, TxnVerification::Off));
                    }
                    Err((code, why)) => {
                        tracing::debug!(topic = %name, partition = part.index, error = %why, "produce refused");
                        pr.error_code = code;
                        pr.error_message = Some(StrBytes::from_string(why));
                    }
                },
            }
            tr.partition_responses.push(pr);
            // A message set's conversion is CPU work: let the shard's other tasks run.
            glommio::yield_if_needed().await;
        }
        response.responses.push(tr);
    }
    if let Some(id) = verify_for.filter(|_| !verifying.parts.is_empty()) {
        // the request's own bound, or the shards' default for a timeout that is not
        // positive (acks=0)
        let ms = if timeout_ms > 0 {
            timeout_ms as u64
        } else {
            30_000
        };
        let timeout = std::time::Duration::from_millis(ms);
        let outcome = verifying.run(ctx, &id, timeout).await;
        apply_verification(outcome, &mut by_shard, &mut response);
    }
    let mut pending: Vec<(Vec<Slot>, BoxFuture<ShardResponse>)> =
        Vec::with_capacity(by_shard.len());
    for (shard, (slots, parts)) in by_shard {
        pending.push((
            slots,
            ctx.submit(
                shard,
                ShardRequest::Produce {
                    acks,
                    timeout_ms,
                    conn,
                    parts,
                },
            )
            .await,
        ));
    }
    if acks == 0 {
        // any partition's error closes the connection, as Kafka does for acks=0
        let refused = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.error_code != 0)
            .map(|p| p.error_code);
        return Submitted::Silent(Box::pin(async move {
            let mut failed = refused;
            for (_, fut) in pending {
                let first_error = match fut.await {
                    ShardResponse::Produce(results) => {
                        results.iter().find(|r| r.error != 0).map(|r| r.error)
                    }
                    // as the acks=1/all answer takes it
                    _ => Some(ResponseError::NotLeaderOrFollower.code()),
                };
                failed = failed.or(first_error);
            }
            match failed {
                Some(code) => Err(format!("acks=0 Produce failed with error {code}")),
                None => Ok(()),
            }
        }));
    }
    let metrics = ctx.metrics.clone();
    Submitted::Answer(Box::pin(async move {
        for (slots, fut) in pending {
            let results = match fut.await {
                ShardResponse::Produce(r) => r,
                _ => vec![
                    ProducePartResult::failed(ResponseError::NotLeaderOrFollower.code(), None);
                    slots.len()
                ],
            };
            for ((ti, pi), r) in slots.into_iter().zip(results) {
                let pr = &mut response.responses[ti].partition_responses[pi];
                pr.error_code = r.error;
                pr.base_offset = r.base_offset;
                pr.log_append_time_ms = r.log_append_time;
                pr.log_start_offset = r.log_start_offset;
                pr.error_message = r.message.map(StrBytes::from_string);
            }
        }
        if crate::metrics::AnswerErrors::has_error(&response) {
            metrics.answered_error(ApiKey::Produce as i16);
        }
        response
    }))
}
