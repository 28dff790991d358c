//! Generated bad inputs for the sealed channel, 500 cases a property:
//! - sealed frames (§3): a frame changed in any way — bytes flipped, set, inserted
//!   or deleted, truncated, a replay, a frame from later in the stream, one sealed
//!   with another key — fails to open, and the opener is left as it was (the next
//!   genuine frame opens);
//! - requests (§4): every valid request kind, mutated by [`mutate`], either decodes
//!   or is refused with `bad_request` or `unknown_type` (the latter never for a
//!   `type` the protocol names), and the answer carries the request's `rid`
//!   whenever the mutated request still holds that `rid` intact.

#[path = "support/mutate.rs"]
mod mutate;

use ferry_proto::b64u;
use ferry_proto::message::{ErrorCode, Request};
use ferry_proto::seal::{Opener, Sealer};
use mutate::{Doc, Mutation};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

// ---------------------------------------------------------------------------------
// Sealed frames
// ---------------------------------------------------------------------------------

/// How a genuine frame is changed on its way.
#[derive(Clone, Debug)]
enum FrameEdit {
    /// Byte-level mutations of the frame.
    Bytes(Vec<Mutation>),
    /// An earlier frame of the stream again.
    Replay,
    /// The frame after this one, first.
    Ahead,
    /// The same plaintext at the same counter under another key (the other
    /// direction's, say).
    OtherKey([u8; 32]),
}

fn byte_mutation() -> impl Strategy<Value = Mutation> {
    use Mutation::*;
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| SetByte(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| InsertByte(i, b)),
        (any::<Index>(), 1u8..=16).prop_map(|(i, n)| DeleteBytes(i, n)),
        any::<Index>().prop_map(Truncate),
    ]
}

fn frame_edit() -> impl Strategy<Value = FrameEdit> {
    prop_oneof![
        6 => prop::collection::vec(byte_mutation(), 1..=3).prop_map(FrameEdit::Bytes),
        1 => Just(FrameEdit::Replay),
        1 => Just(FrameEdit::Ahead),
        1 => any::<[u8; 32]>().prop_map(FrameEdit::OtherKey),
    ]
}

proptest! {
    #![proptest_config(mutate::config())]

    #[test]
    fn a_modified_sealed_frame_never_opens(
        key in any::<[u8; 32]>(),
        before in 1usize..4,
        plaintext in prop::collection::vec(any::<u8>(), 0..300),
        edit in frame_edit(),
    ) {
        let mut sealer = Sealer::new(&key);
        let mut opener = Opener::new(&key);
        // A few frames already went through: the counters stand at `before`.
        let mut earlier = Vec::new();
        for i in 0..before {
            let frame = sealer.seal(format!("frame {i}").as_bytes()).unwrap();
            opener.open(&frame).unwrap();
            earlier.push(frame);
        }
        let genuine = sealer.seal(&plaintext).unwrap();
        let next = sealer.seal(b"{\"type\":\"ping\"}").unwrap();
        let changed = match &edit {
            FrameEdit::Bytes(mutations) => mutate::apply(mutations, &genuine),
            FrameEdit::Replay => earlier[before - 1].clone(),
            FrameEdit::Ahead => next.clone(),
            FrameEdit::OtherKey(other) => {
                let mut s = Sealer::new(other);
                for _ in 0..before {
                    s.seal(b"").unwrap();
                }
                s.seal(&plaintext).unwrap()
            }
        };
        let counter = opener.counter();
        if changed == genuine {
            // Only a byte mutation that undid itself (or set a byte to its value).
            prop_assert_eq!(opener.open(&changed).unwrap(), plaintext);
        } else {
            prop_assert!(opener.open(&changed).is_err(), "a modified frame opened: {:?}", edit);
            prop_assert_eq!(opener.counter(), counter);
            // Nothing changed: the genuine frame and the next one still open, in order.
            prop_assert_eq!(opener.open(&genuine).unwrap(), plaintext);
        }
        prop_assert_eq!(opener.open(&next).unwrap(), b"{\"type\":\"ping\"}");
    }
}

