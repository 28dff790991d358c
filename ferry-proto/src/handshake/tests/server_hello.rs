//! `server_hello`, as the client checks it: fields, trust on first use, signatures,
//! low-order ephemerals, error frames.

use serde_json::json;

use super::harness::*;
use crate::handshake::wire::ServerHello;
use crate::handshake::*;

#[test]
fn server_hello_fields() {
    use Expect::*;
    use HandshakeError::*;
    #[rustfmt::skip]
    let cases: &[(&str, Tamper, Expect)] = &[
        ("unchanged, re-serialised",      |_| {},                                    Accepted),
        ("unknown fields are ignored",    |v| v["ext"] = json!([1]),                 Accepted),
        ("type: client_hello",            |v| v["type"] = json!("client_hello"),     Client(Unexpected)),
        ("type: a number",                |v| v["type"] = json!(2),                  Client(Malformed)),
        ("v: 2",                          |v| v["v"] = json!(2),                     Client(UnsupportedVersion)),
        ("v: \"1\", a string",            |v| v["v"] = json!("1"),                   Client(Malformed)),
        ("eph: another valid key",        |v| v["eph"] = b64(&x25519_public(7)),     Client(ServerSignature)),
        ("eph: top bit set",              |v| edit_bytes(v, "eph", |b| b[31] |= 0x80), Client(ServerSignature)),
        ("nonce: one bit flipped",        |v| flip(v, "nonce", 0),                   Client(ServerSignature)),
        ("server_key: another valid key", |v| v["server_key"] = b64(&pk(USER2)),     Client(ServerKeyMismatch)),
        ("server_key: small-order",       |v| v["server_key"] = b64(&identity_point()), Client(ServerKeyMismatch)),
        ("sig: a bit of R flipped",       |v| flip(v, "sig", 0),                     Client(ServerSignature)),
        ("sig: a bit of S flipped",       |v| flip(v, "sig", 32),                    Client(ServerSignature)),
        ("sig: S + L (malleated)",        |v| edit_bytes(v, "sig", |b| malleate(b)), Client(ServerSignature)),
        ("sig: all zero",                 |v| v["sig"] = b64(&[0; 64]),              Client(ServerSignature)),
    ];
    for (case, tamper, expect) in cases {
        check(case, Msg::ServerHello, tamper, expect.clone());
    }
    for field in ["type", "v"] {
        check(
            &format!("{field}: missing"),
            Msg::ServerHello,
            |v| remove(v, field),
            Client(Malformed),
        );
    }
    check_bad_b64(
        Msg::ServerHello,
        &["eph", "nonce", "server_key", "sig"],
        &Client(Malformed),
    );
}

#[test]
fn server_hello_with_trust_on_first_use() {
    let first_use = || Setup {
        pin: ServerPin::FirstUse,
        ..Setup::default()
    };
    let server_keys = [("another valid key", pk(USER2))]
        .into_iter()
        .chain(WEAK_KEYS.map(|weak| ("a small-order key", weak)));
    for (case, server_key) in server_keys {
        check_with(
            first_use(),
            &format!("server_key: {case}"),
            Msg::ServerHello,
            |v| v["server_key"] = b64(&server_key),
            Expect::Client(HandshakeError::ServerSignature),
        );
    }
}

/// A man in the middle re-signs the server_hello with its own key. A pinned client
/// refuses it; a trust-on-first-use client accepts it, but its `client_auth` covers
/// the key it saw, so the real server refuses (no unknown-key share, H6).
#[test]
fn server_hello_re_signed_by_another_key() {
    for (pin, expect) in [
        (
            ServerPin::Key(pk(SERVER)),
            Outcome::Client(HandshakeError::ServerKeyMismatch),
        ),
        (
            ServerPin::FirstUse,
            Outcome::Server(
                HandshakeError::AuthFailed(AuthFailure::Signature),
                refusal(&HandshakeError::AuthFailed(AuthFailure::Signature), 4002),
            ),
        ),
    ] {
        let mut pair = Pair::with(Setup {
            pin,
            ..Setup::default()
        });
        let client_hello = pair.client_hello.clone();
        let outcome = pair.run(Msg::ServerHello, |v| {
            let sh = ServerHello::parse(&v.to_string()).unwrap();
            *v = serde_json::from_str(&signed_server_hello(
                &client_hello,
                sh.eph,
                sh.nonce,
                &key(USER2),
            ))
            .unwrap();
        });
        assert_eq!(outcome, expect, "{pin:?}");
    }
}

#[test]
fn low_order_server_ephemeral_is_bad_key() {
    // The same construction with an honest key succeeds, so the failures below are
    // about the key alone.
    let mut pair = Pair::new();
    let sh = signed_server_hello(&pair.client_hello, x25519_public(9), [7; 32], &key(SERVER));
    assert!(pair.client.handle_text(&sh).is_ok());

    let vectors = low_order_x25519_vectors();
    assert!(!vectors.is_empty());
    for t in vectors {
        let mut pair = Pair::new();
        let sh = signed_server_hello(
            &pair.client_hello,
            array32(&t.public_key),
            [7; 32],
            &key(SERVER),
        );
        assert_eq!(
            pair.client.handle_text(&sh),
            Err(HandshakeError::BadKey),
            "tcId {}",
            t.tc_id
        );
        assert!(pair.client.into_established().is_none());
    }
}

#[test]
fn server_error_frame_is_refused() {
    let cases = [
        (
            r#"{"type":"error","code":"auth_failed","message":"authentication failed"}"#,
            "auth_failed",
        ),
        (UNSUPPORTED_VERSION_FRAME, "unsupported_version"),
        (r#"{"type":"error","code":"bad_key"}"#, "bad_key"),
        (r#"{"type":"error"}"#, "error"),
    ];
    for (frame, code) in cases {
        let mut pair = Pair::new();
        assert_eq!(
            pair.client.handle_text(frame),
            Err(HandshakeError::Refused(code.into())),
            "{frame}"
        );
        // Closed for good.
        let sh = signed_server_hello(&pair.client_hello, x25519_public(9), [7; 32], &key(SERVER));
        assert_eq!(
            pair.client.handle_text(&sh),
            Err(HandshakeError::Unexpected)
        );
    }

    // End to end: the server's own refusal, read by the client.
    let mut pair = Pair::new();
    let hello = tampered(&pair.client.client_hello().unwrap(), |v| v["v"] = json!(2));
    let (_, out) = pair.server_text(&hello);
    let ServerOutput::SendText(frame) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        pair.client.handle_text(frame),
        Err(HandshakeError::Refused("unsupported_version".into()))
    );
}
