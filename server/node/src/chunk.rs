//! Peer frames: a Raft message bigger than [`CHUNK_BYTES`] (in practice an `InstallSnapshot`)
//! travels as a sequence of chunk frames and is reassembled under a byte budget.
//!
//! Why: a snapshot used to travel as one frame, decoded with the 16 MiB bincode limit of client
//! frames, so once the state passed 16 MiB every snapshot was refused and a lagging follower
//! stayed behind for good. Chunking keeps every peer frame small (so a peer connection never
//! needs a large frame limit), and gives flow control for free: the sender awaits each chunk's
//! send, and the receiver reads one frame at a time, so TCP's window paces the transfer.
//! `consensus::Message` is unchanged: the transport alone chunks.
//!
//! What travels is an [`Envelope`]: the Raft message and the id of the Raft group it belongs to,
//! so that one connection between two nodes can carry the traffic of many groups (TiKV wraps
//! raft-rs messages the same way); `consensus::Message` stays group-agnostic. A peer's envelope
//! for a group this node does not host is dropped.
//!
//! A peer frame's body starts with a tag byte:
//! - `0`: a whole envelope follows (bincode of [`Envelope`]);
//! - `1`: a chunk: the whole message's length (`u64` big-endian), then the chunk's bytes. The
//!   chunks of one message are consecutive frames on one connection; the message is complete
//!   when their bytes add up to the announced length;
//! - `2`: coalesced heartbeats (bincode of `CoalescedHeartbeats`): the heartbeats, or their
//!   answers, of every group the two nodes share, sent together, with the sender and receiver
//!   named once: one frame to encode and decode per pair of nodes and tick, instead of one
//!   per group (CockroachDB's coalesced heartbeats). The receiver unpacks them into envelopes.

use bytes::{BufMut, Bytes};
use consensus::{Message, MessageBody, NodeId, Term};
#[cfg(test)]
use ringleader_protocol::ONLY_GROUP;
use ringleader_protocol::{decode_large_frame, encode_frame, GroupId};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

use crate::budget::ByteBudget;

/// A message longer than this (encoded) is sent in chunks of this size.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// The largest frame a peer sends: one chunk and its header.
pub const MAX_PEER_FRAME_BYTES: usize = CHUNK_BYTES + 64;
/// The largest message (encoded) peers exchange: a snapshot of the state machine.
pub const MAX_PEER_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

const TAG_WHOLE: u8 = 0;
const TAG_CHUNK: u8 = 1;
const TAG_HEARTBEATS: u8 = 2;
/// Heartbeats in one coalesced frame at most (a peer sends fewer: one per shared group).
pub const MAX_COALESCED_HEARTBEATS: usize = 4096;
const CHUNK_HEADER_BYTES: usize = 1 + 8;

/// Why a peer frame or message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("encoding the message: {0}")]
    Encode(String),
    #[error("the message is {len} bytes encoded, over the limit of {MAX_PEER_MESSAGE_BYTES}")]
    MessageTooLarge { len: usize },
    #[error("empty peer frame")]
    Empty,
    #[error("unknown peer frame tag {0}")]
    UnknownTag(u8),
    #[error(
        "a whole message arrived while a chunked one of {expected_bytes} bytes was incomplete"
    )]
    Interleaved { expected_bytes: usize },
    #[error("malformed chunk: {0}")]
    MalformedChunk(String),
    #[error(
        "no room to reassemble a message of {len} bytes from peer {peer} \
         (per-peer budget {peer_free} bytes free, total {total_free} bytes free)"
    )]
    BudgetExhausted {
        peer: NodeId,
        len: usize,
        peer_free: usize,
        total_free: usize,
    },
    #[error("undecodable message of {len} bytes: {error}")]
    Decode { len: usize, error: String },
    #[error("malformed coalesced heartbeats: {0}")]
    MalformedHeartbeats(String),
}

