//! The handshake that succeeds, step by step and in its variants.

use std::time::Duration;

use super::harness::*;
use crate::b64u;
use crate::handshake::wire::ServerHello;
use crate::handshake::*;

#[test]
fn happy_path_step_by_step() {
    let mut pair = Pair::new();
    let deadline = pair.clock.now() + TIMEOUT;
    assert!(pair.server.in_progress());
    assert_eq!(pair.server.poll_timeout(), Some(deadline));
    assert!(pair.drain().is_empty());

    let hello = pair.client.client_hello().unwrap();
    pair.clock.advance(Duration::from_secs(1));
    let (result, out) = pair.server_text(&hello);
    result.unwrap();
    let [ServerOutput::SendText(server_hello)] = out.as_slice() else {
        panic!("expected exactly [SendText(server_hello)], got {out:?}")
    };
    let sh = ServerHello::parse(server_hello).unwrap();
    assert_eq!(sh.server_key, pk(SERVER));
    // The deadline counts from the upgrade, not from the last message.
    assert_eq!(pair.server.poll_timeout(), Some(deadline));

    let auth = pair.client.handle_text(server_hello).unwrap();
    assert_eq!(pair.client.server_key(), Some(pk(SERVER)));
    assert_eq!(pair.client.client_hello(), None, "the hello is sent once");
    let (result, out) = pair.server_text(&auth);
    result.unwrap();
    let identity = Identity {
        user: pk(USER),
        device: pk(DEVICE),
    };
    let cert = Setup::default().creds.cert;
    assert_eq!(out, [ServerOutput::CheckDevice { identity, cert }]);
    assert!(pair.server.in_progress());
    assert_eq!(pair.server.poll_timeout(), Some(deadline));

    pair.server.device_checked(DeviceStatus::Active).unwrap();
    assert_eq!(pair.drain(), [ServerOutput::Established]);
    assert!(!pair.server.in_progress());
    assert_eq!(pair.server.poll_timeout(), None);

    let mut srv = pair.server.into_established().unwrap();
    let mut cli = pair.client.into_established().unwrap();
    assert_eq!(srv.identity, identity);
    assert_eq!(cli.identity, identity);
    assert_eq!(srv.cert, cert);
    assert_eq!(cli.cert, cert);
    assert_eq!(srv.session_id, cli.session_id);
    assert!(b64u::decode_array::<16>(&srv.session_id).is_ok());
    assert_channel(&mut srv, &mut cli);
}

#[test]
fn happy_path_variants() {
    // Trust on first use: the client learns the key.
    let mut pair = Pair::with(Setup {
        pin: ServerPin::FirstUse,
        ..Setup::default()
    });
    assert!(matches!(pair.run_clean(), Outcome::CheckDevice(..)));
    assert_eq!(pair.client.server_key(), Some(pk(SERVER)));

    // A single-device user signs its own certificate (§1).
    let (mut srv, mut cli) = Pair::with(Setup {
        creds: creds(USER, USER),
        ..Setup::default()
    })
    .establish();
    assert_eq!(srv.identity.user(), srv.identity.device());
    assert_channel(&mut srv, &mut cli);
}

#[test]
fn sessions_are_fresh_and_the_harness_is_deterministic() {
    let id = |seed| {
        let (srv, _) = Pair::with(Setup {
            seed,
            ..Setup::default()
        })
        .establish();
        srv.session_id
    };
    assert_eq!(id(1), id(1));
    assert_ne!(id(1), id(2));
}
