//! A Kafka-protocol connection from this broker to another broker's Kafka listener, one
//! exchange at a time: followers fetching from their leader (`replication.rs`), the
//! transaction coordinator writing markers to partition leaders (`txn_markers.rs`) and a
//! metrics scrape asking leaders for high watermarks (`metrics/remote_hw.rs`). Owned by
//! the task that opened it, on one shard; never crosses cores.
//!
//! Every exchange is bounded in time (`timeout`) and in answer size (`MAX_RESPONSE`); an
//! answer whose correlation id is not the request's is an error (the caller drops the
//! connection).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest answer accepted from a peer.
const MAX_RESPONSE: usize = 64 << 20;

/// A connection to a peer's Kafka listener.
pub(crate) struct PeerConn {
    stream: TcpStream,
    correlation: i32,
    client_id: &'static str,
    timeout: Duration,
}

impl PeerConn {
    /// Connects to `addr` ("host:port"); requests carry `client_id`, and each exchange
    /// (the peer's long poll included) must complete within `timeout`.
    pub(crate) async fn open(
        addr: &str,
        client_id: &'static str,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let connect = future::or(async { Some(TcpStream::connect(addr).await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        });
        let stream = connect.await.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
        })??;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            correlation: 0,
            client_id,
            timeout,
        })
    }

    /// Sends `req` at `version` and reads its answer.
    pub(crate) async fn call<R: Request + Encodable>(
        &mut self,
        version: i16,
        req: &R,
    ) -> anyhow::Result<R::Response>
    where
        R::Response: Decodable + HeaderVersion,
    {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        req.encode(&mut body, version)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_RESPONSE {
                anyhow::bail!("answer of {len} bytes from a peer");
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok::<Bytes, anyhow::Error>(Bytes::from(buf))
        };
        let timeout = self.timeout;
        let timed = future::or(async { Some(exchange.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        let mut buf = timed.ok_or_else(|| anyhow::anyhow!("no answer from the peer in time"))??;
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version))?;
        if h.correlation_id != self.correlation {
            anyhow::bail!(
                "answer {} to request {}",
                h.correlation_id,
                self.correlation
            );
        }
        R::Response::decode(&mut buf, version)
    }
}