/// One Raft message between peers, with the group it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub group: GroupId,
    pub message: Message,
}

/// Whether a message travels in a coalesced heartbeat frame: a heartbeat or its answer.
pub fn is_heartbeat(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. }
    )
}

/// The heartbeats of several groups from one node to another, in one frame.
#[derive(Debug, Serialize, Deserialize)]
struct CoalescedHeartbeats {
    from: NodeId,
    to: NodeId,
    beats: Vec<GroupBeat>,
}

/// One group's heartbeat (or answer) in a [`CoalescedHeartbeats`].
#[derive(Debug, Serialize, Deserialize)]
struct GroupBeat {
    group: GroupId,
    term: Term,
    body: MessageBody,
}

/// Encodes heartbeats of several groups, all from one node to one other, as one frame.
/// Anything else in `envelopes` (or a second pair of nodes) is a bug of the caller.
pub fn encode_heartbeats(envelopes: &[Envelope]) -> Result<Bytes, ChunkError> {
    let Some(first) = envelopes.first() else {
        return Err(ChunkError::MalformedHeartbeats("no heartbeats".into()));
    };
    let (from, to) = (first.message.from, first.message.to);
    debug_assert!(envelopes.len() <= MAX_COALESCED_HEARTBEATS);
    debug_assert!(envelopes
        .iter()
        .all(|e| is_heartbeat(&e.message) && (e.message.from, e.message.to) == (from, to)));
    let coalesced = CoalescedHeartbeats {
        from,
        to,
        beats: envelopes
            .iter()
            .map(|envelope| GroupBeat {
                group: envelope.group,
                term: envelope.message.term,
                body: envelope.message.body.clone(),
            })
            .collect(),
    };
    let body = encode_frame(&coalesced).map_err(ChunkError::Encode)?;
    let mut frame = Vec::with_capacity(1 + body.len());
    frame.push(TAG_HEARTBEATS);
    frame.extend_from_slice(&body);
    Ok(Bytes::from(frame))
}

/// Unpacks a coalesced heartbeat frame's body into one envelope per group.
fn decode_heartbeats(body: &[u8]) -> Result<Vec<Envelope>, ChunkError> {
    let coalesced: CoalescedHeartbeats = decode(body)?;
    if coalesced.beats.len() > MAX_COALESCED_HEARTBEATS {
        return Err(ChunkError::MalformedHeartbeats(format!(
            "{} heartbeats in one frame (at most {MAX_COALESCED_HEARTBEATS})",
            coalesced.beats.len()
        )));
    }
    let (from, to) = (coalesced.from, coalesced.to);
    coalesced
        .beats
        .into_iter()
        .map(|beat| {
            let message = Message {
                from,
                to,
                term: beat.term,
                body: beat.body,
            };
            if !is_heartbeat(&message) {
                return Err(ChunkError::MalformedHeartbeats(format!(
                    "a coalesced message that is not a heartbeat: {message}"
                )));
            }
            Ok(Envelope {
                group: beat.group,
                message,
            })
        })
        .collect()
}

/// Encodes `message` of group [`ONLY_GROUP`] as the peer frames that carry it (see
/// [`encode_envelope`]); for tests.
#[cfg(test)]
pub(crate) fn encode_message(message: &Message) -> Result<Vec<Bytes>, ChunkError> {
    encode_borrowed(ONLY_GROUP, message)
}

/// Encodes `envelope` as the peer frames that carry it: one when it fits in [`CHUNK_BYTES`],
/// else consecutive chunks.
pub fn encode_envelope(envelope: &Envelope) -> Result<Vec<Bytes>, ChunkError> {
    encode_borrowed(envelope.group, &envelope.message)
}

/// [`Envelope`]'s encoding from a borrowed message: the same fields in the same order, so the
/// same bytes, without copying the message (a snapshot may be hundreds of MiB).
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    group: GroupId,
    message: &'a Message,
}

