//! `client_hello`: its fields, the X25519 ephemerals against Wycheproof's low-order
//! and shared-secret vectors, and garbage.

use serde_json::{Value, json};

use super::harness::*;
use crate::b64u;
use crate::handshake::wire::ClientHello;
use crate::handshake::*;
use crate::keys;

#[test]
fn client_hello_fields() {
    use Expect::*;
    use HandshakeError::*;
    #[rustfmt::skip]
    let cases: &[(&str, Tamper, Expect)] = &[
        ("unchanged, re-serialised",   |_| {},                                Accepted),
        ("unknown fields are ignored", |v| v["ext"] = json!({"a": [1, 2]}),   Accepted),
        ("type: server_hello",         |v| v["type"] = json!("server_hello"), Server(Unexpected, 4001)),
        ("type: client_auth",          |v| v["type"] = json!("client_auth"),  Server(Unexpected, 4001)),
        ("type: error",                |v| v["type"] = json!("error"),        Server(Unexpected, 4001)),
        ("type: a number",             |v| v["type"] = json!(1),              Server(Malformed, 4001)),
        ("v: 2",                       |v| v["v"] = json!(2),                 Server(UnsupportedVersion, 4001)),
        ("v: 0",                       |v| v["v"] = json!(0),                 Server(UnsupportedVersion, 4001)),
        ("v: u64::MAX",                |v| v["v"] = json!(u64::MAX),          Server(UnsupportedVersion, 4001)),
        // The version is looked at before the keys.
        ("v: 2, eph garbage",          |v| { v["v"] = json!(2); v["eph"] = json!("!") }, Server(UnsupportedVersion, 4001)),
        ("v: \"1\", a string",         |v| v["v"] = json!("1"),               Server(Malformed, 4001)),
        ("v: [1]",                     |v| v["v"] = json!([1]),               Server(Malformed, 4001)),
        ("v: null",                    |v| v["v"] = Value::Null,              Server(Malformed, 4001)),
        ("eph: all zero (low order)",  |v| v["eph"] = b64(&[0; 32]),          Server(BadKey, 4001)),
        // Another valid key: the server goes on, but signs a TH1 the client does not
        // have, so the client refuses the server_hello and never authenticates.
        ("eph: another valid key",     |v| v["eph"] = b64(&x25519_public(7)), Client(ServerSignature)),
        // The same X25519 point (RFC 7748 ignores the top bit) in other bytes: the
        // transcript carries the bytes as sent.
        ("eph: top bit set",           |v| edit_bytes(v, "eph", |b| b[31] |= 0x80), Client(ServerSignature)),
        ("nonce: one bit flipped",     |v| flip(v, "nonce", 0),               Client(ServerSignature)),
        ("nonce: another value",       |v| v["nonce"] = b64(&[0x5a; 32]),     Client(ServerSignature)),
    ];
    for (case, tamper, expect) in cases {
        check(case, Msg::ClientHello, tamper, expect.clone());
    }
    for field in ["type", "v"] {
        check(
            &format!("{field}: missing"),
            Msg::ClientHello,
            |v| remove(v, field),
            Server(Malformed, 4001),
        );
    }
    check_bad_b64(
        Msg::ClientHello,
        &["eph", "nonce"],
        &Server(Malformed, 4001),
    );
}

#[test]
fn wycheproof_low_order_client_ephemeral_is_bad_key() {
    let vectors = low_order_x25519_vectors();
    for t in &vectors {
        let public = array32(&t.public_key);
        check_with(
            // The vector's own private key as the server's ephemeral secret.
            Setup {
                server_secret: Some(array32(&t.private_key)),
                ..Setup::default()
            },
            &format!("Wycheproof X25519 tcId {} ({})", t.tc_id, t.comment),
            Msg::ClientHello,
            |v| v["eph"] = b64(&public),
            Expect::Server(HandshakeError::BadKey, 4001),
        );
    }
    assert!(!vectors.is_empty());
    // BAD-INPUTS.md: "31 Wycheproof public keys give an all-zero secret".
    assert!(
        vectors.len() >= 31,
        "only {} low-order vectors",
        vectors.len()
    );
}

/// H2: non-canonical but not low-order public keys are accepted (RFC 7748), the
/// transcript carries their exact bytes, and the server's DH equals Wycheproof's
/// shared secret — shown by completing the handshake with a MAC keyed from it.
#[test]
fn wycheproof_x25519_server_dh_matches() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let mut non_canonical = 0;
    let mut checked = 0;
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        if t.result.must_fail() || t.shared_secret.iter().all(|&b| b == 0) {
            continue;
        }
        let is_non_canonical = t.flags.contains(&TestFlag::NonCanonicalPublic);
        // Every non-canonical key, and a sample of the others (debug-build crypto is slow).
        if !is_non_canonical && t.tc_id % 16 != 0 {
            continue;
        }
        let case = format!("Wycheproof X25519 tcId {} ({})", t.tc_id, t.comment);
        let mut pair = Pair::with(Setup {
            server_secret: Some(array32(&t.private_key)),
            ..Setup::default()
        });
        let hello = ClientHello {
            eph: array32(&t.public_key),
            nonce: [3; 32],
        };
        let (result, out) = pair.server_text(&hello.encode());
        result.unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let [ServerOutput::SendText(server_hello)] = out.as_slice() else {
            panic!("{case}: {out:?}")
        };
        let session = Session::new(&hello, server_hello, &array32(&t.shared_secret));
        let server_vk = key(SERVER).verifying_key();
        keys::verify(
            &server_vk,
            &crypto::server_sig_message(&session.th1),
            &session.server_hello.sig,
        )
        .unwrap_or_else(|_| panic!("{case}: TH1 over the exact bytes"));
        let auth = session.auth(USER, DEVICE, Setup::default().creds.cert);
        let (result, out) = pair.send_auth(&auth);
        assert_eq!(result, Ok(()), "{case}");
        assert!(
            matches!(out.as_slice(), [ServerOutput::CheckDevice { .. }]),
            "{case}"
        );
        checked += 1;
        non_canonical += usize::from(is_non_canonical);
    }
    assert!(non_canonical > 0 && checked > non_canonical);
}

#[test]
fn client_hello_not_an_object_or_with_garbage() {
    let hello = Pair::new().client.client_hello().unwrap();
    let other_eph = b64u::encode(&x25519_public(7));
    let texts = [
        String::new(),
        " ".into(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        "\"client_hello\"".into(),
        "{".into(),
        "hello".into(),
        format!("{hello} x"),
        format!("{hello}{hello}"),
        hello[..hello.len() - 1].into(),
        // A duplicated key is refused, not resolved first- or last-wins.
        hello.replacen('{', &format!(r#"{{"eph":"{other_eph}","#), 1),
    ];
    for text in texts {
        let mut pair = Pair::new();
        let (result, out) = pair.server_text(&text);
        assert_eq!(result, Err(HandshakeError::Malformed), "{text:?}");
        assert_eq!(out, refusal(&HandshakeError::Malformed, 4001), "{text:?}");
        assert_ended(pair.server, &text);
    }
}
