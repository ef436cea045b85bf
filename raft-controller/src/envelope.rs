//! The transport envelope between controller nodes: a raft `Message` (rust-protobuf, as
//! raft-rs defines it) encoded to bytes and carried in Sluice's own prost message with the
//! cluster id and the sender and receiver ids.
//!
//! ```text
//!  send:    Message ─protobuf─► bytes ─► RaftEnvelope { cluster_id, from, to, message } ─prost─► wire
//!  receive: wire ─(size ≤ max)─► prost decode ─► cluster, to, from checks ─► protobuf decode
//!           ─► header agrees with message, type is one peers may send ─► Node::step
//! ```
//! Invariant: `decode` never panics and never allocates from a length it has not checked
//! against `max_bytes`; anything malformed, oversized, misaddressed or of a type a peer
//! must not send is an `Error::Envelope`, and the caller drops that one message.
//! A stream transport prefixes each envelope with `frame_header` and reads the length back
//! with `frame_len`, which applies the same bound before the body is read.

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::error::{Error, Result};

/// One raft message on the wire between two controller nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftEnvelope {
    /// The cluster both ends belong to; a node drops messages of another cluster.
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(uint64, tag = "2")]
    pub from: u64,
    #[prost(uint64, tag = "3")]
    pub to: u64,
    /// The raft `Message`, protobuf-encoded by raft-rs's own codec.
    #[prost(bytes = "bytes", tag = "4")]
    pub message: Bytes,
}

/// What a receiving node accepts.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub cluster_id: String,
    /// This node's raft id; envelopes for another id are refused.
    pub local_id: u64,
    /// Largest envelope accepted, in bytes (snapshots travel whole, so this bounds the
    /// metadata image a follower can be sent).
    pub max_bytes: usize,
}

/// Encodes `msg` for the wire, addressed by its own `from` and `to`.
pub fn encode(cluster_id: &str, msg: &Message) -> Result<Vec<u8>> {
    let message = msg
        .write_to_bytes()
        .map_err(|e| Error::Envelope(format!("cannot encode raft message: {e}")))?;
    let envelope = RaftEnvelope {
        cluster_id: cluster_id.to_string(),
        from: msg.from,
        to: msg.to,
        message: Bytes::from(message),
    };
    Ok(prost::Message::encode_to_vec(&envelope))
}

/// Message types a peer may send. Local types (`MsgHup`, `MsgBeat`, ...) are raft's own
/// signals, and `MsgPropose` would let a peer append entries through the leader: proposals
/// enter only through `Node::propose`.
fn peer_may_send(t: MessageType) -> bool {
    use MessageType::*;
    matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow
            | MsgTransferLeader
            | MsgReadIndex
            | MsgReadIndexResp
    )
}

/// Decodes and checks one envelope received by `receiver`.
pub fn decode(bytes: &[u8], receiver: &Receiver) -> Result<Message> {
    if bytes.len() > receiver.max_bytes {
        return Err(Error::Envelope(format!(
            "{} bytes exceeds the maximum of {}",
            bytes.len(),
            receiver.max_bytes
        )));
    }
    let envelope: RaftEnvelope = prost::Message::decode(bytes)
        .map_err(|e| Error::Envelope(format!("envelope does not decode: {e}")))?;
    if envelope.cluster_id != receiver.cluster_id {
        return Err(Error::Envelope(format!(
            "cluster {:?} is not this cluster",
            envelope.cluster_id
        )));
    }
    if envelope.to != receiver.local_id {
        return Err(Error::Envelope(format!(
            "addressed to node {}, this is node {}",
            envelope.to, receiver.local_id
        )));
    }
    if envelope.from == 0 || envelope.from == receiver.local_id {
        return Err(Error::Envelope(format!("bad sender {}", envelope.from)));
    }
    let msg = Message::parse_from_bytes(&envelope.message)
        .map_err(|e| Error::Envelope(format!("raft message does not decode: {e}")))?;
    if msg.from != envelope.from || msg.to != envelope.to {
        return Err(Error::Envelope(format!(
            "message {}→{} in an envelope {}→{}",
            msg.from, msg.to, envelope.from, envelope.to
        )));
    }
    if !peer_may_send(msg.get_msg_type()) {
        return Err(Error::Envelope(format!(
            "{:?} is not sent between peers",
            msg.get_msg_type()
        )));
    }
    Ok(msg)
}

