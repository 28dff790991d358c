//! Messages out of order, repeated, or of the wrong frame type.

use super::harness::*;
use crate::handshake::*;

#[test]
fn client_auth_first() {
    let auth = {
        let mut other = Pair::new();
        assert!(matches!(other.run_clean(), Outcome::CheckDevice(..)));
        other.delivered(Msg::ClientAuth).to_owned()
    };
    let mut pair = Pair::new();
    let (result, out) = pair.server_text(&auth);
    assert_eq!(result, Err(HandshakeError::Unexpected));
    assert_eq!(out, refusal(&HandshakeError::Unexpected, 4001));
    assert_ended(pair.server, "client_auth first");
}

#[test]
fn client_hello_twice() {
    let mut pair = Pair::new();
    let hello = pair.client.client_hello().unwrap();
    pair.server_text(&hello).0.unwrap();
    let (result, out) = pair.server_text(&hello);
    assert_eq!(result, Err(HandshakeError::Unexpected));
    assert_eq!(out, refusal(&HandshakeError::Unexpected, 4001));
    assert_ended(pair.server, "client_hello twice");
}

#[test]
fn text_while_the_device_check_is_pending() {
    let mut clean = Pair::new();
    assert!(matches!(clean.run_clean(), Outcome::CheckDevice(..)));
    let texts = [
        clean.delivered(Msg::ClientAuth),
        clean.delivered(Msg::ClientHello),
        "{}",
        "",
    ];
    for text in texts {
        let mut pair = Pair::new();
        pair.advance_to(Stage::CheckingDevice);
        let (result, out) = pair.server_text(text);
        assert_eq!(result, Err(HandshakeError::Unexpected), "{text:?}");
        assert_eq!(out, refusal(&HandshakeError::Unexpected, 4001), "{text:?}");
        // The lookup's answer comes too late: there is no session to give.
        assert!(pair.server.device_checked(DeviceStatus::Active).is_err());
        assert!(
            pair.drain()
                .iter()
                .all(|o| matches!(o, ServerOutput::Close(_)))
        );
        assert_ended(pair.server, text);
    }
}

#[test]
fn binary_frame_at_any_stage() {
    for stage in [Stage::Start, Stage::HellosDone, Stage::CheckingDevice] {
        let mut pair = Pair::new();
        pair.advance_to(stage);
        assert_eq!(
            pair.server.handle_binary(),
            Err(HandshakeError::Unexpected),
            "{stage:?}"
        );
        assert_eq!(
            pair.drain(),
            refusal(&HandshakeError::Unexpected, 4001),
            "{stage:?}"
        );
        assert_ended(pair.server, &format!("{stage:?}"));
    }
}

#[test]
fn client_receives_a_second_server_hello() {
    let mut pair = Pair::new();
    assert!(matches!(pair.run_clean(), Outcome::CheckDevice(..)));
    let server_hello = pair.delivered(Msg::ServerHello).to_owned();
    assert_eq!(
        pair.client.handle_text(&server_hello),
        Err(HandshakeError::Unexpected)
    );
}
