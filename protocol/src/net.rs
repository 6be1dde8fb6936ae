//! How the client (and the node, for its peers) opens connections, behind a trait so the
//! jepsen-like simulation can substitute turmoil's simulated TCP for tokio's.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// Opens a byte stream to an address such as `127.0.0.1:7001`.
pub trait Connector: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Real TCP through tokio, with Nagle's algorithm off (requests are small and latency-bound).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioConnector;

impl Connector for TokioConnector {
    type Stream = tokio::net::TcpStream;
    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