/// The 4-byte big-endian length prefix of an envelope on a stream.
pub fn frame_header(envelope: &[u8]) -> Result<[u8; 4]> {
    let len = u32::try_from(envelope.len())
        .map_err(|_| Error::Envelope(format!("{} bytes cannot be framed", envelope.len())))?;
    Ok(len.to_be_bytes())
}

/// The body length a stream frame header announces, refused past `max_bytes` before
/// anything is read or allocated for it.
pub fn frame_len(header: [u8; 4], max_bytes: usize) -> Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max_bytes {
        return Err(Error::Envelope(format!(
            "frame of {len} bytes exceeds the maximum of {max_bytes}"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn receiver() -> Receiver {
        Receiver {
            cluster_id: "sluice-test".to_string(),
            local_id: 2,
            max_bytes: 1 << 16,
        }
    }

    fn append_msg() -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        m.index = 41;
        m.log_term = 6;
        m.commit = 40;
        let e = raft::eraftpb::Entry {
            index: 42,
            term: 7,
            data: Bytes::from_static(b"create topic orders"),
            ..Default::default()
        };
        m.mut_entries().push(e);
        m
    }

    #[test]
    fn round_trip() {
        let m = append_msg();
        let wire = encode("sluice-test", &m).unwrap(); // ok: test
        assert_eq!(decode(&wire, &receiver()).unwrap(), m); // ok: test
        let header = frame_header(&wire).unwrap(); // ok: test
        assert_eq!(frame_len(header, 1 << 16).unwrap(), wire.len()); // ok: test
        assert!(frame_len([0xff; 4], 1 << 16).is_err());
    }

    #[test]
    fn refuses_misaddressed_oversized_and_forbidden_messages() {
        let m = append_msg();
        let wire = encode("other-cluster", &m).unwrap(); // ok: test
        assert!(decode(&wire, &receiver()).is_err());

        let mut to3 = m.clone();
        to3.to = 3;
        assert!(decode(&encode("sluice-test", &to3).unwrap(), &receiver()).is_err()); // ok: test

        let mut small = receiver();
        small.max_bytes = 10;
        assert!(decode(&encode("sluice-test", &m).unwrap(), &small).is_err()); // ok: test

        let mut propose = m.clone();
        propose.set_msg_type(MessageType::MsgPropose);
        assert!(decode(&encode("sluice-test", &propose).unwrap(), &receiver()).is_err()); // ok: test
        let mut hup = m.clone();
        hup.set_msg_type(MessageType::MsgHup);
        assert!(decode(&encode("sluice-test", &hup).unwrap(), &receiver()).is_err()); // ok: test

        // Header and inner message disagree on the sender.
        let inner = m.write_to_bytes().unwrap(); // ok: test
        let forged = RaftEnvelope {
            cluster_id: "sluice-test".to_string(),
            from: 3,
            to: 2,
            message: Bytes::from(inner),
        };
        let wire = prost::Message::encode_to_vec(&forged);
        assert!(decode(&wire, &receiver()).is_err());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let wire = encode("sluice-test", &append_msg()).unwrap(); // ok: test
        for cut in 0..wire.len() {
            let _ = decode(&wire[..cut], &receiver());
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let mut bad = wire.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bad.len());
                bad[i] = rng.random();
            }
            if let Ok(m) = decode(&bad, &receiver()) {
                assert_eq!((m.from, m.to), (1, 2));
            }
        }
        for len in [0usize, 1, 5, 64, 4096] {
            for _ in 0..500 {
                let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // Random bytes almost never name this cluster and node; they must not panic.
                if let Ok(m) = decode(&junk, &receiver()) {
                    assert_eq!(m.to, 2);
                }
            }
        }
        // A raft message whose length prefixes claim far more than is there.
        let lying = RaftEnvelope {
            cluster_id: "sluice-test".to_string(),
            from: 1,
            to: 2,
            message: Bytes::from_static(&[0x22, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
        };
        let wire = prost::Message::encode_to_vec(&lying);
        assert!(decode(&wire, &receiver()).is_err());
    }
}
