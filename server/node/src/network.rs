//! The node's view of the network: listen, accept, connect. Behind a trait so that the same node
//! code runs on tokio's TCP in production and on turmoil's simulated TCP in the jepsen-like
//! simulation.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use ringleader_protocol::net::{Connector, TokioConnector};

/// A network a node can listen on and connect through.
pub trait Network: Connector {
    type Listener: Send + 'static;
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// Accepts one connection; the address is the remote end's (for logs).
    fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Network for TokioConnector {
    type Listener = tokio::net::TcpListener;
    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }
    async fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, remote))
    }
}
