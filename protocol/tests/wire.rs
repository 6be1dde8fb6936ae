//! The wire protocol on its own: handshakes (and the refusal of another version), limits, and
//! frame bodies that are truncated, padded or larger than the client limit.

use ringleader_protocol::*;

#[test]
fn handshake_round_trips_and_rejects_garbage() {
    let handshake = Handshake::new(Role::Peer { node_id: 7 });
    assert_eq!(Handshake::decode(&handshake.encode()).unwrap(), handshake);
    let mut bad = handshake.encode();
    bad[0] = b'X';
    assert!(Handshake::decode(&bad).is_err());
    bad = handshake.encode();
    bad[4] = 9;
    assert!(Handshake::decode(&bad).is_err());
}

#[test]
fn limits_are_enforced() {
    let limits = Limits::default();
    let put = |key_len, value_len| Request::Put {
        key: vec![1; key_len],
        value: vec![2; value_len],
        session: None,
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
    let frame = RequestFrame {
        id: 3,
        request: Request::Get {
            key: b"k".to_vec(),
            consistency: ReadConsistency::Linearizable,
        },
    };
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
