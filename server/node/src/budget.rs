//! Resource budgets of the listening side: how many connections of each kind, how much memory
//! their buffered frames may take, and how long a connection may sit idle or dribble a frame.
//!
//! Why: one shared connection limit let about 1,100 idle clients lock the peers out (the leader
//! could no longer hear its followers), and `LengthDelimitedCodec` reserves a frame's whole
//! declared length as soon as it reads the length, so 100 connections each sending an 8 MiB
//! frame one byte short held 800 MB. Here:
//! - clients and peers have separate connection budgets ([`ConnRegistry`]); a full client
//!   budget sheds the least recently active idle client (or refuses the newcomer when none is
//!   idle), a full per-peer budget sheds that peer's oldest connection, so a peer's outbound
//!   connection always finds room;
//! - [`FrameCodec`] reads a frame's length, asks a shared [`ByteBudget`] for that many bytes and
//!   only then buffers the body; a frame the budget cannot cover is refused with an error;
//! - the connection loops close a connection that is idle past [`NetConfig::idle_timeout`] or
//!   has not completed a started frame within [`NetConfig::frame_deadline`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use crate::auth::ClusterSecret;

/// Networking limits of a node (defaults in [`NetConfig::default`]).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The secret peers prove they know; required when the node has peers.
    pub cluster_secret: Option<ClusterSecret>,
    /// Whether an operator who proves knowledge of the cluster secret may set fault rules
    /// (drop or delay peer traffic, see [`crate::injected`]). Off by default; `serve
    /// --allow-faults` turns it on, for experiments only.
    pub allow_faults: bool,
    /// Client connections served at once; past it the least recently active idle one is shed.
    pub max_client_connections: usize,
    /// Connections from one authenticated peer at once; past it that peer's oldest is shed.
    pub max_connections_per_peer: usize,
    /// Connections still in their handshake at once; past it new connections are closed at once.
    pub max_handshaking_connections: usize,
    /// A connection must complete its handshake (and a peer its authentication) within this.
    pub handshake_timeout: Duration,
    /// A connection with nothing in flight and no frame started for this long is closed.
    pub idle_timeout: Duration,
    /// A frame whose first byte arrived must be complete within this, or the connection closes.
    pub frame_deadline: Duration,
    /// How often a connection checks its idle timeout and frame deadline.
    pub check_interval: Duration,
    /// Client frames up to this size are covered by the connection's own allowance; larger ones
    /// must fit in the shared budget below.
    pub small_frame_bytes: usize,
    /// Bytes all client connections together may hold in large frames being received.
    pub client_frame_budget_bytes: usize,
    /// Bytes of client requests received and not yet handled by the node (queued for it, or
    /// waiting to be queued). A connection whose next request does not fit waits, reading
    /// nothing more: TCP pushes back on the client. Past the node, Raft bounds what it holds
    /// (`consensus::Config::max_uncommitted_bytes`).
    pub queued_request_budget_bytes: usize,
    /// Bytes one peer may hold in a partly received (chunked) message.
    pub peer_reassembly_budget_bytes: usize,
    /// Bytes all peers together may hold in partly received messages.
    pub total_reassembly_budget_bytes: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            cluster_secret: None,
            allow_faults: false,
            max_client_connections: 1024,
            max_connections_per_peer: 4,
            max_handshaking_connections: 256,
            handshake_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(300),
            frame_deadline: Duration::from_secs(10),
            check_interval: Duration::from_millis(500),
            small_frame_bytes: 64 * 1024,
            client_frame_budget_bytes: 64 * 1024 * 1024,
            queued_request_budget_bytes: 64 * 1024 * 1024,
            peer_reassembly_budget_bytes: crate::chunk::MAX_PEER_MESSAGE_BYTES,
            total_reassembly_budget_bytes: crate::chunk::MAX_PEER_MESSAGE_BYTES,
        }
    }
}

