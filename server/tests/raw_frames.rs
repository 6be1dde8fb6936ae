//! Raw frames to the real binary, bypassing the client and its own checks: the node's limits and
//! its answers to malformed frames, checked by decoding the exact typed error it sends back, and
//! that nothing was written; the group/epoch header (checked against the node's ring) and an old
//! protocol version.
//! (The client refuses an oversized key before sending it, so a test through the client never
//! reaches the node's limit.)

mod common;

use std::time::Duration;

use common::*;
use ringleader_client::NodeStatus;
use ringleader_protocol::{
    decode_frame, encode_frame, ErrorKind, Handshake, Header, Limits, ReadConsistency, Request,
    RequestFrame, Response, ResponseFrame, Role, HANDSHAKE_BYTES, ONLY_GROUP, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read from the node may take before the test fails instead of hanging.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// A raw TCP connection to a node, past the client handshake.
async fn handshaken(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&Handshake::new(Role::Client).encode())
        .await
        .unwrap();
    let mut reply = [0u8; HANDSHAKE_BYTES];
    tokio::time::timeout(READ_DEADLINE, stream.read_exact(&mut reply))
        .await
        .expect("handshake reply in time")
        .unwrap();
    stream
}

/// Sends `body` as one length-delimited frame (4-byte big-endian length, as the codec frames it).
async fn send_body(stream: &mut TcpStream, body: &[u8]) {
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
}

async fn send(stream: &mut TcpStream, id: u64, request: Request) {
    send_body(
        stream,
        &encode_frame(&RequestFrame::new(id, request)).unwrap(),
    )
    .await;
}

/// Reads one response frame, within [`READ_DEADLINE`].
async fn receive(stream: &mut TcpStream) -> ResponseFrame {
    tokio::time::timeout(READ_DEADLINE, async {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut body).await.unwrap();
        decode_frame::<ResponseFrame>(&body).expect("a response frame")
    })
    .await
    .expect("an answer in time")
}

/// Asserts `frame` answers request `id` with the error `kind`, its message containing `words`.
fn assert_error(frame: &ResponseFrame, id: u64, kind: ErrorKind, words: &[&str]) {
    assert_eq!(frame.id, id, "{frame:?}");
    match &frame.response {
        Response::Error { kind: got, message } => {
            assert_eq!(*got, kind, "{message}");
            for word in words {
                assert!(message.contains(word), "{message:?} lacks {word:?}");
            }
        }
        other => panic!("expected a {kind:?} error, got {other:?}"),
    }
}

/// Asserts the node closed the connection (within the deadline) with nothing more to say.
async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(READ_DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    assert!(rest.is_empty(), "nothing more: {} bytes", rest.len());
}

