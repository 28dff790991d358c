//! The handshake deadline, in every stage and after the end.

use std::time::Duration;

use super::harness::*;
use crate::close::CloseCode;
use crate::handshake::*;

#[test]
fn timeout_in_every_stage() {
    for stage in [Stage::Start, Stage::HellosDone, Stage::CheckingDevice] {
        let mut pair = Pair::new();
        let deadline = pair.clock.now() + TIMEOUT;
        pair.advance_to(stage);

        pair.clock.advance(Duration::from_millis(9_900));
        assert_eq!(
            pair.server.handle_timeout(pair.clock.now()),
            Ok(()),
            "{stage:?}"
        );
        assert!(pair.drain().is_empty(), "{stage:?}");
        assert_eq!(pair.server.poll_timeout(), Some(deadline), "{stage:?}");

        pair.clock.advance(Duration::from_millis(100));
        assert_eq!(pair.clock.now(), deadline);
        assert_eq!(
            pair.server.handle_timeout(pair.clock.now()),
            Err(HandshakeError::TimedOut)
        );
        // No error frame: just the close.
        assert_eq!(
            pair.drain(),
            [ServerOutput::Close(CloseCode::HandshakeFailed)],
            "{stage:?}"
        );
        assert!(!pair.server.in_progress());
        assert_eq!(pair.server.poll_timeout(), None);

        // Afterwards, every input is out of order and nothing more is ever sent.
        let hello = pair.client_hello.encode();
        assert_eq!(
            pair.server.handle_text(&hello, UNIX_NOW),
            Err(HandshakeError::Unexpected)
        );
        assert_eq!(pair.server.handle_binary(), Err(HandshakeError::Unexpected));
        assert_eq!(
            pair.server.device_checked(DeviceStatus::Active),
            Err(HandshakeError::Unexpected)
        );
        assert!(
            pair.drain()
                .iter()
                .all(|o| matches!(o, ServerOutput::Close(_)))
        );
        // A later timer is a no-op.
        pair.clock.advance(TIMEOUT);
        assert_eq!(pair.server.handle_timeout(pair.clock.now()), Ok(()));
        assert!(pair.drain().is_empty());
        assert_ended(pair.server, &format!("{stage:?}"));
    }
}

#[test]
fn timeout_after_the_end_is_a_no_op() {
    // After success.
    let mut pair = Pair::new();
    pair.advance_to(Stage::CheckingDevice);
    pair.server.device_checked(DeviceStatus::Active).unwrap();
    assert_eq!(pair.drain(), [ServerOutput::Established]);
    pair.clock.advance(TIMEOUT * 2);
    assert_eq!(pair.server.handle_timeout(pair.clock.now()), Ok(()));
    assert!(pair.drain().is_empty());
    assert!(pair.server.into_established().is_some());

    // After a failure.
    let mut pair = Pair::new();
    assert!(matches!(
        pair.run(Msg::ClientAuth, |v| flip(v, "mac", 0)),
        Outcome::Server(..)
    ));
    pair.clock.advance(TIMEOUT * 2);
    assert_eq!(pair.server.handle_timeout(pair.clock.now()), Ok(()));
    assert!(pair.drain().is_empty());
}
