//! Close codes and metric labels of every handshake error.

use std::collections::BTreeSet;

use crate::handshake::*;

#[test]
fn close_codes_and_metric_labels() {
    use AuthFailure as A;
    use HandshakeError as E;
    let table = [
        (E::Malformed, 4001, "malformed"),
        (E::Unexpected, 4001, "unexpected"),
        (E::UnsupportedVersion, 4001, "unsupported_version"),
        (E::BadKey, 4001, "bad_key"),
        (E::TimedOut, 4001, "timeout"),
        (E::AuthFailed(A::InvalidKey), 4002, "invalid_key"),
        (E::AuthFailed(A::CertSignature), 4002, "cert_signature"),
        (E::AuthFailed(A::CertTime), 4002, "cert_time"),
        (E::AuthFailed(A::Revoked), 4002, "revoked"),
        (E::AuthFailed(A::Signature), 4002, "signature"),
        (E::AuthFailed(A::Mac), 4002, "mac"),
        (E::ServerKeyMismatch, 4001, "server_key_mismatch"),
        (E::ServerSignature, 4001, "server_signature"),
        (E::Refused("auth_failed".into()), 4001, "refused"),
    ];
    for (error, code, label) in &table {
        assert_eq!(error.close_code().as_u16(), *code, "{error:?}");
        assert_eq!(error.metric_label(), *label, "{error:?}");
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{label}"
        );
    }
    let labels: BTreeSet<_> = table.iter().map(|(_, _, label)| label).collect();
    assert_eq!(labels.len(), table.len(), "labels are distinct");

    // A new variant stops these matches from compiling: add it to the table too.
    let variant = |e: &E| match e {
        E::Malformed => 0,
        E::Unexpected => 1,
        E::UnsupportedVersion => 2,
        E::BadKey => 3,
        E::TimedOut => 4,
        E::AuthFailed(
            A::InvalidKey | A::CertSignature | A::CertTime | A::Revoked | A::Signature | A::Mac,
        ) => 5,
        E::ServerKeyMismatch => 6,
        E::ServerSignature => 7,
        E::Refused(_) => 8,
    };
    let covered: BTreeSet<_> = table.iter().map(|(e, _, _)| variant(e)).collect();
    assert_eq!(covered.len(), 9);
}
