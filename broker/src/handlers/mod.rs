//! Request dispatch: one module per Kafka API family. `dispatch` checks the api version
//! against `SUPPORTED`, decodes the body, runs the request's ordered part, and returns the
//! future of its response (or none, for acks=0 produce). Versions below `kafka-protocol`'s
//! range go through `legacy`; a version Sluice does not serve gets an UNSUPPORTED_VERSION
//! answer where its response can carry one (`unsupported`), else the connection closes.

pub(crate) mod admin;
pub(crate) mod api_versions;
pub(crate) mod authz;
pub(crate) mod authz_resources;
pub(crate) mod configs;
pub(crate) mod delete_records;
pub(crate) mod epochs;
pub(crate) mod fetch;
pub(crate) mod fetch_encode;
pub(crate) mod fetch_session;
pub(crate) mod groups;
pub(crate) mod legacy;
pub(crate) mod list_offsets;
pub(crate) mod log_dirs;
pub(crate) mod metadata;
pub(crate) mod produce;
pub(crate) mod reassign;
pub(crate) mod sasl;
pub(crate) mod security_admin;
pub(crate) mod txn;
pub(crate) mod unsupported;
pub(crate) mod wire;

use std::future::Future;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_proto::request::{
    decode_body, encode_response, parse_request, put_response_header, RequestFrame,
};

use crate::connection::Conn;
use crate::metrics::AnswerErrors;
use crate::router::BoxFuture;
use crate::shard::ShardCtx;
use wire::WireError;

/// Response frame pieces, or why the connection must close.
pub(crate) type Response = Result<Vec<Bytes>, String>;

pub(crate) enum Dispatch {
    Respond(BoxFuture<Response>),
    /// No response (acks=0 Produce); Err(why) closes the connection once it resolves, as
    /// Kafka closes an acks=0 producer's connection on any error so that it refreshes
    /// its metadata.
    Silent(BoxFuture<Result<(), String>>),
    Close(String),
}

/// Versions Sluice serves (one table, in `sluice-proto`, shared with the fuzz targets).
pub(crate) use sluice_proto::request::SUPPORTED;

pub(crate) fn supported(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(a, min, max)| a == api && (min..=max).contains(&version))
}

/// Encodes `body` as the complete response to `frame`.
pub(crate) fn encode<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Response {
    encode_response(api, version, correlation_id, body)
        .map(|b| vec![b])
        .map_err(|e| {
            tracing::error!(?api, version, error = %e, "cannot encode response");
            format!("encoding {api:?} v{version}: {e}")
        })
}

/// A complete response frame (size prefix and header, then the body, not copied) around a
/// body already encoded in `version`'s layout.
pub(crate) fn frame_body(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: BytesMut,
) -> Response {
    let mut head = BytesMut::with_capacity(9);
    put_response_header(&mut head, api, version, correlation_id, body.len()).map_err(|e| {
        tracing::error!(?api, version, error = %e, "cannot frame response");
        format!("framing {api:?} v{version}: {e}")
    })?;
    Ok(vec![head.freeze(), body.freeze()])
}

/// A request at a version `kafka-protocol` does not model (`legacy`): `decode` reads the
/// body's layout, `run` handles it and writes the response body in that version's layout.
pub(crate) fn legacy_respond<Req, Fut, D, H>(
    ctx: &Rc<ShardCtx>,
    frame: &RequestFrame,
    decode: D,
    run: H,
) -> Dispatch
where
    D: FnOnce(&Bytes, i16) -> Result<Req, WireError>,
    H: FnOnce(Rc<ShardCtx>, Req, i16) -> Fut,
    Fut: Future<Output = Result<BytesMut, WireError>> + 'static,
{
    let (api, version, corr) = (frame.api_key, frame.version(), frame.correlation_id());
    let req = match decode(&frame.body, version) {
        Ok(r) => r,
        Err(e) => return Dispatch::Close(format!("{api:?} v{version}: {e}")),
    };
    let fut = run(ctx.clone(), req, version);
    Dispatch::Respond(Box::pin(async move {
        match fut.await {
            Ok(body) => frame_body(api, version, corr, body),
            Err(e) => {
                tracing::error!(?api, version, error = %e, "cannot encode response");
                Err(format!("encoding {api:?} v{version}: {e}"))
            }
        }
    }))
}

