//! Peer authentication: a shared cluster secret and the HMAC challenge of the peer handshake.
//!
//! Clients and peers share one port, and a peer connection gets the Raft role (the node's
//! log and votes) and large frames, so the peer role must be earned, not claimed. After the
//! fixed handshake both sides send a fresh random nonce and each proves it knows the cluster
//! secret with HMAC-SHA256 over both nonces and both node ids, labelled with its side of the
//! exchange (so a tag can never be reflected back as the other side's proof):
//!
//! ```text
//! initiator -> acceptor: Handshake(Peer a) || nonce_a
//! acceptor  -> initiator: Handshake(Peer b) || nonce_b || HMAC(k, "acceptor"  || nonce_a || nonce_b || a || b)
//! initiator -> acceptor: HMAC(k, "initiator" || nonce_a || nonce_b || a || b)
//! ```
//!
//! The acceptor's fresh nonce makes a recorded exchange useless for a replay. Tags are compared
//! in constant time (`Mac::verify_slice`).
//!
//! An operator tool (`ringleader fault`, role `Admin`) runs the same exchange with initiator id 0
//! and its own side labels ("admin acceptor", "admin initiator"), so an admin proof can never be
//! replayed as a peer's, nor a peer's as an admin's ([`initiate_admin`], [`accept_admin`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use consensus::NodeId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
pub const TAG_BYTES: usize = 32;
/// A secret shorter than this is refused: it could be guessed.
pub const MIN_SECRET_BYTES: usize = 16;
/// The name `cluster up` gives the secret it generates in the cluster's data directory.
pub const SECRET_FILE_NAME: &str = "cluster-secret";

const LABEL: &[u8] = b"ringleader peer auth v1";

/// Why a secret could not be loaded or a peer could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the cluster secret file {path}: {source}")]
    ReadSecret { path: PathBuf, source: io::Error },
    #[error("writing the cluster secret file {path}: {source}")]
    WriteSecret { path: PathBuf, source: io::Error },
    #[error(
        "the cluster secret{} is {len} bytes; it needs at least {MIN_SECRET_BYTES} \
         (e.g. 64 hex digits from `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)",
        path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
    )]
    SecretTooShort { path: Option<PathBuf>, len: usize },
    #[error("peer handshake i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the peer did not prove knowledge of the cluster secret (wrong or missing secret)")]
    BadTag,
}

/// The cluster secret every node of a cluster shares. Its bytes are never printed.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A secret from raw bytes; at least [`MIN_SECRET_BYTES`].
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let bytes: Vec<u8> = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(AuthError::SecretTooShort {
                path: None,
                len: bytes.len(),
            });
        }
        Ok(ClusterSecret(bytes.into()))
    }

    /// Reads a secret file: its contents, less surrounding whitespace (so a trailing newline
    /// written by an editor or `echo` does not make two nodes' secrets differ).
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::ReadSecret {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(AuthError::SecretTooShort {
                path: Some(path.to_path_buf()),
                len: trimmed.len(),
            });
        }
        Ok(ClusterSecret(trimmed.into()))
    }

    fn tag(&self, side: &[u8], transcript: &Transcript) -> Hmac<Sha256> {
        // `new_from_slice` accepts keys of any length for HMAC; it cannot fail here.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(LABEL);
        mac.update(side);
        mac.update(&transcript.initiator_nonce);
        mac.update(&transcript.acceptor_nonce);
        mac.update(&transcript.initiator_id.to_be_bytes());
        mac.update(&transcript.acceptor_id.to_be_bytes());
        mac
    }
}

/// The secret named by `serve --cluster-secret-file` (if any), for the binary.
pub fn load_secret(path: Option<&Path>) -> Result<Option<ClusterSecret>, AuthError> {
    path.map(ClusterSecret::from_file).transpose()
}

