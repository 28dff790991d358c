//! Device certificates (signature, validity, the verified-certificate memo) and weak
//! identity keys.

use serde_json::{Value, json};

use super::harness::*;
use crate::handshake::*;

#[test]
fn certificate_signature() {
    use AuthFailure::CertSignature;
    #[rustfmt::skip]
    let cases = [
        ("signed by another user",             creds_with_cert(USER, DEVICE, cert(USER2, DEVICE, 0, 0)),  Some(CertSignature)),
        ("for another device key",             creds_with_cert(USER, DEVICE, cert(USER, DEVICE2, 0, 0)),  Some(CertSignature)),
        ("signed by the device itself",        creds_with_cert(USER, DEVICE, cert(DEVICE, DEVICE, 0, 0)), Some(CertSignature)),
        ("single-device user (user = device)", creds(USER, USER),                                         None),
        ("another user and its device",        creds(USER2, DEVICE2),                                     None),
    ];
    for (case, creds, reason) in cases {
        let expect = match reason {
            Some(reason) => Expect::Server(HandshakeError::AuthFailed(reason), 4002),
            None => Expect::Accepted,
        };
        let setup = Setup {
            creds,
            ..Setup::default()
        };
        check_with(setup, case, Msg::ClientAuth, |_| {}, expect);
    }
}

/// A [`verified_certificates_memo`] case: name, credentials, wall clock, tampering
/// of `client_auth`, and the expected refusal.
type MemoCase = (
    &'static str,
    DeviceCredentials,
    u64,
    fn(&mut Value),
    AuthFailure,
);

/// The memo of verified certificates: a device that comes back with the same
/// certificate skips only that signature check, never the time rules, its own
/// transcript signature or the MAC; a certificate that fails is not remembered.
#[test]
fn verified_certificates_memo() {
    use AuthFailure::{CertSignature, CertTime, Mac, Signature};
    let memo = std::sync::Arc::new(VerifiedCerts::new(16));
    let with_memo = |seed: u64, creds: DeviceCredentials, unix: u64| Setup {
        seed,
        creds,
        unix,
        verified: Some(memo.clone()),
        ..Setup::default()
    };
    let refused = |r| Expect::Server(HandshakeError::AuthFailed(r), 4002);

    // A forged certificate fails and leaves nothing behind.
    let forged = creds_with_cert(USER, DEVICE, cert(USER2, DEVICE, 0, 0));
    check_with(
        with_memo(1, forged, UNIX_NOW),
        "forged",
        Msg::ClientAuth,
        |_| {},
        refused(CertSignature),
    );
    assert!(memo.is_empty());

    // First use verifies and remembers; the next handshakes hit.
    let issued = cert(USER, DEVICE, UNIX_NOW - 3600, UNIX_NOW + 60);
    let good = || creds_with_cert(USER, DEVICE, issued);
    check_with(
        with_memo(2, good(), UNIX_NOW),
        "first use",
        Msg::ClientAuth,
        |_| {},
        Expect::Accepted,
    );
    assert_eq!(memo.len(), 1);
    check_with(
        with_memo(3, good(), UNIX_NOW),
        "again",
        Msg::ClientAuth,
        |_| {},
        Expect::Accepted,
    );
    assert_eq!(memo.len(), 1, "a hit adds nothing");

    // A hit still checks everything else; the same signature presented for another
    // device (or with other times) is another entry, verified on its own.
    let expires_later: fn(&mut Value) = |v| v["cert"]["expires_at"] = json!(UNIX_NOW + 120);
    #[rustfmt::skip]
    let cases: [MemoCase; 5] = [
        ("expired since",               good(),                                   UNIX_NOW + 61, |_| {},                    CertTime),
        ("bad transcript signature",    good(),                                   UNIX_NOW,      |v| flip(v, "sig", 0),     Signature),
        ("bad MAC",                     good(),                                   UNIX_NOW,      |v| flip(v, "mac", 0),     Mac),
        ("another device",              creds_with_cert(USER, DEVICE2, issued),   UNIX_NOW,      |_| {},                    CertSignature),
        ("other times, same signature", good(),                                   UNIX_NOW,      expires_later,             CertSignature),
    ];
    for (seed, (case, creds, unix, tamper, reason)) in (4..).zip(cases) {
        check_with(
            with_memo(seed, creds, unix),
            case,
            Msg::ClientAuth,
            tamper,
            refused(reason),
        );
    }
    assert_eq!(memo.len(), 1);
}

#[test]
fn certificate_time() {
    const NOW: u64 = UNIX_NOW;
    #[rustfmt::skip]
    let cases: &[(&str, u64, u64, u64, bool)] = &[
        // (case,                                issued_at,  expires_at,   wall clock,   accepted)
        ("valid for a day",                      NOW - 3600, NOW + 86_400, NOW,          true),
        ("expires_at = 0 never expires",         NOW - 3600, 0,            NOW,          true),
        ("issued at 0, never expires",           0,          0,            NOW,          true),
        ("expires in a second",                  NOW - 3600, NOW + 1,      NOW,          true),
        ("expires_at = now",                     NOW - 3600, NOW,          NOW,          false),
        ("expired an hour ago",                  NOW - 7200, NOW - 3600,   NOW,          false),
        ("issued_at = now + 300 (allowed skew)", NOW + 300,  0,            NOW,          true),
        ("issued_at = now + 301",                NOW + 301,  0,            NOW,          false),
        ("issued_at = u64::MAX",                 u64::MAX,   0,            NOW,          false),
        // The same certificate as the wall clock moves.
        ("the clock reaches expires_at",         NOW - 3600, NOW + 86_400, NOW + 86_400, false),
        ("the clock 300 s behind issued_at",     NOW,        0,            NOW - 300,    true),
        ("the clock 301 s behind issued_at",     NOW,        0,            NOW - 301,    false),
        ("the clock at the end of time",         0,          0,            u64::MAX,     true),
    ];
    for &(case, issued_at, expires_at, unix, accepted) in cases {
        let setup = Setup {
            creds: creds_with_cert(USER, DEVICE, cert(USER, DEVICE, issued_at, expires_at)),
            unix,
            ..Setup::default()
        };
        let expect = if accepted {
            Expect::Accepted
        } else {
            Expect::Server(HandshakeError::AuthFailed(AuthFailure::CertTime), 4002)
        };
        check_with(setup, case, Msg::ClientAuth, |_| {}, expect);
    }
}

#[test]
fn weak_user_key_in_credentials() {
    for weak in WEAK_KEYS {
        let mut creds = creds(USER, DEVICE);
        creds.user = weak;
        let setup = Setup {
            creds,
            ..Setup::default()
        };
        let expect = Expect::Server(HandshakeError::AuthFailed(AuthFailure::InvalidKey), 4002);
        check_with(setup, "weak user key", Msg::ClientAuth, |_| {}, expect);
    }
}
