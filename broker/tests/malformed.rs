//! Bad input over raw TCP: random bytes, bad length prefixes, truncated frames, a produce
//! with a corrupt CRC, an unknown api key and unsupported versions. Each must get a Kafka
//! error code or a closed connection, never a hang, a crash or stored garbage; a client on
//! another connection (opened before the bad input) keeps working afterwards.

mod common;

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use common::raw::{partition_result, produce_request, record_batch, FrameRead, RawClient};
use common::BrokerProcess;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ProduceRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_RECORD: i16 = 87;

/// The broker process is alive, the long-lived `other` connection still answers a
/// Metadata request, and a brand-new rdkafka client gets metadata too.
fn assert_healthy(broker: &mut BrokerProcess, other: &mut RawClient, what: &str) -> Result<()> {
    ensure!(broker.is_running(), "broker died after {what}");
    let v = other.version_for::<MetadataRequest>(12)?;
    let md = other.call(v, &MetadataRequest::default().with_topics(None))?;
    ensure!(
        md.brokers.len() == 1,
        "metadata after {what}: {} brokers",
        md.brokers.len()
    );
    let client: BaseConsumer = broker.client_config().create()?;
    client.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(())
}

fn connect_other(broker: &BrokerProcess) -> Result<RawClient> {
    let mut other = RawClient::connect(broker.addr())?;
    other.negotiate()?;
    Ok(other)
}

/// Reads until the broker closes or answers; a silent hang (timeout) is a failure.
fn expect_close_or_answer(conn: &mut RawClient, what: &str) -> Result<FrameRead> {
    conn.set_read_timeout(Duration::from_secs(15))?;
    match conn.read_frame() {
        Ok(FrameRead::TimedOut) => bail!("{what}: broker neither answered nor closed within 15 s"),
        Ok(r) => Ok(r),
        // A response frame of nonsense length counts as an answer we cannot parse.
        Err(e) => bail!("{what}: unreadable reply: {e}"),
    }
}

#[test]
fn random_bytes_only_affect_their_own_connection() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    let mut other = connect_other(&broker)?;
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut bytes = vec![0u8; 4096];
        rng.fill(&mut bytes[..]);
        let mut bad = RawClient::connect(broker.addr())?;
        // Unframed noise: the broker may wait for the rest of an allowed length, so only
        // a crash or collateral damage counts here.
        let _ = bad.write_raw(&bytes);
        bad.set_read_timeout(Duration::from_millis(500))?;
        let _ = bad.read_frame();
        drop(bad);

        // Framed noise: a sane length with a random body must be answered or closed.
        let body_len = 16 + (seed as usize * 37) % 300;
        let mut framed = (body_len as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes[..body_len]);
        let mut bad = RawClient::connect(broker.addr())?;
        bad.write_raw(&framed)?;
        expect_close_or_answer(&mut bad, &format!("random frame (seed {seed})"))?;
        assert_healthy(
            &mut broker,
            &mut other,
            &format!("random bytes (seed {seed})"),
        )?;
    }
    Ok(())
}

#[test]
fn bad_length_prefixes_close_the_connection() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    let mut other = connect_other(&broker)?;
    for len in [0x7fff_ffff_i32, i32::MIN, -1, 0, 200 << 20] {
        let mut bad = RawClient::connect(broker.addr())?;
        bad.write_raw(&len.to_be_bytes())?;
        bad.set_read_timeout(Duration::from_secs(15))?;
        match bad.read_frame()? {
            FrameRead::Closed => {}
            other => bail!("length prefix {len:#x}: want the connection closed, got {other:?}"),
        }
        assert_healthy(&mut broker, &mut other, &format!("length prefix {len:#x}"))?;
    }
    Ok(())
}

#[test]
fn truncated_frames_then_close_are_harmless() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    let mut other = connect_other(&broker)?;
    let (_, frame) = other.encode_request(
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    )?;
    for cut in [1, 3, 4, 6, 10, frame.len() - 1] {
        let mut bad = RawClient::connect(broker.addr())?;
        bad.write_raw(&frame[..cut])?;
        bad.shutdown_write()?;
        // Nothing complete was sent, so no answer may come; the broker must close.
        match expect_close_or_answer(&mut bad, &format!("frame cut at {cut}"))? {
            FrameRead::Closed => {}
            got => bail!(
                "frame cut at {cut} of {}: want close, got {got:?}",
                frame.len()
            ),
        }
        drop(bad);
        assert_healthy(
            &mut broker,
            &mut other,
            &format!("truncated frame ({cut} bytes)"),
        )?;
    }
    Ok(())
}