/// A shared budget of bytes. Permits are bytes; a grant is returned when its permit drops.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    semaphore: Arc<Semaphore>,
    total_bytes: usize,
}

impl ByteBudget {
    pub fn new(total_bytes: usize) -> Self {
        // A semaphore holds at most `Semaphore::MAX_PERMITS`.
        let total_bytes = total_bytes.min(Semaphore::MAX_PERMITS);
        ByteBudget {
            semaphore: Arc::new(Semaphore::new(total_bytes)),
            total_bytes,
        }
    }

    /// Takes `bytes` from the budget, waiting until they are free (in the order asked). A
    /// request for more than the whole budget takes all of it (it waits for everything else to
    /// be returned). The future owns what it needs, so a caller can keep it across other work.
    pub fn take(
        &self,
        bytes: usize,
    ) -> impl std::future::Future<Output = OwnedSemaphorePermit> + Send + 'static {
        let bytes = bytes.clamp(1, self.total_bytes.max(1)) as u32;
        let semaphore = self.semaphore.clone();
        async move {
            // The semaphore is never closed, so acquiring only ever waits.
            match semaphore.acquire_many_owned(bytes).await {
                Ok(permit) => permit,
                Err(_) => unreachable!("a byte budget's semaphore is never closed"),
            }
        }
    }

    /// Takes `bytes` from the budget if they are free now (never waits).
    pub fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        self.semaphore.clone().try_acquire_many_owned(bytes).ok()
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes free now.
    pub fn available_bytes(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(
        "the node's memory budget for buffered frames is exhausted \
         ({available} of {total} bytes free): frame of {len} bytes refused, retry later"
    )]
    BudgetExhausted {
        len: usize,
        available: usize,
        total: usize,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A received frame, holding its share of the byte budget until dropped.
#[derive(Debug)]
pub struct Frame {
    pub bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

enum DecodeState {
    Head,
    Body {
        len: usize,
        _budget: Option<OwnedSemaphorePermit>,
    },
}

/// Length-delimited frames (`u32` big-endian length, then the body) that are paid for before
/// they are buffered. Frames up to `small_frame_bytes` are free (bounded by the connection
/// count); larger ones take their declared length from the shared budget when the length is
/// read, or are refused ([`FrameError::BudgetExhausted`]).
pub struct FrameCodec {
    max_frame_bytes: usize,
    small_frame_bytes: usize,
    budget: Option<ByteBudget>,
    state: DecodeState,
    /// When the first byte of the frame being received arrived.
    frame_started_at: Option<Instant>,
    slot: Option<Arc<ConnSlot>>,
}

impl FrameCodec {
    /// `budget: None` charges nothing (every frame is bounded by `max_frame_bytes` alone).
    pub fn new(
        max_frame_bytes: usize,
        small_frame_bytes: usize,
        budget: Option<ByteBudget>,
    ) -> Self {
        FrameCodec {
            max_frame_bytes,
            small_frame_bytes,
            budget,
            state: DecodeState::Head,
            frame_started_at: None,
            slot: None,
        }
    }

    /// Reports frame activity to a registry slot (so a connection mid-frame is never "idle").
    pub fn with_slot(mut self, slot: Arc<ConnSlot>) -> Self {
        self.slot = Some(slot);
        self
    }

    /// When the frame now being received started, if one is.
    pub fn frame_started_at(&self) -> Option<Instant> {
        self.frame_started_at
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.is_empty() && matches!(self.state, DecodeState::Head) {
            return Ok(None);
        }
        if self.frame_started_at.is_none() {
            self.frame_started_at = Some(Instant::now());
        }
        if let Some(slot) = &self.slot {
            slot.touch();
            slot.mid_frame.store(true, Ordering::Relaxed);
        }
        if matches!(self.state, DecodeState::Head) {
            if src.len() < 4 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if len > self.max_frame_bytes {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_frame_bytes,
                });
            }
            let budget = match &self.budget {
                Some(budget) if len > self.small_frame_bytes => {
                    Some(budget.try_take(len).ok_or(FrameError::BudgetExhausted {
                        len,
                        available: budget.available_bytes(),
                        total: budget.total_bytes(),
                    })?)
                }
                _ => None,
            };
            src.advance(4);
            // Paid for: now (and only now) room for the whole body may be reserved.
            src.reserve(len.saturating_sub(src.len()));
            self.state = DecodeState::Body {
                len,
                _budget: budget,
            };
        }
        let DecodeState::Body { len, .. } = self.state else {
            return Ok(None);
        };
        if src.len() < len {
            return Ok(None);
        }
        let bytes = src.split_to(len).freeze();
        let DecodeState::Body { _budget, .. } =
            std::mem::replace(&mut self.state, DecodeState::Head)
        else {
            return Ok(None);
        };
        // Whatever follows is the start of the next frame.
        self.frame_started_at = if src.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        if let Some(slot) = &self.slot {
            slot.mid_frame.store(!src.is_empty(), Ordering::Relaxed);
        }
        Ok(Some(Frame { bytes, _budget }))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
            len: body.len(),
            max: u32::MAX as usize,
        })?;
        dst.reserve(4 + body.len());
        dst.put_u32(len);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

