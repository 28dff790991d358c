//! Replayed, reflected and forged `client_auth` messages.

use super::harness::*;
use crate::handshake::wire::ClientAuth;
use crate::handshake::*;
use crate::keys;

/// H5: a `client_auth` recorded in one session fails in any other.
#[test]
fn client_auth_replayed_from_another_session() {
    let mut a = Pair::with(Setup {
        seed: 1,
        ..Setup::default()
    });
    assert!(matches!(a.run_clean(), Outcome::CheckDevice(..)));
    let (hello_a, auth_a) = (a.delivered(Msg::ClientHello), a.delivered(Msg::ClientAuth));
    let signature = HandshakeError::AuthFailed(AuthFailure::Signature);

    // The attacker replays both client messages to a new connection: the server's
    // fresh ephemeral and nonce change TH1.
    let mut b = Pair::with(Setup {
        seed: 2,
        ..Setup::default()
    });
    let (result, out) = b.server_text(hello_a);
    result.unwrap();
    assert!(matches!(out.as_slice(), [ServerOutput::SendText(_)]));
    let (result, out) = b.server_text(auth_a);
    assert_eq!(result, Err(signature.clone()));
    assert_eq!(out, refusal(&signature, 4002));

    // Or into a session whose hellos the real client exchanged.
    let mut c = Pair::with(Setup {
        seed: 3,
        ..Setup::default()
    });
    c.advance_to(Stage::HellosDone);
    let (result, out) = c.server_text(auth_a);
    assert_eq!(result, Err(signature.clone()));
    assert_eq!(out, refusal(&signature, 4002));
}

/// A `client_auth` built by someone who holds the client's ephemeral secret and a
/// device key, then edited; the first row shows that the unedited one is accepted, so
/// each other row fails for its edit alone (H6, H8).
#[test]
fn forged_client_auth() {
    use AuthFailure::*;
    type Edit = fn(&Session, &mut ClientAuth);
    #[rustfmt::skip]
    let cases: &[(&str, u8, u8, Edit, Option<AuthFailure>)] = &[
        // (case, user, device, edit, failure)
        ("honest",                                    USER, DEVICE, |_, _| {}, None),
        ("honest, single-device user",                USER, USER,   |_, _| {}, None),
        // TH2 covers the certificate, and the MAC covers TH2.
        ("another valid cert, stale sig and mac",     USER, DEVICE, |_, a| a.cert = cert(USER, DEVICE, UNIX_NOW, 0), Some(Signature)),
        ("another valid cert, fresh sig, stale mac",  USER, DEVICE, |s, a| { a.cert = cert(USER, DEVICE, UNIX_NOW, 0); s.sign(a, &key(DEVICE)) }, Some(Mac)),
        ("another valid cert, fresh sig and mac",     USER, DEVICE, |s, a| { a.cert = cert(USER, DEVICE, UNIX_NOW, 0); s.sign(a, &key(DEVICE)); s.mac(a) }, None),
        ("sig by another device key",                 USER, DEVICE, |s, a| s.sign(a, &key(DEVICE2)), Some(Signature)),
        ("sig over TH1",                              USER, DEVICE, |s, a| a.sig = keys::sign(&key(DEVICE), &crypto::client_sig_message(&s.th1)), Some(Signature)),
        ("mac over TH1",                              USER, DEVICE, |s, a| a.mac = s.hs.client_mac(&s.th1), Some(Mac)),
        ("mac = K_hs",                                USER, DEVICE, |s, a| a.mac = *s.hs.k_hs(), Some(Mac)),
        // Domain separation (H8): the device's other signatures are no handshake signature.
        ("the cert signature as sig (user = device)", USER, USER,   |_, a| a.sig = a.cert.sig, Some(Signature)),
        ("the handshake sig as cert sig",             USER, USER,   |_, a| a.cert.sig = a.sig, Some(CertSignature)),
        ("a REST signature over challenge = TH2",     USER, DEVICE, |s, a| a.sig = keys::sign_rest_challenge(&key(DEVICE), &s.th2(a), &pk(SERVER)), Some(Signature)),
        ("sig under the server's label",              USER, DEVICE, |s, a| a.sig = keys::sign(&key(DEVICE), &crypto::server_sig_message(&s.th2(a))), Some(Signature)),
        // Reflection (H6): the attacker certifies the server's public key as a device of
        // a user it owns, so every other check passes, and reflects the signature the
        // server has just made.
        ("server key as device, honest (sanity)",     USER2, SERVER, |_, _| {}, None),
        ("server key as device, server sig reflected", USER2, SERVER, |s, a| a.sig = s.server_hello.sig, Some(Signature)),
    ];
    for &(case, user, device, edit, failure) in cases {
        let mut pair = Pair::new();
        let session = pair.open_session();
        let mut auth = session.auth(user, device, cert(user, device, UNIX_NOW - 60, 0));
        edit(&session, &mut auth);
        let (result, out) = pair.send_auth(&auth);
        match failure {
            None => {
                assert_eq!(result, Ok(()), "{case}");
                assert!(
                    matches!(out.as_slice(), [ServerOutput::CheckDevice { .. }]),
                    "{case}: {out:?}"
                );
            }
            Some(reason) => {
                let error = HandshakeError::AuthFailed(reason);
                assert_eq!(result, Err(error.clone()), "{case}");
                assert_eq!(out, refusal(&error, 4002), "{case}");
            }
        }
    }
}