/// Creates `dir/cluster-secret` (32 random bytes as 64 hex digits, mode 0600) unless it exists,
/// and returns its path. `cluster up` calls this so a local cluster is authenticated without
/// any setup; rerunning it keeps the existing secret, so restarted nodes still agree.
pub fn ensure_secret_file(dir: &Path) -> Result<PathBuf, AuthError> {
    let path = dir.join(SECRET_FILE_NAME);
    if path.exists() {
        ClusterSecret::from_file(&path)?;
        return Ok(path);
    }
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let write = || -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(hex.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    write().map_err(|source| AuthError::WriteSecret {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The labels of the two sides' tags: peers and admin tools label theirs differently.
struct Sides {
    acceptor: &'static [u8],
    initiator: &'static [u8],
}

const PEER_SIDES: Sides = Sides {
    acceptor: b"acceptor",
    initiator: b"initiator",
};

const ADMIN_SIDES: Sides = Sides {
    acceptor: b"admin acceptor",
    initiator: b"admin initiator",
};

/// The initiator id an admin tool uses in the transcript (no node has id 0).
pub const ADMIN_INITIATOR_ID: NodeId = 0;

/// What both tags are computed over.
struct Transcript {
    initiator_nonce: [u8; NONCE_BYTES],
    acceptor_nonce: [u8; NONCE_BYTES],
    initiator_id: NodeId,
    acceptor_id: NodeId,
}

/// A fresh nonce. Transport randomness only: it never reaches consensus or the state machine,
/// and its value does not change any message's size or timing (so the simulation stays
/// deterministic).
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

/// The initiator's side, after it sent `Handshake(Peer self_id) || initiator_nonce` and read and
/// checked the acceptor's handshake (naming `acceptor_id`): reads the acceptor's nonce and tag,
/// checks the tag, sends its own.
pub async fn initiate<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    initiator_id: NodeId,
    acceptor_id: NodeId,
    initiator_nonce: [u8; NONCE_BYTES],
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    initiate_as(
        &PEER_SIDES,
        stream,
        secret,
        initiator_id,
        acceptor_id,
        initiator_nonce,
    )
    .await
}

/// [`initiate`] for an admin tool (role `Admin`), after it sent `Handshake(Admin) || nonce` and
/// read the node's handshake naming `acceptor_id`.
pub async fn initiate_admin<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    acceptor_id: NodeId,
    initiator_nonce: [u8; NONCE_BYTES],
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    initiate_as(
        &ADMIN_SIDES,
        stream,
        secret,
        ADMIN_INITIATOR_ID,
        acceptor_id,
        initiator_nonce,
    )
    .await
}

async fn initiate_as<S>(
    sides: &Sides,
    stream: &mut S,
    secret: &ClusterSecret,
    initiator_id: NodeId,
    acceptor_id: NodeId,
    initiator_nonce: [u8; NONCE_BYTES],
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut acceptor_nonce = [0u8; NONCE_BYTES];
    stream.read_exact(&mut acceptor_nonce).await?;
    let mut acceptor_tag = [0u8; TAG_BYTES];
    stream.read_exact(&mut acceptor_tag).await?;
    let transcript = Transcript {
        initiator_nonce,
        acceptor_nonce,
        initiator_id,
        acceptor_id,
    };
    secret
        .tag(sides.acceptor, &transcript)
        .verify_slice(&acceptor_tag)
        .map_err(|_| AuthError::BadTag)?;
    let own_tag = secret
        .tag(sides.initiator, &transcript)
        .finalize()
        .into_bytes();
    stream.write_all(&own_tag).await?;
    Ok(())
}

/// The acceptor's side, after it read `Handshake(Peer initiator_id)` and answered with its own
/// handshake: reads the initiator's nonce, sends its nonce and tag, checks the initiator's tag.
pub async fn accept<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    initiator_id: NodeId,
    acceptor_id: NodeId,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_as(&PEER_SIDES, stream, secret, initiator_id, acceptor_id).await
}

/// [`accept`] for an admin tool, after the node read `Handshake(Admin)` and answered.
pub async fn accept_admin<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    acceptor_id: NodeId,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_as(
        &ADMIN_SIDES,
        stream,
        secret,
        ADMIN_INITIATOR_ID,
        acceptor_id,
    )
    .await
}

