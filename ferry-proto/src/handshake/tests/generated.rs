//! Generated bad inputs: each message of a clean exchange (`client_hello`,
//! `server_hello`, `client_auth`) mutated in flight by [`mutate`](super::mutate),
//! 500 cases a message. Whatever the mutation, the exchange either completes —
//! and then the mutated message meant what the original meant — or it ends the
//! way §2 documents for that message:
//!
//! - `client_hello`: the server refuses it with close 4001 (with the
//!   `unsupported_version` or `bad_key` frame where §2 names one), or, when a valid
//!   `eph` or `nonce` was changed, signs a transcript the client does not have and the
//!   client refuses the `server_hello` (`ServerSignature`);
//! - `server_hello`: the client refuses it (it never sends `client_auth`);
//! - `client_auth`: the server refuses it with close 4001 when it is not a
//!   `client_auth` at all, otherwise with the one `auth_failed` frame and close 4002.
//!
//! A refusal is exactly the error frame §2 names (if any) and then the close, and
//! leaves the server with no session and no timer. Nothing panics.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::harness::*;
use super::mutate::{self, Mutation};
use crate::handshake::wire::message_type;
use crate::handshake::*;

/// The members whose meaning each message carries, as JSON pointers.
fn fields(msg: Msg) -> &'static [&'static str] {
    match msg {
        Msg::ClientHello => &["/type", "/v", "/eph", "/nonce"],
        Msg::ServerHello => &["/type", "/v", "/eph", "/nonce", "/server_key", "/sig"],
        Msg::ClientAuth => &[
            "/type",
            "/user",
            "/device",
            "/cert/issued_at",
            "/cert/expires_at",
            "/cert/sig",
            "/sig",
            "/mac",
        ],
    }
}

/// Runs a default exchange with `mutations` applied to message `target` and checks
/// the outcome against §2.
fn check_mutated(target: Msg, mutations: &[Mutation]) -> Result<(), TestCaseError> {
    let mut pair = Pair::new();
    let mut original = String::new();
    let outcome = pair.drive(|msg, text| {
        if msg != target {
            return text;
        }
        let mutated = mutate::apply_text(mutations, &text);
        original = text;
        mutated
    });
    let mutated = pair.delivered(target).to_owned();
    let same = mutate::same_fields(mutated.as_bytes(), original.as_bytes(), fields(target));
    let auth_sent = pair.sent.iter().any(|(m, _)| *m == Msg::ClientAuth);
    let shown = shorten(&mutated);
    if mutated == original {
        prop_assert!(
            matches!(outcome, Outcome::CheckDevice(..)),
            "an unchanged {target:?} was refused: {outcome:?}"
        );
    }
    match outcome {
        Outcome::CheckDevice(..) => {
            prop_assert!(
                same,
                "accepted a {target:?} that means something else: {shown}"
            );
            pair.server.device_checked(DeviceStatus::Active).unwrap();
            prop_assert_eq!(pair.drain(), [ServerOutput::Established]);
            let server = pair.server.into_established().unwrap();
            let client = pair.client.into_established().unwrap();
            prop_assert_eq!(server.session_id, client.session_id);
        }
        Outcome::Server(error, out) => {
            // The server refuses the message that was mutated, never the next one.
            prop_assert_eq!(
                auth_sent,
                target == Msg::ClientAuth,
                "{:?} refused after a mutated {:?}: {}",
                error,
                target,
                shown
            );
            let code = match (target, &error) {
                (
                    Msg::ClientHello,
                    HandshakeError::Malformed
                    | HandshakeError::Unexpected
                    | HandshakeError::UnsupportedVersion
                    | HandshakeError::BadKey,
                ) => 4001,
                (Msg::ClientAuth, HandshakeError::Malformed | HandshakeError::Unexpected) => 4001,
                (Msg::ClientAuth, HandshakeError::AuthFailed(_)) => 4002,
                _ => {
                    return Err(TestCaseError::fail(format!(
                        "{target:?} refused with {error:?}, which §2 does not name for it: {shown}"
                    )));
                }
            };
            prop_assert_eq!(error.close_code().as_u16(), code);
            prop_assert_eq!(out, refusal(&error, code), "{}", shown);
            prop_assert!(!pair.server.in_progress());
            prop_assert_eq!(pair.server.poll_timeout(), None);
            prop_assert!(pair.server.into_established().is_none());
        }
        Outcome::Client(error) => {
            prop_assert!(!auth_sent);
            prop_assert!(pair.client.into_established().is_none());
            match target {
                // A changed eph or nonce: the server signs a transcript the client
                // does not have.
                Msg::ClientHello => {
                    prop_assert!(!same, "a {target:?} that means the same: {shown}");
                    prop_assert_eq!(error, HandshakeError::ServerSignature, "{}", shown);
                }
                Msg::ServerHello => {
                    let refused_by_frame = message_type(&mutated).as_deref() == Some("error");
                    prop_assert!(
                        matches!(
                            error,
                            HandshakeError::Malformed
                                | HandshakeError::Unexpected
                                | HandshakeError::UnsupportedVersion
                                | HandshakeError::ServerKeyMismatch
                                | HandshakeError::ServerSignature
                                | HandshakeError::BadKey
                        ) || (refused_by_frame && matches!(error, HandshakeError::Refused(_))),
                        "the client refused with {error:?}: {shown}"
                    );
                }
                Msg::ClientAuth => {
                    return Err(TestCaseError::fail(format!(
                        "the client refused the server_hello of a clean exchange: {error:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The message as reported on failure: long strings (up to 20,000 characters) cut.
fn shorten(text: &str) -> String {
    const MAX: usize = 400;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

proptest! {
    #![proptest_config(mutate::config())]

    #[test]
    fn mutated_client_hello_is_refused_or_means_the_same(m in mutate::mutations()) {
        check_mutated(Msg::ClientHello, &m)?;
    }

    #[test]
    fn mutated_server_hello_is_refused_or_means_the_same(m in mutate::mutations()) {
        check_mutated(Msg::ServerHello, &m)?;
    }

    #[test]
    fn mutated_client_auth_is_refused_or_means_the_same(m in mutate::mutations()) {
        check_mutated(Msg::ClientAuth, &m)?;
    }
}
