//! ringleader's [`Network`] on turmoil's simulated TCP, so the real node and client code run
//! inside the simulation unchanged.
//!
//! Addresses are the same `host:port` strings the nodes use in production; turmoil resolves the
//! host names (`n1`, `n2`, ...) it registered. A node binds the unspecified address on its
//! port, as a server behind a host name would.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use ringleader_client::Connector;
use ringleader_node::network::Network;
use turmoil::net::{TcpListener, TcpStream};

/// turmoil's network, as seen from inside a simulated host.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNetwork;

impl Connector for TurmoilNetwork {
    type Stream = TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

impl Network for TurmoilNetwork {
    type Listener = TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<TcpListener> {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port_of(addr)?))).await
    }

    async fn accept(&self, listener: &mut TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        listener.accept().await
    }
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> io::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("address {addr:?} is not host:port"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::port_of;

    #[test]
    fn ports_are_parsed_from_host_port_addresses() {
        assert_eq!(port_of("n1:7001").unwrap(), 7001);
        assert!(port_of("n1").is_err());
        assert!(port_of("n1:http").is_err());
    }
}