/// One connection's entry in a [`ConnRegistry`].
#[derive(Debug)]
pub struct ConnSlot {
    epoch: Instant,
    last_active_ms: AtomicU64,
    /// Requests in flight on this connection.
    pub in_flight: AtomicUsize,
    /// A frame is partly received.
    pub mid_frame: AtomicBool,
    evicted: Notify,
}

impl ConnSlot {
    fn new(epoch: Instant) -> Self {
        let slot = ConnSlot {
            epoch,
            last_active_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            mid_frame: AtomicBool::new(false),
            evicted: Notify::new(),
        };
        slot.touch();
        slot
    }

    /// Records activity now.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last activity.
    pub fn idle_for(&self) -> Duration {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now_ms.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)))
    }

    /// Nothing in flight and no frame started.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && !self.mid_frame.load(Ordering::Relaxed)
    }

    /// Resolves once the registry shed this connection to make room for another.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }
}

/// Whom a full registry sheds to admit a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The least recently active idle connection; none idle: refuse the newcomer.
    OldestIdle,
    /// The least recently active connection, idle or not (a peer's newest connection is the one
    /// it uses; older ones are left over from a reconnect).
    Oldest,
}

/// The registry was full and nobody could be shed.
#[derive(Debug, thiserror::Error)]
#[error("too many connections ({max}), none idle")]
pub struct RegistryFull {
    pub max: usize,
}

/// A bounded set of connections of one kind.
#[derive(Debug)]
pub struct ConnRegistry {
    max: usize,
    shed: Shed,
    epoch: Instant,
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    next_id: u64,
    slots: BTreeMap<u64, Arc<ConnSlot>>,
}

/// A connection's place in a registry; leaving is dropping it.
#[derive(Debug)]
pub struct Ticket {
    registry: Arc<ConnRegistry>,
    id: u64,
    pub slot: Arc<ConnSlot>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.registry.inner.lock() {
            inner.slots.remove(&self.id);
        }
    }
}

impl ConnRegistry {
    pub fn new(max: usize, shed: Shed) -> Arc<Self> {
        Arc::new(ConnRegistry {
            max: max.max(1),
            shed,
            epoch: Instant::now(),
            inner: Mutex::new(RegistryInner::default()),
        })
    }