/// A request handled entirely in its response future; an answer with an error code in it
/// is counted in the request metrics.
fn respond<Req, Resp, Fut, H>(ctx: &Rc<ShardCtx>, frame: &RequestFrame, handler: H) -> Dispatch
where
    H: FnOnce(Rc<ShardCtx>, Req, i16) -> Fut,
    Req: Decodable + 'static,
    Resp: Encodable + AnswerErrors + 'static,
    Fut: Future<Output = Resp> + 'static,
{
    let version = frame.version();
    let req: Req = match decode_body(&frame.body, version) {
        Ok(r) => r,
        Err(e) => return Dispatch::Close(format!("{:?} v{version}: {e}", frame.api_key)),
    };
    let (api, corr) = (frame.api_key, frame.correlation_id());
    let fut = handler(ctx.clone(), req, version);
    let metrics = ctx.metrics.clone();
    Dispatch::Respond(Box::pin(async move {
        let resp = fut.await;
        if resp.has_error() {
            metrics.answered_error(api as i16);
        }
        encode(api, version, corr, &resp)
    }))
}

/// `respond` for a handler that also needs the connection (its principal, for ACLs).
fn respond_conn<Req, Resp, Fut, H>(
    ctx: &Rc<ShardCtx>,
    frame: &RequestFrame,
    conn: &Rc<Conn>,
    handler: H,
) -> Dispatch
where
    H: FnOnce(Rc<ShardCtx>, Req, i16, Rc<Conn>) -> Fut + 'static,
    Req: Decodable + 'static,
    Resp: Encodable + AnswerErrors + 'static,
    Fut: Future<Output = Resp> + 'static,
{
    let conn = conn.clone();
    respond(ctx, frame, move |ctx, req, v| handler(ctx, req, v, conn))
}

/// The SASL requests: handled before the next frame is read (their state change must be
/// settled for it); a failed login's answer waits its delay.
fn sasl_dispatch(ctx: &Rc<ShardCtx>, frame: &RequestFrame, conn: &Rc<Conn>) -> Dispatch {
    let (api, version, corr) = (frame.api_key, frame.version(), frame.correlation_id());
    let encoded = if api == ApiKey::SaslHandshake {
        let req = match decode_body(&frame.body, version) {
            Ok(r) => r,
            Err(e) => return Dispatch::Close(format!("{api:?} v{version}: {e}")),
        };
        let resp = sasl::handshake(ctx, conn, req, version);
        (encode(api, version, corr, &resp), None)
    } else {
        let req = match decode_body(&frame.body, version) {
            Ok(r) => r,
            Err(e) => return Dispatch::Close(format!("{api:?} v{version}: {e}")),
        };
        let (resp, delay) = sasl::authenticate(ctx, conn, req, version);
        (encode(api, version, corr, &resp), delay)
    };
    let (answer, delay) = encoded;
    Dispatch::Respond(Box::pin(async move {
        if let Some(d) = delay {
            glommio::timer::sleep(d).await;
        }
        answer
    }))
}