async fn status(endpoints: &[String]) -> NodeStatus {
    client(endpoints.to_vec(), Duration::from_secs(5))
        .status_of(&endpoints[0])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_refuses_oversized_keys_and_values_and_malformed_frames_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(1);
    let _node = KillOnDrop(serve(dir.path(), base, 1, 1, &[]));
    let endpoints = vec![addr(base, 1)];
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;
    let good = client(endpoints.clone(), Duration::from_secs(5));
    good.put("stable", "before").await.unwrap();
    let limits = Limits::default();
    let before = status(&endpoints).await;

    // One connection: a limit error answers one request, and the connection keeps serving.
    let mut stream = handshaken(&endpoints[0]).await;
    let long_key = vec![b'k'; limits.max_key_bytes + 1];
    send(
        &mut stream,
        1,
        Request::Put {
            key: long_key.clone(),
            value: b"v".to_vec(),
            session: None,
            ack: ringleader_protocol::WriteAck::Majority,
        },
    )
    .await;
    let (limit, length) = (limits.max_key_bytes.to_string(), long_key.len().to_string());
    assert_error(
        &receive(&mut stream).await,
        1,
        ErrorKind::Invalid,
        &["key of", &length, "exceeds the limit of", &limit],
    );
    let long_value = vec![b'x'; limits.max_value_bytes + 1];
    send(
        &mut stream,
        2,
        Request::Put {
            key: b"big-value".to_vec(),
            value: long_value.clone(),
            session: None,
            ack: ringleader_protocol::WriteAck::Majority,
        },
    )
    .await;
    let (limit, length) = (
        limits.max_value_bytes.to_string(),
        long_value.len().to_string(),
    );
    assert_error(
        &receive(&mut stream).await,
        2,
        ErrorKind::Invalid,
        &["value of", &length, "exceeds the limit of", &limit],
    );
    // Nothing written: the key is absent (read on the same connection), no entry was proposed.
    send(
        &mut stream,
        3,
        Request::Get {
            key: b"big-value".to_vec(),
            consistency: ReadConsistency::Linearizable,
        },
    )
    .await;
    let frame = receive(&mut stream).await;
    assert_eq!((frame.id, frame.response), (3, Response::Value(None)));
    let after = status(&endpoints).await;
    assert_eq!(group0(&after).keys, group0(&before).keys, "no key added");
    assert_eq!(
        group0(&after).last_index,
        group0(&before).last_index,
        "no entry proposed"
    );
    drop(stream);

    // Malformed frames: an `Invalid` error frame (id 0: the request's id is unknown), then the
    // connection is closed.
    for body in [vec![0xFFu8; 37], Vec::new()] {
        let mut stream = handshaken(&endpoints[0]).await;
        send_body(&mut stream, &body).await;
        assert_error(
            &receive(&mut stream).await,
            0,
            ErrorKind::Invalid,
            &["malformed request"],
        );
        assert_closed(&mut stream).await;
    }
    // A length prefix far above the frame limit: refused before any of it is read.
    let mut stream = handshaken(&endpoints[0]).await;
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_error(
        &receive(&mut stream).await,
        0,
        ErrorKind::Invalid,
        &["bad frame"],
    );
    assert_closed(&mut stream).await;

    // Garbage instead of a handshake: closed without a word.
    let mut stream = TcpStream::connect(&endpoints[0]).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(READ_DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    assert!(answer.is_empty());
    // A "peer" that is not a configured voter: answered the handshake, then closed unheard (at
    // once, not left open waiting for Raft frames).
    let mut stream = TcpStream::connect(&endpoints[0]).await.unwrap();
    stream
        .write_all(&Handshake::new(Role::Peer { node_id: 99 }).encode())
        .await
        .unwrap();
    let mut reply = [0u8; HANDSHAKE_BYTES];
    tokio::time::timeout(READ_DEADLINE, stream.read_exact(&mut reply))
        .await
        .expect("handshake reply in time")
        .unwrap();
    assert_closed(&mut stream).await;

    // The node kept serving, and what was written before is untouched.
    let value = good.get("stable").await.unwrap().unwrap();
    assert_eq!(value.value, b"before");
    let after = status(&endpoints).await;
    assert_eq!(
        (group0(&after).keys, group0(&after).last_index),
        (group0(&before).keys, group0(&before).last_index)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_checks_groups_and_ring_epochs_and_refuses_an_old_protocol_version() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(1);
    let _node = KillOnDrop(serve(dir.path(), base, 1, 1, &[]));
    let endpoints = vec![addr(base, 1)];
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;
    let before = status(&endpoints).await;
    assert_eq!(
        (before.ring.epoch, before.ring.shards),
        (1, 1),
        "{before:?}"
    );
    let mut stream = handshaken(&endpoints[0]).await;
    let put = |key: &str| Request::Put {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        session: None,
        ack: ringleader_protocol::WriteAck::Majority,
    };
    let unchanged = |after: &ringleader_client::NodeStatus| {
        (group0(after).keys, group0(after).last_index)
            == (group0(&before).keys, group0(&before).last_index)
    };

    // Routed by the node's ring (epoch 1) to a group that does not hold the key: refused, not
    // applied, and the connection keeps serving; the response's header names the group asked.
    let misrouted = RequestFrame {
        header: Header { group: 7, epoch: 1 },
        ..RequestFrame::new(1, put("elsewhere"))
    };
    send_body(&mut stream, &encode_frame(&misrouted).unwrap()).await;
    let refused = receive(&mut stream).await;
    assert_error(
        &refused,
        1,
        ErrorKind::Invalid,
        &["belongs to group 0", "not to group 7"],
    );
    assert_eq!(refused.header, Header { group: 7, epoch: 1 });
    // A group off the ring, for a request without a key: refused the same way.
    let off_ring = RequestFrame {
        header: Header { group: 7, epoch: 0 },
        ..RequestFrame::new(2, Request::RegisterSession)
    };
    send_body(&mut stream, &encode_frame(&off_ring).unwrap()).await;
    assert_error(
        &receive(&mut stream).await,
        2,
        ErrorKind::Invalid,
        &["unknown group 7"],
    );

    // Routed by another ring's epoch: answered with the node's ring, nothing done.
    let stale_epoch = RequestFrame {
        header: Header {
            group: ONLY_GROUP,
            epoch: 41,
        },
        ..RequestFrame::new(3, put("stale"))
    };
    send_body(&mut stream, &encode_frame(&stale_epoch).unwrap()).await;
    let redirected = receive(&mut stream).await;
    assert_eq!(redirected.id, 3);
    match &redirected.response {
        Response::RingChanged { ring } => assert_eq!(ring, &before.ring),
        other => panic!("expected RingChanged, got {other:?}"),
    }
    assert!(unchanged(&status(&endpoints).await), "nothing proposed");

    // Not routed (epoch 0): the node finds the key's group itself, whatever the header says.
    let unrouted = RequestFrame {
        header: Header { group: 7, epoch: 0 },
        ..RequestFrame::new(4, put("here"))
    };
    send_body(&mut stream, &encode_frame(&unrouted).unwrap()).await;
    let written = receive(&mut stream).await;
    assert_eq!(written.id, 4);
    assert!(
        matches!(written.response, Response::Written { .. }),
        "{written:?}"
    );
    assert_eq!(written.header, Header { group: 0, epoch: 1 });
    drop(stream);

    // A version-4 client (frames without the header): the node answers with its own version,
    // so the other side can say what is wrong, then closes before reading a frame.
    let mut stream = TcpStream::connect(&endpoints[0]).await.unwrap();
    let mut old = Handshake::new(Role::Client).encode();
    old[3] = 4;
    stream.write_all(&old).await.unwrap();
    let mut reply = [0u8; HANDSHAKE_BYTES];
    tokio::time::timeout(READ_DEADLINE, stream.read_exact(&mut reply))
        .await
        .expect("handshake reply in time")
        .unwrap();
    let reply = Handshake::decode(&reply).unwrap();
    assert_eq!(reply.version, PROTOCOL_VERSION);
    assert_closed(&mut stream).await;
}