#[test]
fn produce_with_bad_crc_is_corrupt_message_and_stores_nothing() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    broker.create_topic("crc", 1, &[])?;
    let mut other = connect_other(&broker)?;
    let mut client = connect_other(&broker)?;
    let v = client.version_for::<ProduceRequest>(12)?; // names, not topic ids

    let good = record_batch(&["a", "b", "c"], 1_700_000_000_000)?;
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x55; // inside the last record's value: covered by the CRC
    let resp = client.call(v, &produce_request("crc", 0, -1, Bytes::from(bad)))?;
    let (code, _) = partition_result(&resp)?;
    ensure!(
        code == CORRUPT_MESSAGE,
        "bad CRC: error code {code}, want CORRUPT_MESSAGE (2)"
    );
    ensure!(
        broker.watermarks("crc", 0)? == (0, 0),
        "corrupt batch was stored: {:?}",
        broker.watermarks("crc", 0)?
    );

    // A batch whose length field promises more bytes than were sent.
    let mut short = good.to_vec();
    short.truncate(good.len() - 5);
    let resp = client.call(v, &produce_request("crc", 0, -1, Bytes::from(short)))?;
    let (code, _) = partition_result(&resp)?;
    ensure!(
        code == CORRUPT_MESSAGE || code == INVALID_RECORD,
        "truncated batch: error code {code}, want 2 or 87"
    );
    ensure!(
        broker.watermarks("crc", 0)? == (0, 0),
        "truncated batch was stored"
    );

    let resp = client.call(v, &produce_request("crc", 99, -1, good.clone()))?;
    let (code, _) = partition_result(&resp)?;
    ensure!(
        code == UNKNOWN_TOPIC_OR_PARTITION,
        "partition 99: error code {code}, want 3"
    );

    // The same connection still works: the intact batch is stored at offset 0.
    let resp = client.call(v, &produce_request("crc", 0, -1, good))?;
    let (code, base) = partition_result(&resp)?;
    ensure!(
        code == 0 && base == 0,
        "valid batch after bad ones: code {code}, base offset {base}"
    );
    ensure!(
        broker.watermarks("crc", 0)? == (0, 3),
        "valid batch not stored whole"
    );
    let consumed = broker.consume_all("crc", 1)?;
    let values: Vec<&[u8]> = consumed
        .iter()
        .filter_map(|c| c.payload.as_deref())
        .collect();
    ensure!(
        values == [b"a".as_slice(), b"b", b"c"],
        "stored values {values:?}"
    );
    assert_healthy(&mut broker, &mut other, "bad CRC produce")
}

#[test]
fn unknown_api_key_is_answered_or_closed() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    let mut other = connect_other(&broker)?;
    for api_key in [9_999_i16, 1_000, -7] {
        let mut body = Vec::new();
        body.extend_from_slice(&api_key.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes()); // version
        body.extend_from_slice(&77i32.to_be_bytes()); // correlation id
        body.extend_from_slice(&4i16.to_be_bytes());
        body.extend_from_slice(b"test");
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut bad = RawClient::connect(broker.addr())?;
        bad.write_raw(&frame)?;
        if let FrameRead::Frame(f) =
            expect_close_or_answer(&mut bad, &format!("api key {api_key}"))?
        {
            ensure!(
                f.len() >= 4 && f[..4] == 77i32.to_be_bytes(),
                "answer to api key {api_key} has the wrong correlation id"
            );
        }
        assert_healthy(
            &mut broker,
            &mut other,
            &format!("unknown api key {api_key}"),
        )?;
    }
    Ok(())
}

