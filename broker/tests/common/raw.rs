//! A minimal raw Kafka client over `std::net::TcpStream`, built on `kafka-protocol`, for
//! tests that need exact control of the bytes (malformed frames, bad CRCs, long-poll
//! timing). Invariants: every read has a timeout; frames from the broker are checked
//! against a size bound before allocating; responses must echo the correlation id.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, FetchRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Largest response frame the tests accept (guards the allocation).
const MAX_FRAME: usize = 64 << 20;

/// What reading one frame produced.
#[derive(Debug)]
pub(crate) enum FrameRead {
    /// A whole frame (without its 4-byte length prefix).
    Frame(Bytes),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing (complete) arrived before the read timeout.
    TimedOut,
}

/// One TCP connection speaking raw Kafka frames; owned by one test thread.
pub(crate) struct RawClient {
    stream: TcpStream,
    next_correlation: i32,
    /// Broker's supported (min, max) per api key, filled by `negotiate`.
    versions: Vec<(i16, i16, i16)>,
}

impl RawClient {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_write_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            next_correlation: 1,
            versions: Vec::new(),
        })
    }

    /// Like `connect`, from the local address `source` (e.g. 127.0.0.2, to look like
    /// another client host on loopback).
    pub(crate) fn connect_from(addr: SocketAddr, source: IpAddr) -> Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sk.bind(&SocketAddr::new(source, 0).into())?;
        sk.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        let stream = TcpStream::from(sk);
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_write_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            next_correlation: 1,
            versions: Vec::new(),
        })
    }

    pub(crate) fn set_read_timeout(&self, t: Duration) -> Result<()> {
        Ok(self.stream.set_read_timeout(Some(t))?)
    }

    pub(crate) fn set_write_timeout(&self, t: Duration) -> Result<()> {
        Ok(self.stream.set_write_timeout(Some(t))?)
    }

    /// Writes bytes as they are (no framing).
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    pub(crate) fn shutdown_write(&self) -> Result<()> {
        Ok(self.stream.shutdown(std::net::Shutdown::Write)?)
    }

    /// True if some bytes are readable right now or arrive within the read timeout.
    pub(crate) fn has_data_within(&self, t: Duration) -> Result<bool> {
        self.stream.set_read_timeout(Some(t))?;
        let mut b = [0u8; 1];
        let r = self.stream.peek(&mut b);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(15)))?;
        match r {
            Ok(_) => Ok(true), // data, or EOF (0) which also means "not waiting"
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one length-prefixed frame.
    pub(crate) fn read_frame(&mut self) -> Result<FrameRead> {
        let mut len = [0u8; 4];
        if let Some(r) = read_exact_or(&mut self.stream, &mut len)? {
            return Ok(r);
        }
        let n = i32::from_be_bytes(len);
        if n < 0 || n as usize > MAX_FRAME {
            bail!("broker sent a frame length of {n}");
        }
        let mut buf = vec![0u8; n as usize];
        match read_exact_or(&mut self.stream, &mut buf)? {
            Some(FrameRead::TimedOut) => bail!("timed out in the middle of a {n}-byte frame"),
            Some(r) => Ok(r),
            None => Ok(FrameRead::Frame(Bytes::from(buf))),
        }
    }

    /// Encodes header + body for `R` at `version` into one frame (not sent).
    pub(crate) fn encode_request<R: Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> Result<(i32, Vec<u8>)> {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-raw-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        req.encode(&mut body, version)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        Ok((correlation, frame))
    }

    /// Sends `req` and returns its correlation id.
    pub(crate) fn send<R: Request>(&mut self, version: i16, req: &R) -> Result<i32> {
        let (correlation, frame) = self.encode_request(version, req)?;
        self.write_raw(&frame)?;
        Ok(correlation)
    }

    /// Reads the response to `correlation`, decoding it as `R::Response` at `version`.
    pub(crate) fn recv<R: Request>(
        &mut self,
        version: i16,
        correlation: i32,
    ) -> Result<R::Response> {
        let mut frame = match self.read_frame()? {
            FrameRead::Frame(f) => f,
            other => bail!(
                "expected a response to api {} v{version}, got {other:?}",
                R::KEY
            ),
        };
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let got = kafka_protocol::messages::ResponseHeader::decode(&mut frame, header_version)?;
        if got.correlation_id != correlation {
            bail!(
                "correlation id {} != expected {correlation}",
                got.correlation_id
            );
        }
        let resp = R::Response::decode(&mut frame, version)
            .with_context(|| format!("decoding response to api {} v{version}", R::KEY))?;
        Ok(resp)
    }

    /// Sends and waits for the response.
    pub(crate) fn call<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response> {
        let c = self.send(version, req)?;
        self.recv::<R>(version, c)
    }

    /// ApiVersions v3 (flexible), remembering the broker's ranges.
    pub(crate) fn negotiate(&mut self) -> Result<ApiVersionsResponse> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-tests"))
            .with_client_software_version(StrBytes::from_static_str("0.1.0"));
        let resp = self.call(3, &req)?;
        if resp.error_code != 0 {
            bail!("ApiVersions v3 error {}", resp.error_code);
        }
        self.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(resp)
    }

    /// Highest version of `R` that both the broker and `kafka-protocol` support, capped at
    /// `cap` (e.g. to stay below topic-id-only versions).
    pub(crate) fn version_for<R: Request>(&self, cap: i16) -> Result<i16> {
        let Some(&(_, bmin, bmax)) = self.versions.iter().find(|(k, _, _)| *k == R::KEY) else {
            bail!("broker does not advertise api key {}", R::KEY);
        };
        let lo = bmin.max(R::VERSIONS.min);
        let hi = bmax.min(R::VERSIONS.max).min(cap);
        if lo > hi {
            bail!(
                "no common version for api {}: broker {bmin}..={bmax}, cap {cap}",
                R::KEY
            );
        }
        Ok(hi)
    }
}

