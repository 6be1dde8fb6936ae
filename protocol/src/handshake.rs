//! The first bytes of every connection: magic, protocol version and who is connecting.
//!
//! Both sides send one; a side speaking another protocol version is refused with
//! [`HandshakeError::Version`], which names both versions so an operator knows which side to
//! upgrade.

/// Bumped whenever a frame's encoding changes; a peer speaking another version is refused.
pub const PROTOCOL_VERSION: u8 = 9;
const MAGIC: &[u8; 3] = b"RLG";
/// Bytes of a handshake.
pub const HANDSHAKE_BYTES: usize = 13;

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    /// Another node, sending Raft messages (a node also answers every handshake in this role,
    /// naming itself).
    Peer {
        node_id: u64,
    },
    /// An operator tool (`ringleader fault`): proves knowledge of the cluster secret as a peer
    /// does, then sends [`crate::admin::AdminRequest`]s. Carries no node id.
    Admin,
}

/// Why a handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a ringleader connection (bad magic)")]
    BadMagic,
    #[error("unknown connection role {0}")]
    UnknownRole(u8),
    /// The other side speaks another protocol version: nothing after the handshake would be
    /// understood, so the connection is closed.
    #[error("the other side speaks protocol version {theirs}, this build speaks version {ours}: run the same ringleader version on both sides")]
    Version { theirs: u8, ours: u8 },
}

/// The first bytes of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub version: u8,
    pub role: Role,
}

impl Handshake {
    /// A handshake of this build's protocol version.
    pub fn new(role: Role) -> Self {
        Handshake {
            version: PROTOCOL_VERSION,
            role,
        }
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_BYTES] {
        let mut bytes = [0u8; HANDSHAKE_BYTES];
        bytes[0..3].copy_from_slice(MAGIC);
        bytes[3] = self.version;
        let (role, node_id) = match self.role {
            Role::Client => (0u8, 0u64),
            Role::Peer { node_id } => (1u8, node_id),
            Role::Admin => (2u8, 0),
        };
        bytes[4] = role;
        bytes[5..13].copy_from_slice(&node_id.to_le_bytes());
        bytes
    }

    /// Parses a handshake; the version is returned as sent, for the caller to check with
    /// [`Handshake::check_version`] (after answering with its own, so the other side can say
    /// what is wrong too).
    pub fn decode(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<Self, HandshakeError> {
        if &bytes[0..3] != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[5..13]);
        let role = match bytes[4] {
            0 => Role::Client,
            1 => Role::Peer {
                node_id: u64::from_le_bytes(id),
            },
            2 => Role::Admin,
            other => return Err(HandshakeError::UnknownRole(other)),
        };
        Ok(Handshake {
            version: bytes[3],
            role,
        })
    }

    /// Refuses a handshake of another protocol version than this build's.
    pub fn check_version(&self) -> Result<(), HandshakeError> {
        if self.version == PROTOCOL_VERSION {
            Ok(())
        } else {
            Err(HandshakeError::Version {
                theirs: self.version,
                ours: PROTOCOL_VERSION,
            })
        }
    }
}