/// Decodes one frame and starts handling it.
pub(crate) async fn dispatch(ctx: &Rc<ShardCtx>, frame: Bytes, conn: &Rc<Conn>) -> Dispatch {
    let peer: &str = &conn.peer;
    if conn.sasl_raw.get() {
        let (answer, delay) = sasl::raw_token(ctx, conn, frame);
        return Dispatch::Respond(Box::pin(async move {
            if let Some(d) = delay {
                glommio::timer::sleep(d).await;
            }
            answer
        }));
    }
    let frame = match parse_request(frame) {
        Ok(f) => f,
        Err(e) => return Dispatch::Close(e.to_string()),
    };
    let (api, version) = (frame.api_key, frame.version());
    // KIP-368: any request after the session's end closes the connection (Kafka's
    // SocketServer), ApiVersions and a late re-authentication included
    let now = std::time::Instant::now();
    if conn.sasl.borrow().expired(now) {
        ctx.metrics.sasl_session_expired();
        return Dispatch::Close(format!("{api:?}: {}", sasl::SESSION_EXPIRED));
    }
    if api == ApiKey::ApiVersions {
        return api_versions::handle(&frame);
    }
    if !matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        if let Err(reason) = conn.sasl.borrow().check_request(now) {
            return Dispatch::Close(format!("{api:?}: {reason}"));
        }
    }
    if !supported(api, version) {
        ctx.metrics.answered_error(api as i16);
        return unsupported::answer(&frame, peer);
    }
    tracing::trace!(?api, version, %peer, "request");
    if let Some(refused) = authz::check(ctx, &frame, conn) {
        ctx.metrics.answered_error(api as i16);
        return refused;
    }
    if let Some(d) = legacy::dispatch(ctx, &frame, conn) {
        return d;
    }
    match api {
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => sasl_dispatch(ctx, &frame, conn),
        ApiKey::DescribeUserScramCredentials => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, _| {
                security_admin::describe_scram(ctx, req, conn)
            })
        }
        ApiKey::AlterUserScramCredentials => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, _| {
                security_admin::alter_scram(ctx, req, conn)
            })
        }
        ApiKey::DescribeAcls => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, _| {
                security_admin::describe_acls(ctx, req, conn)
            })
        }
        ApiKey::CreateAcls => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, _| {
                security_admin::create_acls(ctx, req, conn)
            })
        }
        ApiKey::DeleteAcls => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, _| {
                security_admin::delete_acls(ctx, req, conn)
            })
        }
        ApiKey::Metadata => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, v| {
                metadata::handle(ctx, req, v, conn)
            })
        }
        ApiKey::Produce => produce::dispatch(ctx, &frame, conn).await,
        ApiKey::Fetch => fetch::dispatch(ctx, &frame, conn),
        ApiKey::ListOffsets => {
            let conn = conn.clone();
            respond(
                ctx,
                &frame,
                move |ctx, mut req: ListOffsetsRequest, v| async move {
                    let denied = authz::list_offsets_denied(&ctx, &conn, &mut req);
                    let mut resp = list_offsets::handle(ctx, req, v).await;
                    resp.topics.extend(denied);
                    resp
                },
            )
        }
        ApiKey::OffsetForLeaderEpoch => {
            respond_conn(ctx, &frame, conn, authz_resources::offset_for_leader_epoch)
        }
        ApiKey::CreateTopics => respond_conn(ctx, &frame, conn, authz_resources::create_topics),
        ApiKey::DeleteTopics => respond_conn(ctx, &frame, conn, authz_resources::delete_topics),
        ApiKey::CreatePartitions => {
            respond_conn(ctx, &frame, conn, authz_resources::create_partitions)
        }
        ApiKey::InitProducerId => respond(ctx, &frame, txn::init_producer_id),
        ApiKey::AddPartitionsToTxn => {
            respond_conn(ctx, &frame, conn, authz_resources::add_partitions_to_txn)
        }
        ApiKey::AddOffsetsToTxn => respond(ctx, &frame, txn::add_offsets_to_txn),
        ApiKey::EndTxn => respond(ctx, &frame, txn::end_txn),
        ApiKey::WriteTxnMarkers => respond(ctx, &frame, txn::write_txn_markers),
        ApiKey::TxnOffsetCommit => {
            respond_conn(ctx, &frame, conn, authz_resources::txn_offset_commit)
        }
        ApiKey::DescribeProducers => {
            respond_conn(ctx, &frame, conn, authz_resources::describe_producers)
        }
        ApiKey::DescribeTransactions => {
            respond_conn(ctx, &frame, conn, authz_resources::describe_transactions)
        }
        ApiKey::ListTransactions => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, v| async move {
                let mut resp = txn::list_transactions(ctx.clone(), req, v).await;
                authz::filter_list_transactions(&ctx, &conn, &mut resp);
                resp
            })
        }
        ApiKey::DescribeCluster => {
            let listener = conn.listener_name();
            respond(ctx, &frame, move |ctx, req, v| {
                admin::describe_cluster(ctx, req, v, listener)
            })
        }
        ApiKey::DescribeConfigs => {
            respond_conn(ctx, &frame, conn, authz_resources::describe_configs)
        }
        ApiKey::AlterConfigs => respond_conn(ctx, &frame, conn, authz_resources::alter_configs),
        ApiKey::IncrementalAlterConfigs => respond_conn(
            ctx,
            &frame,
            conn,
            authz_resources::incremental_alter_configs,
        ),
        ApiKey::FindCoordinator => {
            let listener = conn.listener_name();
            respond_conn(ctx, &frame, conn, move |ctx, req, v, conn| {
                authz_resources::find_coordinator(ctx, req, v, listener, conn)
            })
        }
        ApiKey::JoinGroup => {
            let client_id = frame.header.client_id.as_deref().unwrap_or("").to_string();
            // Kafka reports the client host as "/ip".
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h));
            respond(ctx, &frame, move |ctx, req, v| {
                groups::join_group(ctx, req, v, client_id, host)
            })
        }
        ApiKey::SyncGroup => respond(ctx, &frame, groups::sync_group),
        ApiKey::Heartbeat => respond(ctx, &frame, groups::heartbeat),
        ApiKey::LeaveGroup => respond(ctx, &frame, groups::leave_group),
        ApiKey::OffsetCommit => {
            let conn = conn.clone();
            respond(
                ctx,
                &frame,
                move |ctx, mut req: OffsetCommitRequest, v| async move {
                    let denied = authz::offset_commit_denied(&ctx, &conn, &mut req);
                    let mut resp = groups::offset_commit(ctx, req, v).await;
                    resp.topics.extend(denied);
                    resp
                },
            )
        }
        ApiKey::OffsetFetch => {
            let conn = conn.clone();
            respond(
                ctx,
                &frame,
                move |ctx, req: OffsetFetchRequest, v| async move {
                    if let Some(refused) = authz::offset_fetch_group_refused(&ctx, &conn, &req, v) {
                        return refused;
                    }
                    let group = req.group_id.0.to_string();
                    let mut resp = groups::offset_fetch(ctx.clone(), req, v).await;
                    authz::filter_offset_fetch(&ctx, &conn, &mut resp, &group);
                    resp
                },
            )
        }
        ApiKey::DescribeGroups => {
            let conn = conn.clone();
            respond(
                ctx,
                &frame,
                move |ctx, req: DescribeGroupsRequest, v| async move {
                    let with_ops = v >= 3 && req.include_authorized_operations;
                    let mut resp = groups::describe_groups(ctx.clone(), req, v).await;
                    authz::filter_describe_groups(&ctx, &conn, &mut resp);
                    // KIP-430, as for topics and the cluster in Metadata
                    if with_ops {
                        for g in resp.groups.iter_mut().filter(|g| g.error_code == 0) {
                            g.authorized_operations = authz::authorized_operations(
                                &ctx,
                                &conn,
                                crate::security::acl::ResourceType::Group,
                                &g.group_id,
                            );
                        }
                    }
                    resp
                },
            )
        }
        ApiKey::ListGroups => {
            let conn = conn.clone();
            respond(ctx, &frame, move |ctx, req, v| async move {
                let mut resp = groups::list_groups(ctx.clone(), req, v).await;
                authz::filter_list_groups(&ctx, &conn, &mut resp);
                resp
            })
        }
        ApiKey::DeleteGroups => respond_conn(ctx, &frame, conn, authz_resources::delete_groups),
        ApiKey::OffsetDelete => respond_conn(ctx, &frame, conn, authz_resources::offset_delete),
        ApiKey::ElectLeaders => respond(ctx, &frame, reassign::elect_leaders),
        ApiKey::AlterPartitionReassignments => respond(ctx, &frame, reassign::alter_reassignments),
        ApiKey::ListPartitionReassignments => respond(ctx, &frame, reassign::list_reassignments),
        ApiKey::DescribeLogDirs => respond_conn(ctx, &frame, conn, log_dirs::describe_log_dirs),
        ApiKey::DeleteRecords => respond_conn(ctx, &frame, conn, delete_records::delete_records),
        other => Dispatch::Close(format!("no handler for {other:?}")),
    }
}
