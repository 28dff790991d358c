//! `client_auth`: its fields, malformed messages, and the one `auth_failed` frame.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::harness::*;
use crate::b64u;
use crate::handshake::*;

#[test]
fn client_auth_fields() {
    use AuthFailure::*;
    use Expect::*;
    use HandshakeError::{AuthFailed, Malformed, Unexpected};
    let fail = |reason| Server(AuthFailed(reason), 4002);
    #[rustfmt::skip]
    let cases: &[(&str, Tamper, Expect)] = &[
        ("unchanged, re-serialised",   |_| {},                                 Accepted),
        ("unknown fields are ignored", |v| { v["ext"] = json!(1); v["cert"]["ext"] = json!("x") }, Accepted),
        ("type: client_hello",         |v| v["type"] = json!("client_hello"),  Server(Unexpected, 4001)),
        ("type: something else",       |v| v["type"] = json!("hello"),         Server(Unexpected, 4001)),
        ("type: a number",             |v| v["type"] = json!(3),               Server(Malformed, 4001)),
        ("cert: a string",             |v| v["cert"] = json!("cert"),          Server(Malformed, 4001)),
        // Another valid value in each field: the right reason each time.
        ("user: another user's key",   |v| v["user"] = b64(&pk(USER2)),        fail(CertSignature)),
        ("device: another device's key", |v| v["device"] = b64(&pk(DEVICE2)), fail(CertSignature)),
        ("user and device swapped",    |v| { v["user"] = b64(&pk(DEVICE)); v["device"] = b64(&pk(USER)) }, fail(CertSignature)),
        ("cert.issued_at: a second earlier", |v| v["cert"]["issued_at"] = json!(UNIX_NOW - 3601), fail(CertSignature)),
        ("cert.expires_at: never",     |v| v["cert"]["expires_at"] = json!(0), fail(CertSignature)),
        // The signature is checked before the times: unsigned times never count as cert_time.
        ("cert.expires_at: an hour ago", |v| v["cert"]["expires_at"] = json!(UNIX_NOW - 3600), fail(CertSignature)),
        ("cert.sig: a bit flipped",    |v| flip(v, "cert.sig", 0),             fail(CertSignature)),
        ("cert.sig: S + L (malleated)", |v| edit_bytes(v, "cert.sig", |b| malleate(b)), fail(CertSignature)),
        ("sig: a bit of R flipped",    |v| flip(v, "sig", 0),                  fail(Signature)),
        ("sig: a bit of S flipped",    |v| flip(v, "sig", 32),                 fail(Signature)),
        ("sig: S + L (malleated)",     |v| edit_bytes(v, "sig", |b| malleate(b)), fail(Signature)),
        ("mac: first bit flipped",     |v| flip(v, "mac", 0),                  fail(Mac)),
        ("mac: last byte flipped",     |v| flip(v, "mac", 31),                 fail(Mac)),
    ];
    for (case, tamper, expect) in cases {
        check(case, Msg::ClientAuth, tamper, expect.clone());
    }
    for field in ["user", "device"] {
        for weak in WEAK_KEYS {
            let case = format!("{field}: small-order key {}", b64u::encode(&weak));
            check(
                &case,
                Msg::ClientAuth,
                |v| v[field] = b64(&weak),
                fail(InvalidKey),
            );
        }
    }
}

#[test]
fn client_auth_malformed() {
    let malformed = Expect::Server(HandshakeError::Malformed, 4001);
    check_bad_b64(
        Msg::ClientAuth,
        &["user", "device", "cert.sig", "sig", "mac"],
        &malformed,
    );
    for field in ["cert.issued_at", "cert.expires_at"] {
        for (what, value) in bad_u64() {
            check(
                &format!("{field}: {what}"),
                Msg::ClientAuth,
                |v| *path_mut(v, field) = value,
                malformed.clone(),
            );
        }
    }
    let fields = [
        "type",
        "user",
        "device",
        "cert",
        "cert.issued_at",
        "cert.expires_at",
        "cert.sig",
        "sig",
        "mac",
    ];
    for field in fields {
        check(
            &format!("{field}: missing"),
            Msg::ClientAuth,
            |v| remove(v, field),
            malformed.clone(),
        );
    }
    // Not JSON, not an object, truncated, trailing garbage, duplicated key.
    let auth = {
        let mut pair = Pair::new();
        assert!(matches!(pair.run_clean(), Outcome::CheckDevice(..)));
        pair.delivered(Msg::ClientAuth).to_owned()
    };
    let texts = [
        String::new(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        auth[..auth.len() - 1].into(),
        format!("{auth} x"),
        auth.replacen(
            '{',
            &format!(r#"{{"user":"{}","#, b64u::encode(&pk(USER2))),
            1,
        ),
    ];
    for text in texts {
        let mut pair = Pair::new();
        pair.advance_to(Stage::HellosDone);
        let (result, out) = pair.server_text(&text);
        assert_eq!(result, Err(HandshakeError::Malformed), "{text:?}");
        assert_eq!(out, refusal(&HandshakeError::Malformed, 4001), "{text:?}");
    }
}

/// Every reason sends the same frame: the peer never learns which check failed.
#[test]
fn auth_failed_frame_is_the_same_for_every_reason() {
    let mut frames = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    let expired = Setup {
        creds: creds_with_cert(USER, DEVICE, cert(USER, DEVICE, 0, 1)),
        ..Setup::default()
    };
    let runs: [(Setup, Tamper); 5] = [
        (Setup::default(), |v| v["user"] = b64(&identity_point())),
        (Setup::default(), |v| flip(v, "cert.sig", 0)),
        (expired, |_| {}),
        (Setup::default(), |v| flip(v, "sig", 0)),
        (Setup::default(), |v| flip(v, "mac", 0)),
    ];
    for (setup, tamper) in runs {
        let outcome = Pair::with(setup).run(Msg::ClientAuth, tamper);
        let Outcome::Server(HandshakeError::AuthFailed(reason), out) = outcome else {
            panic!("expected an auth failure, got {outcome:?}")
        };
        reasons.insert(reason.label());
        frames.insert(format!("{out:?}"));
    }
    // The revocation, answered after the lookup.
    let mut pair = Pair::new();
    pair.advance_to(Stage::CheckingDevice);
    let err = pair
        .server
        .device_checked(DeviceStatus::Revoked)
        .unwrap_err();
    reasons.insert(err.metric_label());
    frames.insert(format!("{:?}", pair.drain()));

    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert_eq!(frames.len(), 1, "{frames:?}");
    let frame: Value = serde_json::from_str(AUTH_FAILED_FRAME).unwrap();
    assert_eq!(frame["code"], "auth_failed");
}