async fn accept_as<S>(
    sides: &Sides,
    stream: &mut S,
    secret: &ClusterSecret,
    initiator_id: NodeId,
    acceptor_id: NodeId,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut initiator_nonce = [0u8; NONCE_BYTES];
    stream.read_exact(&mut initiator_nonce).await?;
    let transcript = Transcript {
        initiator_nonce,
        acceptor_nonce: fresh_nonce(),
        initiator_id,
        acceptor_id,
    };
    let own_tag = secret
        .tag(sides.acceptor, &transcript)
        .finalize()
        .into_bytes();
    let mut reply = [0u8; NONCE_BYTES + TAG_BYTES];
    reply[..NONCE_BYTES].copy_from_slice(&transcript.acceptor_nonce);
    reply[NONCE_BYTES..].copy_from_slice(&own_tag);
    stream.write_all(&reply).await?;
    let mut initiator_tag = [0u8; TAG_BYTES];
    stream.read_exact(&mut initiator_tag).await?;
    secret
        .tag(sides.initiator, &transcript)
        .verify_slice(&initiator_tag)
        .map_err(|_| AuthError::BadTag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::from_bytes(text.as_bytes().to_vec()).unwrap()
    }

    async fn exchange(
        initiator_secret: ClusterSecret,
        acceptor_secret: ClusterSecret,
    ) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let initiator = async move {
            let nonce = fresh_nonce();
            a.write_all(&nonce).await?;
            initiate(&mut a, &initiator_secret, 1, 2, nonce).await
        };
        let acceptor = async move { accept(&mut b, &acceptor_secret, 1, 2).await };
        tokio::join!(initiator, acceptor)
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_sides() {
        let (initiator, acceptor) = exchange(
            secret("correct horse battery staple"),
            secret("correct horse battery staple"),
        )
        .await;
        assert!(initiator.is_ok(), "{initiator:?}");
        assert!(acceptor.is_ok(), "{acceptor:?}");
    }

    #[tokio::test]
    async fn different_secrets_are_refused_by_the_initiator_first() {
        let (initiator, acceptor) = exchange(
            secret("correct horse battery staple"),
            secret("correct horse battery stapler"),
        )
        .await;
        assert!(matches!(initiator, Err(AuthError::BadTag)), "{initiator:?}");
        // The initiator hung up without a tag: the acceptor never grants the role.
        assert!(acceptor.is_err());
    }

    #[tokio::test]
    async fn an_acceptor_refuses_a_wrong_or_reflected_tag() {
        let secret = secret("correct horse battery staple");
        let (mut attacker, mut node) = tokio::io::duplex(1024);
        let acceptor = {
            let secret = secret.clone();
            tokio::spawn(async move { accept(&mut node, &secret, 1, 2).await })
        };
        attacker.write_all(&[7u8; NONCE_BYTES]).await.unwrap();
        let mut reply = [0u8; NONCE_BYTES + TAG_BYTES];
        attacker.read_exact(&mut reply).await.unwrap();
        // Reflect the acceptor's own tag back as the initiator's proof.
        attacker.write_all(&reply[NONCE_BYTES..]).await.unwrap();
        let result = acceptor.await.unwrap();
        assert!(matches!(result, Err(AuthError::BadTag)), "{result:?}");
    }

    /// An admin tool's proof is labelled as such: a node expecting a peer's refuses it (and the
    /// other way round), even with the right secret and the same ids.
    #[tokio::test]
    async fn an_admin_proof_is_not_a_peer_proof() {
        let secret = secret("correct horse battery staple");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let admin = {
            let secret = secret.clone();
            async move {
                let nonce = fresh_nonce();
                a.write_all(&nonce).await?;
                initiate_admin(&mut a, &secret, 2, nonce).await
            }
        };
        let peer_acceptor = async move { accept(&mut b, &secret, ADMIN_INITIATOR_ID, 2).await };
        let (admin, acceptor) = tokio::join!(admin, peer_acceptor);
        assert!(matches!(admin, Err(AuthError::BadTag)), "{admin:?}");
        assert!(acceptor.is_err());
        let secret = self::secret("correct horse battery staple");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let admin = {
            let secret = secret.clone();
            async move {
                let nonce = fresh_nonce();
                a.write_all(&nonce).await?;
                initiate_admin(&mut a, &secret, 2, nonce).await
            }
        };
        let admin_acceptor = async move { accept_admin(&mut b, &secret, 2).await };
        let (admin, acceptor) = tokio::join!(admin, admin_acceptor);
        assert!(admin.is_ok(), "{admin:?}");
        assert!(acceptor.is_ok(), "{acceptor:?}");
    }

    #[test]
    fn secret_files_are_trimmed_checked_and_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        assert!(matches!(
            ClusterSecret::from_file(&short),
            Err(AuthError::SecretTooShort { len: 8, .. })
        ));
        let path = ensure_secret_file(dir.path()).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert_eq!(first.len(), 65);
        assert_eq!(ensure_secret_file(dir.path()).unwrap(), path);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            first,
            "kept, not regenerated"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(format!("{:?}", ClusterSecret::from_file(&path).unwrap()).contains("redacted"));
    }
}