// ---------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------

/// The request types §4 names.
const KNOWN_TYPES: &[&str] = &[
    "publish", "sync", "cursor", "devices", "revoke", "token", "ping",
];

/// One valid request of each kind (and of each shape of `publish`), each with a
/// `rid`: integers, strings, a negative one, one of exactly 64 characters.
fn valid_requests() -> Vec<String> {
    let id = "0190d3a4-5b6c-7d8e-9f00-112233445566";
    let key32 = b64u::encode(&[7; 32]);
    let sig = b64u::encode(&[9; 64]);
    let rid64 = "r".repeat(64);
    vec![
        format!(r#"{{"type":"publish","rid":1,"id":"{id}","payload":"aGVsbG8"}}"#),
        format!(
            r#"{{"type":"publish","rid":"p-2","id":"{id}","payload":"","key":"a2V5","base":0,"ttl":60}}"#
        ),
        format!(
            r#"{{"type":"publish","rid":3,"id":"{id}","payload":"AQID","ephemeral":true,"to":["{key32}"]}}"#
        ),
        r#"{"type":"sync","rid":4,"after":10,"limit":100}"#.into(),
        r#"{"type":"sync","rid":"b","after":0}"#.into(),
        r#"{"type":"cursor","rid":"c","seq":7}"#.into(),
        r#"{"type":"devices","rid":5}"#.into(),
        format!(
            r#"{{"type":"revoke","rid":6,"device":"{key32}","ts":1767225600000,"sig":"{sig}"}}"#
        ),
        format!(r#"{{"type":"token","rid":"{rid64}"}}"#),
        r#"{"type":"ping","rid":-9}"#.into(),
    ]
}

/// A mutated request: the original, its decoding, and the mutated bytes.
fn mutated_request(which: &Index, mutations: &[Mutation]) -> (Vec<u8>, Request, Vec<u8>) {
    let requests = valid_requests();
    let original = requests[which.index(requests.len())].clone().into_bytes();
    let decoded = Request::decode(&original).expect("the valid requests decode");
    let mutated = mutate::apply(mutations, &original);
    (original, decoded, mutated)
}

/// The mutated request as a failure shows it.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(400).collect()
}

proptest! {
    #![proptest_config(mutate::config())]

    #[test]
    fn a_mutated_request_decodes_or_is_refused_as_documented(
        which in any::<Index>(),
        mutations in mutate::mutations(),
    ) {
        let (_, _, mutated) = mutated_request(&which, &mutations);
        if let Err(e) = Request::decode(&mutated) {
            prop_assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::UnknownType),
                "{:?} for {}", e.code, shown(&mutated)
            );
            if e.code == ErrorCode::UnknownType {
                let ty = mutate::root_member(&mutated, "type");
                prop_assert!(
                    !matches!(&ty, Some(Doc::Leaf(Value::String(t))) if KNOWN_TYPES.contains(&t.as_str())),
                    "unknown_type for a known type: {}", shown(&mutated)
                );
            }
        }
    }

    #[test]
    fn a_mutated_request_keeps_its_intact_rid(
        which in any::<Index>(),
        mutations in mutate::mutations(),
    ) {
        let (original, decoded, mutated) = mutated_request(&which, &mutations);
        // The rid is intact: the mutated request is JSON whose root object names
        // `rid` once, with the original value.
        let rid = mutate::root_member(&original, "rid").expect("every valid request has a rid");
        if mutate::root_member(&mutated, "rid") == Some(rid) {
            let echoed = match Request::decode(&mutated) {
                Ok(request) => request.rid,
                Err(e) => e.rid,
            };
            prop_assert_eq!(echoed, decoded.rid, "the rid was lost: {}", shown(&mutated));
        }
    }
}
