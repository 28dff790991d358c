//! The device lookup: revoked devices, and answers nobody asked for.

use super::harness::*;
use crate::handshake::*;

#[test]
fn revoked_device() {
    let mut pair = Pair::new();
    pair.advance_to(Stage::CheckingDevice);
    let error = HandshakeError::AuthFailed(AuthFailure::Revoked);
    assert_eq!(
        pair.server.device_checked(DeviceStatus::Revoked),
        Err(error.clone())
    );
    assert_eq!(pair.drain(), refusal(&error, 4002));
    assert_ended(pair.server, "revoked");
}

#[test]
fn device_checked_without_a_pending_check() {
    let stages = [
        ("before the hello", Stage::Start),
        ("before client_auth", Stage::HellosDone),
    ];
    for (case, stage) in stages {
        for status in [DeviceStatus::Active, DeviceStatus::Revoked] {
            let mut pair = Pair::new();
            pair.advance_to(stage);
            assert_eq!(
                pair.server.device_checked(status),
                Err(HandshakeError::Unexpected),
                "{case}"
            );
            assert_eq!(
                pair.drain(),
                refusal(&HandshakeError::Unexpected, 4001),
                "{case}"
            );
            assert_ended(pair.server, case);
        }
    }
    // Twice.
    let mut pair = Pair::new();
    pair.advance_to(Stage::CheckingDevice);
    pair.server.device_checked(DeviceStatus::Active).unwrap();
    assert!(pair.server.device_checked(DeviceStatus::Active).is_err());
}
