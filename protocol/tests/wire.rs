//! The wire protocol on its own: handshakes (and the refusal of another version), the group and
//! epoch header of request and response frames, limits, and frame bodies that are truncated,
//! padded or larger than the client limit.

use ringleader_protocol::*;

#[test]
fn handshake_round_trips_and_rejects_garbage() {
    let handshake = Handshake::new(Role::Peer { node_id: 7 });
    assert_eq!(Handshake::decode(&handshake.encode()).unwrap(), handshake);
    let mut bad = handshake.encode();
    bad[0] = b'X';
    assert_eq!(Handshake::decode(&bad), Err(HandshakeError::BadMagic));
    bad = handshake.encode();
    bad[4] = 9;
    assert_eq!(Handshake::decode(&bad), Err(HandshakeError::UnknownRole(9)));
}

#[test]
fn an_old_version_handshake_is_refused_with_a_clear_error() {
    assert_eq!(Handshake::new(Role::Client).check_version(), Ok(()));
    // Version 8 had no `Session::opened_after`: its requests do not decode as version 9's.
    let mut old = Handshake::new(Role::Client).encode();
    old[3] = 8;
    let old = Handshake::decode(&old).expect("the bytes of an old handshake still parse");
    assert_eq!(old.version, 8);
    let refused = old.check_version().unwrap_err();
    assert_eq!(
        refused,
        HandshakeError::Version {
            theirs: 8,
            ours: PROTOCOL_VERSION
        }
    );
    let message = refused.to_string();
    assert!(
        message.contains("protocol version 8") && message.contains("version 9"),
        "{message}"
    );
    // A newer version is refused the same way.
    let newer = Handshake {
        version: PROTOCOL_VERSION + 1,
        role: Role::Peer { node_id: 2 },
    };
    assert!(newer.check_version().is_err());
}

#[test]
fn request_and_response_frames_carry_a_group_and_epoch_header() {
    // What the client sends today: group 0 at epoch 0.
    let today = RequestFrame::new(
        5,
        Request::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            session: Some(Session {
                client_id: 9,
                seq: 2,
                first_unacked_seq: 1,
                opened_after: Some(4),
            }),
            ack: WriteAck::All,
        },
    );
    assert_eq!(
        today.header,
        Header {
            group: ONLY_GROUP,
            epoch: 0
        }
    );
    let bytes = encode_frame(&today).unwrap();
    assert_eq!(decode_frame::<RequestFrame>(&bytes).unwrap(), today);
    // Any group and epoch survive the wire, in both directions.
    let header = Header {
        group: 3,
        epoch: u64::MAX,
    };
    let request = RequestFrame {
        header,
        ..today.clone()
    };
    let decoded: RequestFrame = decode_frame(&encode_frame(&request).unwrap()).unwrap();
    assert_eq!(decoded.header, header);
    assert_eq!(decoded, request);
    let response = ResponseFrame {
        id: 5,
        header,
        response: Response::Written { version: 17 },
        receipt: Some(Receipt {
            served_at: ServedAt::All,
            node: 2,
            term: 4,
            index: 17,
            staleness_bound_ms: None,
            forwarded_by: Some(3),
        }),
    };
    let decoded: ResponseFrame = decode_frame(&encode_frame(&response).unwrap()).unwrap();
    assert_eq!(decoded.header, header);
    assert_eq!(decoded, response);
    assert_eq!(
        ResponseFrame::new(5, Response::Written { version: 17 }).header,
        Header::default()
    );
    // The header is part of the body: the same request for another group is other bytes.
    assert_ne!(encode_frame(&request).unwrap(), bytes);
}

#[test]
fn limits_are_enforced() {
    let limits = Limits::default();
    let put = |key_len, value_len| Request::Put {
        key: vec![1; key_len],
        value: vec![2; value_len],
        session: None,
        ack: ringleader_protocol::WriteAck::Majority,
    };
    assert!(put(1, 0).check(&limits).is_ok());
    assert!(put(0, 1).check(&limits).is_err());
    assert!(put(limits.max_key_bytes + 1, 1).check(&limits).is_err());
    assert!(put(1, limits.max_value_bytes + 1).check(&limits).is_err());
    assert!(put(limits.max_key_bytes, limits.max_value_bytes)
        .check(&limits)
        .is_ok());
}

#[test]
fn truncated_or_padded_frames_are_refused() {
    let frame = RequestFrame::new(
        3,
        Request::Get {
            key: b"k".to_vec(),
            consistency: ReadConsistency::Linearizable,
        },
    );
    let bytes = encode_frame(&frame).unwrap();
    assert_eq!(decode_frame::<RequestFrame>(&bytes).unwrap(), frame);
    for cut in 0..bytes.len() {
        assert!(
            decode_frame::<RequestFrame>(&bytes[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(decode_frame::<RequestFrame>(&padded).is_err());
}

#[test]
fn bodies_over_16_mib_decode_with_a_limit_that_fits() {
    let value: Vec<u8> = vec![7; 20 * 1024 * 1024];
    let bytes = encode_frame(&value).unwrap();
    assert!(
        decode_frame::<Vec<u8>>(&bytes).is_err(),
        "the client limit refuses it"
    );
    assert_eq!(decode_large_frame::<Vec<u8>>(&bytes).unwrap(), value);
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(decode_large_frame::<Vec<u8>>(&padded).is_err());
    // A short body claiming a huge vector is refused, not allocated.
    let claim = encode_frame(&(u64::MAX / 2)).unwrap();
    assert!(decode_large_frame::<Vec<u8>>(&claim).is_err());
}

#[test]
fn a_status_lists_groups_and_finds_one_by_id() {
    let group = |id: GroupId, role: &str| GroupStatus {
        group: id,
        range: ring::HashRange {
            start: id << 32,
            end_inclusive: (id << 32) + 99,
        },
        epoch: 2,
        role: role.into(),
        term: 4 + id,
        leader: Some(1),
        commit_index: 10,
        applied_index: 9,
        last_index: 11,
        snapshot_index: 0,
        snapshots_installed: 0,
        keys: 3,
        digest: 77,
        replicas: vec![ReplicaStatus {
            node: 2,
            match_index: 10,
            last_heard_ms: Some(5),
            lagging: false,
        }],
    };
    let status = NodeStatus {
        id: 1,
        addr: "127.0.0.1:7001".into(),
        log_bytes: 4096,
        log_batches: 10,
        log_group_writes: 25,
        ring: ring::RingSpec::new([(1, "127.0.0.1:7001".to_string())].into(), 8),
        groups: vec![group(ONLY_GROUP, "leader"), group(7, "follower")],
    };
    assert_eq!(status.group(ONLY_GROUP), Some(&group(ONLY_GROUP, "leader")));
    assert_eq!(status.group(7).map(|g| g.term), Some(11));
    assert_eq!(status.group(3), None);
    // Every group survives the wire.
    let frame = ResponseFrame::new(2, Response::Status(Box::new(status.clone())));
    let decoded: ResponseFrame = decode_frame(&encode_frame(&frame).unwrap()).unwrap();
    assert_eq!(decoded.response, Response::Status(Box::new(status)));
}
