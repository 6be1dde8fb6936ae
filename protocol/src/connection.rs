//! One pipelined connection to a node: many requests in flight, matched to responses by id.
//! The client library talks to nodes through it, and so does a node forwarding a request for a
//! shard it does not host.
//!
//! A task owns the socket; callers hand it a request and a oneshot for the answer through a
//! bounded channel, so a slow node pushes back on callers instead of growing a queue. When the
//! socket fails, every waiting caller sees its oneshot closed and treats the outcome as unknown.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::net::Connector;
use crate::{
    decode_frame, encode_frame, frame_codec, Handshake, Header, Receipt, Request, RequestFrame,
    Response, ResponseFrame, Role, HANDSHAKE_BYTES,
};

/// Requests a connection holds in flight at most; callers wait for room beyond it.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Why [`Connection::call`] got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The connection had ended before it took the request: it never left this process.
    #[error("connection closed before the request was sent")]
    NotSent,
    /// The connection ended after it took the request: it may have reached the node.
    #[error("connection lost before the answer")]
    Lost,
}

/// A node's answer and its consistency receipt (none for refusals and errors).
pub type Answer = (Response, Option<Receipt>);

type Pending = (Header, Request, oneshot::Sender<Answer>);

/// A handle to a connection task. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    requests: mpsc::Sender<Pending>,
}

impl Connection {
    /// Connects, performs the handshake and starts the connection task.
    pub async fn open<C: Connector>(
        connector: &C,
        addr: &str,
        max_frame_bytes: usize,
    ) -> Result<Connection, String> {
        let mut stream = connector
            .connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .write_all(&Handshake::new(Role::Client).encode())
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        let handshake =
            Handshake::decode(&reply).map_err(|e| format!("handshake with {addr}: {e}"))?;
        handshake
            .check_version()
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        let (sender, receiver) = mpsc::channel(MAX_IN_FLIGHT);
        tokio::spawn(run(
            Framed::new(stream, frame_codec(max_frame_bytes)),
            receiver,
        ));
        Ok(Connection { requests: sender })
    }

    /// Sends a request and waits for its response; `Err` when the connection is gone, saying
    /// whether the request may have reached the node.
    pub async fn call(&self, request: Request) -> Result<Answer, CallError> {
        self.call_in(Header::default(), request).await
    }

    /// Like [`Connection::call`], for a request sent with `header` (its group and the ring
    /// epoch it was routed by).
    pub async fn call_in(&self, header: Header, request: Request) -> Result<Answer, CallError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((header, request, reply))
            .await
            .map_err(|_| CallError::NotSent)?;
        answer.await.map_err(|_| CallError::Lost)
    }

    /// Whether the connection task has ended.
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}

async fn run<S>(
    mut framed: Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    mut requests: mpsc::Receiver<Pending>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut waiting: BTreeMap<u64, oneshot::Sender<Answer>> = BTreeMap::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            biased;
            frame = framed.next() => {
                let Some(Ok(bytes)) = frame else { break };
                // The response's header is not needed: the id names the request.
                let Ok(ResponseFrame { id, response, receipt, .. }) = decode_frame::<ResponseFrame>(&bytes) else {
                    tracing::warn!("undecodable response frame: closing the connection");
                    break;
                };
                if let Some(reply) = waiting.remove(&id) {
                    let _ = reply.send((response, receipt));
                }
            }
            pending = requests.recv(), if waiting.len() < MAX_IN_FLIGHT => {
                let Some((header, request, reply)) = pending else { break };
                next_id += 1;
                let frame = RequestFrame { id: next_id, header, request };
                let Ok(body) = encode_frame(&frame) else { continue };
                if framed.send(Bytes::from(body)).await.is_err() {
                    break;
                }
                waiting.insert(next_id, reply);
            }
        }
    }
}