#[test]
fn unsupported_versions_get_unsupported_version_or_close() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    let mut other = connect_other(&broker)?;

    // ApiVersions at a version the broker does not know: KIP-511 says answer with a v0
    // response carrying UNSUPPORTED_VERSION and the ApiVersions range, so clients retry.
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&99i16.to_be_bytes());
    body.extend_from_slice(&5i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    body.push(0); // empty tagged fields, as a flexible header would carry
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut conn = RawClient::connect(broker.addr())?;
    conn.write_raw(&frame)?;
    match expect_close_or_answer(&mut conn, "ApiVersions v99")? {
        FrameRead::Frame(mut f) => {
            ensure!(
                f.len() >= 6 && f[..4] == 5i32.to_be_bytes(),
                "ApiVersions v99 answer has the wrong correlation id"
            );
            let _ = f.split_to(4);
            let resp = ApiVersionsResponse::decode(&mut f, 0)?;
            ensure!(
                resp.error_code == UNSUPPORTED_VERSION,
                "ApiVersions v99: error {}, want 35",
                resp.error_code
            );
            ensure!(
                resp.api_keys
                    .iter()
                    .any(|k| k.api_key == 18 && k.min_version == 0 && k.max_version >= 3),
                "ApiVersions v99 error response must list the ApiVersions range (KIP-511): {:?}",
                resp.api_keys
            );
        }
        got => bail!("ApiVersions v99: want an UNSUPPORTED_VERSION response, got {got:?}"),
    }
    // The connection that got the error may carry on with a supported version.
    conn.negotiate()?;

    // Metadata and Produce at version 99: an error answer or a closed connection.
    for (api_key, name) in [(3i16, "Metadata"), (0, "Produce"), (1, "Fetch")] {
        let mut body = Vec::new();
        body.extend_from_slice(&api_key.to_be_bytes());
        body.extend_from_slice(&99i16.to_be_bytes());
        body.extend_from_slice(&6i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.push(0);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut bad = RawClient::connect(broker.addr())?;
        bad.write_raw(&frame)?;
        if let FrameRead::Frame(f) = expect_close_or_answer(&mut bad, &format!("{name} v99"))? {
            ensure!(
                f.len() >= 4 && f[..4] == 6i32.to_be_bytes(),
                "{name} v99 answer has the wrong correlation id"
            );
        }
        assert_healthy(&mut broker, &mut other, &format!("{name} v99"))?;
    }
    Ok(())
}

/// Rewrites a v2 batch header field and recomputes the CRC, so only the semantic check
/// (not the checksum) can catch the lie.
fn forge(batch: &Bytes, at: usize, value: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[at..at + 4].copy_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[test]
fn batches_with_a_valid_crc_but_inconsistent_counts_are_rejected() -> Result<()> {
    const LAST_OFFSET_DELTA: usize = 23;
    const RECORDS_COUNT: usize = 57;
    let mut broker = BrokerProcess::spawn(2)?;
    broker.create_topic("liar", 1, &[])?;
    let mut other = connect_other(&broker)?;
    let mut client = connect_other(&broker)?;
    let v = client.version_for::<ProduceRequest>(12)?;
    let good = record_batch(&["a", "b", "c"], 1_700_000_000_000)?;
    for (what, at, value) in [
        ("records count 5 for 3 records", RECORDS_COUNT, 5),
        ("records count 0", RECORDS_COUNT, 0),
        ("lastOffsetDelta 9 for 3 records", LAST_OFFSET_DELTA, 9),
        ("lastOffsetDelta -1", LAST_OFFSET_DELTA, -1),
    ] {
        let resp = client.call(v, &produce_request("liar", 0, -1, forge(&good, at, value)))?;
        let (code, _) = partition_result(&resp)?;
        ensure!(
            code == INVALID_RECORD || code == CORRUPT_MESSAGE,
            "{what}: error code {code}, want INVALID_RECORD (87) or CORRUPT_MESSAGE (2)"
        );
        ensure!(
            broker.watermarks("liar", 0)? == (0, 0),
            "{what}: the batch was stored ({:?})",
            broker.watermarks("liar", 0)?
        );
    }
    // The intact batch still lands at offset 0.
    let (code, base) = partition_result(&client.call(v, &produce_request("liar", 0, -1, good))?)?;
    ensure!(
        code == 0 && base == 0,
        "intact batch: code {code}, base {base}"
    );
    assert_healthy(&mut broker, &mut other, "forged batch headers")
}