fn encode_borrowed(group: GroupId, message: &Message) -> Result<Vec<Bytes>, ChunkError> {
    let body = encode_frame(&EnvelopeRef { group, message }).map_err(ChunkError::Encode)?;
    split(&body)
}

fn split(body: &[u8]) -> Result<Vec<Bytes>, ChunkError> {
    if body.len() > MAX_PEER_MESSAGE_BYTES {
        return Err(ChunkError::MessageTooLarge { len: body.len() });
    }
    if body.len() <= CHUNK_BYTES {
        let mut frame = Vec::with_capacity(1 + body.len());
        frame.push(TAG_WHOLE);
        frame.extend_from_slice(body);
        return Ok(vec![Bytes::from(frame)]);
    }
    Ok(body
        .chunks(CHUNK_BYTES)
        .map(|chunk| {
            let mut frame = Vec::with_capacity(CHUNK_HEADER_BYTES + chunk.len());
            frame.put_u8(TAG_CHUNK);
            frame.put_u64(body.len() as u64);
            frame.extend_from_slice(chunk);
            Bytes::from(frame)
        })
        .collect())
}

struct Partial {
    bytes: Vec<u8>,
    expected_bytes: usize,
    _peer_budget: OwnedSemaphorePermit,
    _total_budget: OwnedSemaphorePermit,
}

/// One inbound peer connection's reassembly state. A partial message holds its whole announced
/// length of the peer's and the total budget until it completes or the connection closes.
pub struct Reassembler {
    peer: NodeId,
    peer_budget: ByteBudget,
    total_budget: ByteBudget,
    partial: Option<Partial>,
}

impl Reassembler {
    pub fn new(peer: NodeId, peer_budget: ByteBudget, total_budget: ByteBudget) -> Self {
        Reassembler {
            peer,
            peer_budget,
            total_budget,
            partial: None,
        }
    }

    /// Takes one peer frame; returns the envelopes it completes: none (a chunk of a message not
    /// yet whole), one, or one per group (coalesced heartbeats).
    pub fn push(&mut self, frame: &[u8]) -> Result<Vec<Envelope>, ChunkError> {
        let (&tag, rest) = frame.split_first().ok_or(ChunkError::Empty)?;
        if tag != TAG_CHUNK {
            if let Some(partial) = &self.partial {
                return Err(ChunkError::Interleaved {
                    expected_bytes: partial.expected_bytes,
                });
            }
        }
        match tag {
            TAG_WHOLE => decode(rest).map(|envelope| vec![envelope]),
            TAG_HEARTBEATS => decode_heartbeats(rest),
            TAG_CHUNK => {
                if rest.len() < 8 {
                    return Err(ChunkError::MalformedChunk("short header".into()));
                }
                let (len_bytes, data) = rest.split_at(8);
                let mut len = [0u8; 8];
                len.copy_from_slice(len_bytes);
                let announced = usize::try_from(u64::from_be_bytes(len))
                    .map_err(|_| ChunkError::MessageTooLarge { len: usize::MAX })?;
                if announced > MAX_PEER_MESSAGE_BYTES {
                    return Err(ChunkError::MessageTooLarge { len: announced });
                }
                if announced <= CHUNK_BYTES || data.is_empty() {
                    return Err(ChunkError::MalformedChunk(format!(
                        "chunk of {} bytes of a {announced}-byte message",
                        data.len()
                    )));
                }
                let partial = match &mut self.partial {
                    Some(partial) => partial,
                    None => self.partial.insert(self.start(announced)?),
                };
                if partial.expected_bytes != announced {
                    return Err(ChunkError::MalformedChunk(format!(
                        "chunk announces {announced} bytes, its message {}",
                        partial.expected_bytes
                    )));
                }
                if partial.bytes.len() + data.len() > announced {
                    return Err(ChunkError::MalformedChunk(format!(
                        "chunks exceed the announced {announced} bytes"
                    )));
                }
                partial.bytes.extend_from_slice(data);
                if partial.bytes.len() < announced {
                    return Ok(Vec::new());
                }
                let Some(done) = self.partial.take() else {
                    return Ok(Vec::new());
                };
                // The budget is held until the message is decoded; `done` drops after.
                decode(&done.bytes).map(|envelope| vec![envelope])
            }
            other => Err(ChunkError::UnknownTag(other)),
        }
    }