impl RawClient {
    /// One sessionless Fetch of `topic`/`partition` from `offset` (max_wait 0); returns
    /// (partition error code, high watermark, record bytes).
    pub(crate) fn fetch_once(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(i16, i64, Bytes)> {
        self.fetch_at_epoch(topic, partition, offset, -1)
    }

    /// `fetch_once` naming the leader epoch the client believes current (-1: none).
    pub(crate) fn fetch_at_epoch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        epoch: i32,
    ) -> Result<(i16, i64, Bytes)> {
        let version = self.version_for::<FetchRequest>(12)?;
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(epoch)
                    .with_partition_max_bytes(4 << 20)])]);
        let resp = self.call(version, &req)?;
        let Some(p) = resp
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
        else {
            bail!("fetch response lacks partition {partition}");
        };
        Ok((
            p.error_code,
            p.high_watermark,
            p.records.clone().unwrap_or_default(),
        ))
    }
}

impl RawClient {
    /// CreateTopics of (name, partitions) with replication factor 1; returns each topic's
    /// (name, error code) as answered. Needs `negotiate` first.
    pub(crate) fn create_topics(&mut self, topics: &[(&str, i32)]) -> Result<Vec<(String, i16)>> {
        let version = self.version_for::<CreateTopicsRequest>(7)?;
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(15_000)
            .with_topics(
                topics
                    .iter()
                    .map(|(name, partitions)| {
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_num_partitions(*partitions)
                            .with_replication_factor(1)
                    })
                    .collect(),
            );
        let resp = self.call(version, &req)?;
        Ok(resp
            .topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.error_code))
            .collect())
    }

    /// Metadata for `names` (None: every topic), without auto-creation unless asked.
    /// Needs `negotiate` first.
    pub(crate) fn metadata(
        &mut self,
        names: Option<&[&str]>,
        auto_create: bool,
    ) -> Result<MetadataResponse> {
        let version = self.version_for::<MetadataRequest>(12)?;
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(auto_create)
            .with_topics(names.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                    })
                    .collect()
            }));
        self.call(version, &req)
    }
}

/// The compression codec (attributes & 7) of the first v2 batch in `records`.
pub(crate) fn first_batch_codec(records: &[u8]) -> Result<i16> {
    // baseOffset 8 + batchLength 4 + partitionLeaderEpoch 4 + magic 1 + crc 4 = 21.
    let Some(attr) = records.get(21..23) else {
        bail!("no batch header in {} bytes", records.len());
    };
    if records[16] != 2 {
        bail!("first batch has magic {}, want 2", records[16]);
    }
    Ok(i16::from_be_bytes([attr[0], attr[1]]) & 7)
}

/// read_exact that maps EOF/reset to `Closed` and a timeout before any byte to `TimedOut`.
fn read_exact_or(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<FrameRead>> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(Some(FrameRead::Closed)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if filled == 0 {
                    return Ok(Some(FrameRead::TimedOut));
                }
                bail!("timed out after {filled} of {} bytes", buf.len());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(Some(FrameRead::Closed))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// A valid v2 RecordBatch holding `values` (no compression, producer id -1).
pub(crate) fn record_batch(values: &[&str], base_timestamp: i64) -> Result<Bytes> {
    producer_batch(values, base_timestamp, -1, -1, -1)
}

/// A valid v2 RecordBatch of `values` stamped with an idempotent producer's id, epoch and
/// base sequence (-1s for a plain batch).
pub(crate) fn producer_batch(
    values: &[&str],
    base_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<Bytes> {
    encode_batch(
        values,
        base_timestamp,
        (producer_id, producer_epoch, base_sequence),
        Compression::None,
    )
}

/// A valid v2 RecordBatch of `values` with its records section compressed (producer id -1).
pub(crate) fn compressed_batch(
    values: &[&str],
    base_timestamp: i64,
    compression: Compression,
) -> Result<Bytes> {
    encode_batch(values, base_timestamp, (-1, -1, -1), compression)
}

/// One v2 batch of `values`; `producer` is (id, epoch, base sequence), -1s for none.
fn encode_batch(
    values: &[&str],
    base_timestamp: i64,
    producer: (i64, i16, i32),
    compression: Compression,
) -> Result<Bytes> {
    let (producer_id, producer_epoch, base_sequence) = producer;
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever offset - sequence changes, so
            // plain batches get sequence = offset here and base sequence -1 patched below.
            sequence: base_sequence.max(0) + i as i32,
            timestamp: base_timestamp + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &opts)?;
    let mut b = buf.to_vec();
    // One batch: its length field (at 8) plus the 12 bytes before it cover everything.
    let batch_len = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if batch_len + 12 != b.len() {
        bail!(
            "encoder made more than one batch ({} bytes, first {batch_len} + 12)",
            b.len()
        );
    }
    if base_sequence < 0 {
        b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(Bytes::from(b))
}

/// v2 batch header: baseSequence field offset, and where the CRC-32C coverage starts.
const BASE_SEQUENCE: usize = 53;
const CRC_START: usize = 21;

/// A Produce request carrying `records` for one partition.
pub(crate) fn produce_request(
    topic: &str,
    partition: i32,
    acks: i16,
    records: Bytes,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// (error code, base offset) of the first partition in a Produce response.
pub(crate) fn partition_result(resp: &ProduceResponse) -> Result<(i16, i64)> {
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partition_responses.first());
    let Some(p) = p else {
        bail!("produce response has no partition: {resp:?}")
    };
    Ok((p.error_code, p.base_offset))
}