    /// Admits a connection, shedding another when full (see [`Shed`]).
    pub fn admit(self: &Arc<Self>) -> Result<Ticket, RegistryFull> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| RegistryFull { max: self.max })?;
        if inner.slots.len() >= self.max {
            let victim = inner
                .slots
                .iter()
                .filter(|(_, slot)| self.shed == Shed::Oldest || slot.is_idle())
                .max_by_key(|(id, slot)| (slot.idle_for(), std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(RegistryFull { max: self.max });
            };
            if let Some(slot) = inner.slots.remove(&victim) {
                // `notify_one` stores the wake-up if the connection is not waiting right now.
                slot.evicted.notify_one();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(ConnSlot::new(self.epoch));
        inner.slots.insert(id, slot.clone());
        Ok(Ticket {
            registry: self.clone(),
            id,
            slot,
        })
    }

    /// Connections now registered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|inner| inner.slots.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        buf
    }

    #[test]
    fn a_large_frame_is_paid_for_before_it_is_buffered() {
        let budget = ByteBudget::new(10_000);
        let mut codec = FrameCodec::new(1 << 20, 100, Some(budget.clone()));
        let mut buf = header(6_000);
        buf.extend_from_slice(&[1; 10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(
            budget.available_bytes(),
            4_000,
            "charged the declared length"
        );
        // A second connection's large frame no longer fits: refused, nothing reserved for it.
        let mut other = FrameCodec::new(1 << 20, 100, Some(budget.clone()));
        let mut other_buf = header(6_000);
        let capacity_before = other_buf.capacity();
        assert!(matches!(
            other.decode(&mut other_buf),
            Err(FrameError::BudgetExhausted { len: 6_000, .. })
        ));
        assert_eq!(other_buf.capacity(), capacity_before);
        // Small frames are not charged and still pass.
        let mut small = FrameCodec::new(1 << 20, 100, Some(budget.clone()));
        let mut small_buf = header(3);
        small_buf.extend_from_slice(b"abc");
        assert_eq!(
            &small.decode(&mut small_buf).unwrap().unwrap().bytes[..],
            b"abc"
        );
        // Completing the frame and dropping it returns the bytes.
        buf.extend_from_slice(&[1; 5_990]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.bytes.len(), 6_000);
        assert_eq!(budget.available_bytes(), 4_000);
        drop(frame);
        assert_eq!(budget.available_bytes(), 10_000);
    }

    #[test]
    fn an_oversized_length_is_refused_and_a_started_frame_is_dated() {
        let mut codec = FrameCodec::new(1_000, 100, None);
        let mut buf = header(1_001);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: 1_001,
                max: 1_000
            })
        ));
        let mut codec = FrameCodec::new(1_000, 100, None);
        assert!(codec.frame_started_at().is_none());
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            codec.frame_started_at().is_some(),
            "two bytes of a header started a frame"
        );
        buf.extend_from_slice(&[0, 1, 9]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap().bytes[..], &[9]);
        assert!(codec.frame_started_at().is_none());
    }

    #[test]
    fn a_full_client_registry_sheds_the_least_recently_active_idle_connection() {
        let registry = ConnRegistry::new(2, Shed::OldestIdle);
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        // The first is busy: the second (idle) is shed for the third.
        first.slot.in_flight.store(1, Ordering::Relaxed);
        let third = registry.admit().unwrap();
        assert_eq!(registry.len(), 2);
        let shed = futures::FutureExt::now_or_never(second.slot.evicted());
        assert!(shed.is_some(), "the idle connection was told to go");
        // Both remaining are busy: a newcomer is refused.
        third.slot.mid_frame.store(true, Ordering::Relaxed);
        assert!(registry.admit().is_err());
        drop(second);
        assert_eq!(
            registry.len(),
            2,
            "dropping a shed ticket frees nothing twice"
        );
        drop(first);
        assert_eq!(registry.len(), 1);
        assert!(registry.admit().is_ok());
    }

    #[test]
    fn a_full_peer_registry_sheds_the_oldest_even_if_busy() {
        let registry = ConnRegistry::new(1, Shed::Oldest);
        let old = registry.admit().unwrap();
        old.slot.in_flight.store(1, Ordering::Relaxed);
        let _new = registry.admit().unwrap();
        assert!(futures::FutureExt::now_or_never(old.slot.evicted()).is_some());
    }
}