    fn start(&self, len: usize) -> Result<Partial, ChunkError> {
        let refused = || ChunkError::BudgetExhausted {
            peer: self.peer,
            len,
            peer_free: self.peer_budget.available_bytes(),
            total_free: self.total_budget.available_bytes(),
        };
        let peer_budget = self.peer_budget.try_take(len).ok_or_else(refused)?;
        let total_budget = self.total_budget.try_take(len).ok_or_else(refused)?;
        Ok(Partial {
            // Reserved up front: the budget already covers it, and growing by doubling would
            // copy (and briefly hold) up to twice as much.
            bytes: Vec::with_capacity(len),
            expected_bytes: len,
            _peer_budget: peer_budget,
            _total_budget: total_budget,
        })
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ChunkError> {
    decode_large_frame(body).map_err(|error| ChunkError::Decode {
        len: body.len(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use consensus::{MessageBody, Snapshot, SnapshotMeta};

    use super::*;

    fn snapshot_message(data_bytes: usize) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        last_index: 10,
                        last_term: 3,
                        voters: vec![1, 2, 3],
                    },
                    data: (0..data_bytes).map(|i| (i % 251) as u8).collect(),
                },
            },
        }
    }

    fn budgets(bytes: usize) -> (ByteBudget, ByteBudget) {
        (ByteBudget::new(bytes), ByteBudget::new(bytes))
    }

    #[test]
    fn a_snapshot_over_16_mib_crosses_in_chunks_and_releases_its_budget() {
        let message = snapshot_message(20 * 1024 * 1024);
        let frames = encode_message(&message).unwrap();
        assert_eq!(frames.len(), 21);
        assert!(frames.iter().all(|f| f.len() <= MAX_PEER_FRAME_BYTES));
        let (peer, total) = budgets(64 * 1024 * 1024);
        let mut reassembler = Reassembler::new(1, peer.clone(), total.clone());
        let mut received = None;
        for (i, frame) in frames.iter().enumerate() {
            let out = reassembler.push(frame).unwrap();
            if i + 1 < frames.len() {
                assert!(out.is_empty());
                assert!(peer.available_bytes() < 64 * 1024 * 1024 - 20 * 1024 * 1024);
            } else {
                received = out.into_iter().next();
            }
        }
        assert_eq!(received.map(|e| e.message), Some(message));
        assert_eq!(peer.available_bytes(), 64 * 1024 * 1024);
        assert_eq!(total.available_bytes(), 64 * 1024 * 1024);
    }

    #[test]
    fn small_messages_travel_whole() {
        let message = snapshot_message(100);
        let frames = encode_message(&message).unwrap();
        assert_eq!(frames.len(), 1);
        let (peer, total) = budgets(0);
        let mut reassembler = Reassembler::new(1, peer, total);
        let envelope = reassembler.push(&frames[0]).unwrap();
        assert_eq!(
            envelope
                .into_iter()
                .map(|e| (e.group, e.message))
                .collect::<Vec<_>>(),
            vec![(ONLY_GROUP, message)]
        );
    }

    #[test]
    fn a_message_over_the_budget_is_refused_before_it_is_buffered() {
        let frames = encode_message(&snapshot_message(3 * 1024 * 1024)).unwrap();
        let (peer, total) = budgets(2 * 1024 * 1024);
        let mut reassembler = Reassembler::new(7, peer, total);
        assert!(matches!(
            reassembler.push(&frames[0]),
            Err(ChunkError::BudgetExhausted { peer: 7, .. })
        ));
    }

