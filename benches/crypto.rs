//! Per-message costs of an established session (see `docs/benchmarks.md`):
//! sealing and opening frames, decoding requests, encoding server messages.
//!
//! - `sealed/seal/{64,1024,16384}`: `Sealer::seal` (allocates the frame, as the
//!   session's `send_sealed` does).
//! - `sealed/open/{64,1024,16384}`: `Opener::open_in_place` on an owned frame, as
//!   the session does with each received binary message. Frames are sealed in the
//!   (unmeasured) setup by a sealer that runs in lockstep with the opener, so every
//!   frame carries the counter the opener expects.
//! - `json/decode_publish_256`, `json/decode_ping`: `Request::decode`.
//! - `json/encode_event_256`, `json/encode_ack`: `ServerMessage::to_json`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proto::b64u;
use ferry_proto::message::{ClientMessage, EventMsg, Request, Rid, ServerMessage};
use ferry_proto::seal::{Opener, Sealer};

const SIZES: [usize; 3] = [64, 1024, 16 * 1024];
const ID: &str = "0196f3a2-7c1e-7d4b-9a2f-3c8e5b1d0a47";

fn sealed(c: &mut Criterion) {
    let key = [42u8; 32];
    let mut g = c.benchmark_group("sealed");
    for size in SIZES {
        let plaintext = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));

        let mut sealer = Sealer::new(&key);
        g.bench_function(format!("seal/{size}"), |b| {
            b.iter(|| sealer.seal(black_box(&plaintext)).expect("counter"));
        });

        let mut lockstep = Sealer::new(&key);
        let mut opener = Opener::new(&key);
        g.bench_function(format!("open/{size}"), |b| {
            b.iter_batched(
                || lockstep.seal(&plaintext).expect("counter"),
                |mut frame| {
                    opener.open_in_place(&mut frame).expect("frame opens");
                    frame
                },
                BatchSize::SmallInput,
            );
        });
        assert_eq!(lockstep.counter(), opener.counter());
    }
    g.finish();
}

fn json(c: &mut Criterion) {
    let payload = b64u::encode(&[0x5au8; 256]);
    let publish =
        format!(r#"{{"type":"publish","rid":17,"id":"{ID}","payload":"{payload}"}}"#).into_bytes();
    let ping = br#"{"type":"ping","rid":18}"#.to_vec();
    assert!(matches!(
        Request::decode(&publish).expect("publish decodes").body,
        ClientMessage::Publish(p) if p.payload.len() == 256
    ));
    assert_eq!(
        Request::decode(&ping).expect("ping decodes").body,
        ClientMessage::Ping
    );

    let event = ServerMessage::Event(EventMsg {
        seq: Some(123_456),
        id: ID.to_owned(),
        device: b64u::encode(&[3u8; 32]),
        ts: 1_767_225_600_000,
        payload,
        key: None,
        ttl: None,
        ephemeral: false,
    });
    let ack = ServerMessage::Ack {
        rid: Some(Rid::Int(17)),
        id: ID.to_owned(),
        seq: Some(123_456),
        ts: Some(1_767_225_600_000),
        duplicate: false,
        ephemeral: false,
        delivered: None,
    };

    let mut g = c.benchmark_group("json");
    g.bench_function("decode_publish_256", |b| {
        b.iter(|| Request::decode(black_box(&publish)))
    });
    g.bench_function("decode_ping", |b| {
        b.iter(|| Request::decode(black_box(&ping)))
    });
    g.bench_function("encode_event_256", |b| {
        b.iter(|| black_box(&event).to_json())
    });
    g.bench_function("encode_ack", |b| b.iter(|| black_box(&ack).to_json()));
    g.finish();
}

criterion_group!(benches, sealed, json);
criterion_main!(benches);