    #[test]
    fn malformed_chunk_sequences_are_refused() {
        let frames = encode_message(&snapshot_message(3 * 1024 * 1024)).unwrap();
        let whole = encode_message(&snapshot_message(10)).unwrap();
        let (peer, total) = budgets(64 * 1024 * 1024);
        // A whole message in the middle of a chunked one.
        let mut r = Reassembler::new(1, peer.clone(), total.clone());
        r.push(&frames[0]).unwrap();
        assert!(matches!(
            r.push(&whole[0]),
            Err(ChunkError::Interleaved { .. })
        ));
        drop(r); // the connection closes on an error, dropping its partial message
                 // A chunk announcing another length.
        let mut r = Reassembler::new(1, peer.clone(), total.clone());
        r.push(&frames[0]).unwrap();
        let mut other = frames[1].to_vec();
        other[8] ^= 1;
        assert!(r.push(&other).is_err());
        drop(r);
        // Too many bytes.
        let mut r = Reassembler::new(1, peer.clone(), total.clone());
        r.push(&frames[0]).unwrap();
        r.push(&frames[1]).unwrap();
        r.push(&frames[2]).unwrap();
        assert!(r.push(&frames[1]).is_err());
        drop(r);
        // Garbage.
        let mut r = Reassembler::new(1, peer.clone(), total.clone());
        assert!(r.push(&[]).is_err());
        assert!(r.push(&[9, 1, 2]).is_err());
        assert!(r.push(&[1, 0, 0]).is_err());
        drop(r);
        assert_eq!(peer.available_bytes(), 64 * 1024 * 1024, "all returned");
    }

    fn heartbeat(group: GroupId, commit: u64) -> Envelope {
        Envelope {
            group,
            message: Message {
                from: 1,
                to: 2,
                term: 4,
                body: MessageBody::Heartbeat {
                    commit,
                    sent_tick: 9,
                    read_ctx: Some(group),
                    freshness: None,
                },
            },
        }
    }

    #[test]
    fn the_heartbeats_of_many_groups_cross_as_one_frame_and_unpack_per_group() {
        let beats: Vec<Envelope> = (0..50).map(|group| heartbeat(group, group * 10)).collect();
        let frame = encode_heartbeats(&beats).unwrap();
        let separately: usize = beats
            .iter()
            .map(|beat| encode_envelope(beat).unwrap()[0].len())
            .sum();
        assert!(
            frame.len() < separately,
            "one frame of {} bytes against {separately} bytes in 50 frames",
            frame.len()
        );
        let (peer, total) = budgets(0);
        let mut reassembler = Reassembler::new(1, peer, total);
        assert_eq!(reassembler.push(&frame).unwrap(), beats);
    }

    #[test]
    fn a_coalesced_frame_carries_only_heartbeats_and_never_splits_a_chunked_message() {
        let not_a_heartbeat = CoalescedHeartbeats {
            from: 1,
            to: 2,
            beats: vec![GroupBeat {
                group: 0,
                term: 1,
                body: MessageBody::TimeoutNow,
            }],
        };
        let mut frame = vec![TAG_HEARTBEATS];
        frame.extend_from_slice(&encode_frame(&not_a_heartbeat).unwrap());
        let (peer, total) = budgets(64 * 1024 * 1024);
        let mut r = Reassembler::new(1, peer.clone(), total.clone());
        assert!(matches!(
            r.push(&frame),
            Err(ChunkError::MalformedHeartbeats(_))
        ));
        let chunks = encode_message(&snapshot_message(3 * 1024 * 1024)).unwrap();
        let beats = encode_heartbeats(&[heartbeat(0, 1)]).unwrap();
        let mut r = Reassembler::new(1, peer, total);
        r.push(&chunks[0]).unwrap();
        assert!(matches!(
            r.push(&beats),
            Err(ChunkError::Interleaved { .. })
        ));
    }
}
