//! In-memory handshake harness: a [`ServerHandshake`] and a [`ClientHandshake`] wired
//! back to back (quinn-proto's `Pair`, rustls' `do_handshake`), with a virtual clock,
//! deterministic randomness and a hook that can rewrite any message in flight.
//!
//! # Layout
//! - Harness: fixtures ([`key`], [`Setup`]), the [`Pair`] and its stepping functions,
//!   JSON tamper helpers, [`Session`] (what a client-side forger can compute), and
//!   [`check`], the data-driven assertion most tests are written with.
//! - Tests, grouped by message: happy path, `client_hello`, `server_hello`,
//!   `client_auth`, certificates, device lookup, replay and reflection, ordering,
//!   timeout, error mapping.
//!
//! Everything is deterministic: long-term keys come from fixed seeds, ephemerals from a
//! counter-based RNG, and time from the virtual [`Clock`]. Nothing measures real time.
//!
//! To add a case, prefer adding a row to a table over writing a new test: a row is a
//! tamper function and the outcome it must end in ([`Expect`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use x25519_dalek::StaticSecret;

use super::crypto::{self, HandshakeSecret};
use super::wire::{ClientAuth, ClientHello, ServerHello};
use super::*;
use crate::b64u;
use crate::close::CloseCode;
use crate::keys::{self, DeviceCertificate};

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// The wall clock of every test, Unix seconds.
const UNIX_NOW: u64 = 1_750_000_000;
/// The handshake deadline of §2.
const TIMEOUT: Duration = Duration::from_secs(10);

// Seeds of the long-term Ed25519 keys.
const SERVER: u8 = 1;
const USER: u8 = 2;
const DEVICE: u8 = 3;
/// A second user and device: valid keys, but the wrong ones.
const USER2: u8 = 4;
const DEVICE2: u8 = 5;

/// The only `auth_failed` frame the server may send. What matters is that it is the same
/// for every reason; if the wording changes on purpose, change it here.
const AUTH_FAILED_FRAME: &str =
    r#"{"type":"error","code":"auth_failed","message":"authentication failed"}"#;
/// §2, to the byte.
const UNSUPPORTED_VERSION_FRAME: &str =
    r#"{"type":"error","code":"unsupported_version","supported":[1]}"#;
const BAD_KEY_FRAME: &str =
    r#"{"type":"error","code":"bad_key","message":"ephemeral key rejected"}"#;

/// Small-order Ed25519 point encodings: the identity (y = 1), the point of order 2
/// (y = -1) and a point of order 4 (y = 0).
const WEAK_KEYS: [[u8; 32]; 3] = [identity_point(), order_two_point(), [0; 32]];

const fn identity_point() -> [u8; 32] {
    let mut b = [0; 32];
    b[0] = 1;
    b
}

const fn order_two_point() -> [u8; 32] {
    // p - 1 = 2^255 - 20, little-endian.
    let mut b = [0xff; 32];
    b[0] = 0xec;
    b[31] = 0x7f;
    b
}

/// The Ed25519 group order L, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn pk(seed: u8) -> [u8; 32] {
    key(seed).verifying_key().to_bytes()
}

/// An honest X25519 public key.
fn x25519_public(seed: u8) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&StaticSecret::from([seed; 32])).to_bytes()
}

fn b64(bytes: &[u8]) -> Value {
    json!(b64u::encode(bytes))
}

/// The certificate the key `user` issues for the key `device`.
fn cert(user: u8, device: u8, issued_at: u64, expires_at: u64) -> DeviceCertificate {
    DeviceCertificate::issue(&key(user), &pk(device), issued_at, expires_at)
}

/// Credentials of `device` acting for `user`, with a certificate valid at [`UNIX_NOW`].
fn creds(user: u8, device: u8) -> DeviceCredentials {
    creds_with_cert(
        user,
        device,
        cert(user, device, UNIX_NOW - 3600, UNIX_NOW + 86_400),
    )
}

fn creds_with_cert(user: u8, device: u8, cert: DeviceCertificate) -> DeviceCredentials {
    DeviceCredentials {
        user: pk(user),
        device_key: key(device),
        cert,
    }
}

/// Deterministic randomness: `SHA-256(seed || block counter)`, block after block.
struct TestRng {
    seed: u64,
    block: u64,
}

impl TestRng {
    fn new(seed: u64) -> Self {
        Self { seed, block: 0 }
    }
}

impl rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed.to_be_bytes())
                .chain_update(self.block.to_be_bytes())
                .finalize();
            self.block += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for TestRng {}

/// Virtual time: a monotonic base plus an offset, and the wall clock as a separate
/// field (the state machines take both as inputs and read neither).
struct Clock {
    base: Instant,
    elapsed: Duration,
    unix: u64,
}

impl Clock {
    fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }
}

// ---------------------------------------------------------------------------------
// The pair
// ---------------------------------------------------------------------------------

/// What a [`Pair`] is built from. `Setup::default()` is a handshake that succeeds.
struct Setup {
    /// Seeds the RNG both sides' ephemerals are drawn from.
    seed: u64,
    creds: DeviceCredentials,
    pin: ServerPin,
    /// Replaces the server's X25519 secret (the Wycheproof tests use the vector's).
    server_secret: Option<[u8; 32]>,
    /// The wall clock, Unix seconds.
    unix: u64,
    /// A memo of verified certificates for the server to share.
    verified: Option<std::sync::Arc<VerifiedCerts>>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            seed: 1,
            creds: creds(USER, DEVICE),
            pin: ServerPin::Key(pk(SERVER)),
            server_secret: None,
            unix: UNIX_NOW,
            verified: None,
        }
    }
}

/// The three handshake messages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    ClientHello,
    ServerHello,
    ClientAuth,
}

/// The server's states while the handshake runs.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Waiting for `client_hello`.
    Start,
    /// `server_hello` sent, waiting for `client_auth`.
    HellosDone,
    /// `CheckDevice` output, waiting for `device_checked`.
    CheckingDevice,
}

/// How far an exchange got.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The server refused a message: its error and everything it output for it.
    Server(HandshakeError, Vec<ServerOutput>),
    /// The client refused the `server_hello`.
    Client(HandshakeError),
    /// Every check passed and the server asks for the device lookup.
    CheckDevice(Identity, DeviceCertificate),
}

/// A server and a client handshake connected in memory.
struct Pair {
    server: ServerHandshake,
    client: ClientHandshake,
    clock: Clock,
    /// The client's first message, parsed, and its X25519 secret: what a test needs to
    /// compute what the client computes.
    client_hello: ClientHello,
    client_secret: [u8; 32],
    /// Every message delivered so far, as delivered (after tampering).
    sent: Vec<(Msg, String)>,
}

impl Pair {
    fn new() -> Self {
        Self::with(Setup::default())
    }

    fn with(setup: Setup) -> Self {
        let mut rng = TestRng::new(setup.seed);
        let mut server_eph = ServerEphemeral::random(&mut rng);
        if let Some(secret) = setup.server_secret {
            server_eph.secret = secret;
        }
        let client_eph = ClientEphemeral::random(&mut rng);
        let client_secret = client_eph.secret;
        let clock = Clock {
            base: Instant::now(), // sans-io: allowed (test: the virtual clock needs one real origin)
            elapsed: Duration::ZERO,
            unix: setup.unix,
        };
        let client = ClientHandshake::new(setup.creds, setup.pin, client_eph);
        let client_hello =
            ClientHello::parse(&client.client_hello().expect("a new client has a hello"))
                .expect("the client's own hello parses");
        let server = ServerHandshake::new(key(SERVER), server_eph, clock.now(), TIMEOUT);
        let server = match setup.verified {
            Some(memo) => server.with_verified_certs(memo),
            None => server,
        };
        Self {
            server,
            client,
            clock,
            client_hello,
            client_secret,
            sent: Vec::new(),
        }
    }

    /// Everything the server has queued, in order.
    fn drain(&mut self) -> Vec<ServerOutput> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    /// Feeds one text frame to the server and drains what it output.
    fn server_text(&mut self, text: &str) -> (Result<(), HandshakeError>, Vec<ServerOutput>) {
        let result = self.server.handle_text(text, self.clock.unix);
        (result, self.drain())
    }

    /// Runs the exchange as far as it goes, passing every message through `edit`.
    fn drive(&mut self, mut edit: impl FnMut(Msg, String) -> String) -> Outcome {
        let hello = edit(
            Msg::ClientHello,
            self.client
                .client_hello()
                .expect("a new client has a hello"),
        );
        self.sent.push((Msg::ClientHello, hello.clone()));
        let server_hello = match self.server_text(&hello) {
            (Ok(()), out) => match out.as_slice() {
                [ServerOutput::SendText(text)] => text.clone(),
                other => panic!("expected exactly [SendText(server_hello)], got {other:?}"),
            },
            (Err(e), out) => return Outcome::Server(e, out),
        };
        let server_hello = edit(Msg::ServerHello, server_hello);
        self.sent.push((Msg::ServerHello, server_hello.clone()));
        let auth = match self.client.handle_text(&server_hello) {
            Ok(auth) => auth,
            Err(e) => return Outcome::Client(e),
        };
        let auth = edit(Msg::ClientAuth, auth);
        self.sent.push((Msg::ClientAuth, auth.clone()));
        match self.server_text(&auth) {
            (Ok(()), out) => match out.as_slice() {
                [ServerOutput::CheckDevice { identity, cert }] => {
                    Outcome::CheckDevice(*identity, *cert)
                }
                other => panic!("expected exactly [CheckDevice], got {other:?}"),
            },
            (Err(e), out) => Outcome::Server(e, out),
        }
    }

    fn run_clean(&mut self) -> Outcome {
        self.drive(|_, text| text)
    }

    /// Runs the exchange with `tamper` applied to the JSON of message `target`.
    fn run(&mut self, target: Msg, tamper: impl FnOnce(&mut Value)) -> Outcome {
        let mut tamper = Some(tamper);
        self.drive(|msg, text| {
            if msg == target
                && let Some(f) = tamper.take()
            {
                tampered(&text, f)
            } else {
                text
            }
        })
    }

    /// A message as it was delivered.
    fn delivered(&self, msg: Msg) -> &str {
        let (_, text) = self
            .sent
            .iter()
            .find(|(m, _)| *m == msg)
            .expect("message was sent");
        text
    }

    /// Completes a clean handshake: both sides' sessions (server, client).
    fn establish(mut self) -> (Established, Established) {
        assert!(matches!(self.run_clean(), Outcome::CheckDevice(..)));
        self.server.device_checked(DeviceStatus::Active).unwrap();
        assert_eq!(self.drain(), [ServerOutput::Established]);
        (
            self.server.into_established().expect("server established"),
            self.client.into_established().expect("client established"),
        )
    }

    /// Runs a clean exchange until the server is in `stage`.
    fn advance_to(&mut self, stage: Stage) {
        match stage {
            Stage::Start => {}
            Stage::HellosDone => drop(self.open_session()),
            Stage::CheckingDevice => {
                assert!(matches!(self.run_clean(), Outcome::CheckDevice(..)))
            }
        }
    }

    /// Exchanges the hellos and returns what the client side knows of the session.
    fn open_session(&mut self) -> Session {
        let hello = self
            .client
            .client_hello()
            .expect("a new client has a hello");
        let (result, out) = self.server_text(&hello);
        result.unwrap();
        let [ServerOutput::SendText(server_hello)] = out.as_slice() else {
            panic!("expected exactly [SendText(server_hello)], got {out:?}")
        };
        self.client
            .handle_text(server_hello)
            .expect("a clean server_hello");
        let eph_s = ServerHello::parse(server_hello).unwrap().eph;
        let dh = crypto::x25519(&StaticSecret::from(self.client_secret), &eph_s).unwrap();
        Session::new(&self.client_hello, server_hello, &dh)
    }

    fn send_auth(&mut self, auth: &ClientAuth) -> (Result<(), HandshakeError>, Vec<ServerOutput>) {
        self.server_text(&auth.encode())
    }
}

/// What the client side of a session knows after the hellos: enough to build any
/// `client_auth` that a holder of some device key could send in it.
struct Session {
    server_hello: ServerHello,
    th1: [u8; 32],
    hs: HandshakeSecret,
}

impl Session {
    fn new(client_hello: &ClientHello, server_hello: &str, dh: &[u8; 32]) -> Self {
        let sh = ServerHello::parse(server_hello).unwrap();
        let th1 = crypto::th1(
            &client_hello.eph,
            &client_hello.nonce,
            &sh.eph,
            &sh.nonce,
            &sh.server_key,
        );
        Self {
            server_hello: sh,
            th1,
            hs: HandshakeSecret::derive(&th1, dh),
        }
    }

    fn th2(&self, auth: &ClientAuth) -> [u8; 32] {
        let c = &auth.cert;
        crypto::th2(
            &self.th1,
            &auth.user,
            &auth.device,
            c.issued_at,
            c.expires_at,
            &c.sig,
        )
    }

    /// The `client_auth` an honest client with these keys and `cert` sends.
    fn auth(&self, user: u8, device: u8, cert: DeviceCertificate) -> ClientAuth {
        let mut auth = ClientAuth {
            user: pk(user),
            device: pk(device),
            cert,
            sig: [0; 64],
            mac: [0; 32],
        };
        self.sign(&mut auth, &key(device));
        self.mac(&mut auth);
        auth
    }

    /// Signs `auth`'s own TH2 with `device`.
    fn sign(&self, auth: &mut ClientAuth, device: &SigningKey) {
        auth.sig = keys::sign(device, &crypto::client_sig_message(&self.th2(auth)));
    }

    /// MACs `auth`'s own TH2 with this session's K_hs.
    fn mac(&self, auth: &mut ClientAuth) {
        auth.mac = self.hs.client_mac(&self.th2(auth));
    }
}

/// A `server_hello` answering `client_hello`, correctly signed by `server`.
fn signed_server_hello(
    client_hello: &ClientHello,
    eph: [u8; 32],
    nonce: [u8; 32],
    server: &SigningKey,
) -> String {
    let server_key = server.verifying_key().to_bytes();
    let th1 = crypto::th1(
        &client_hello.eph,
        &client_hello.nonce,
        &eph,
        &nonce,
        &server_key,
    );
    let sig = keys::sign(server, &crypto::server_sig_message(&th1));
    ServerHello {
        eph,
        nonce,
        server_key,
        sig,
    }
    .encode()
}

// ---------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------

/// A tamper hook: edits a message's JSON in flight.
type Tamper = fn(&mut Value);

/// Parses `text`, lets `f` edit the JSON, and serialises it again.
fn tampered(text: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(text).expect("handshake messages are JSON");
    f(&mut v);
    serde_json::to_string(&v).unwrap()
}

/// The field at a dotted path such as `"cert.sig"` (created as null if missing).
fn path_mut<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.').fold(v, |v, k| &mut v[k])
}

fn remove(v: &mut Value, path: &str) {
    let (parent, name) = match path.rsplit_once('.') {
        Some((parent, name)) => (path_mut(v, parent), name),
        None => (v, path),
    };
    parent.as_object_mut().expect("an object").remove(name);
}

/// Decodes the b64u field at `path`, lets `f` edit the bytes, and encodes them again.
fn edit_bytes(v: &mut Value, path: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let field = path_mut(v, path);
    let mut bytes = b64u::decode(field.as_str().expect("a b64u field")).expect("valid b64u");
    f(&mut bytes);
    *field = b64(&bytes);
}

/// Flips one bit in byte `i` of the b64u field at `path`: another value of the right length.
fn flip(v: &mut Value, path: &str, i: usize) {
    edit_bytes(v, path, |b| b[i] ^= 1);
}

/// Adds L to the `S` half of a signature: the same signature with a non-canonical `S`.
fn malleate(sig: &mut [u8]) {
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(ED25519_L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
}

/// Ways to break a b64u field. Each must be refused as malformed, before any crypto.
#[derive(Clone, Copy, Debug)]
enum BadB64 {
    Missing,
    Null,
    Number,
    Empty,
    /// One byte too few (31 for a key, 63 for a signature).
    Short,
    /// One byte too many.
    Long,
    /// A trailing `=`.
    Padded,
    /// A `+` from the standard alphabet, same length.
    StdAlphabet,
    /// The right length, but a spare bit of the last character set.
    TrailingBits,
    LeadingSpace,
}

impl BadB64 {
    const ALL: [Self; 10] = [
        Self::Missing,
        Self::Null,
        Self::Number,
        Self::Empty,
        Self::Short,
        Self::Long,
        Self::Padded,
        Self::StdAlphabet,
        Self::TrailingBits,
        Self::LeadingSpace,
    ];

    fn apply(self, v: &mut Value, path: &str) {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        if let Self::Missing = self {
            return remove(v, path);
        }
        let field = path_mut(v, path);
        let text = field.as_str().expect("a b64u field").to_owned();
        let bytes = b64u::decode(&text).expect("valid b64u");
        *field = match self {
            Self::Missing => unreachable!(),
            Self::Null => Value::Null,
            Self::Number => json!(0),
            Self::Empty => json!(""),
            Self::Short => b64(&bytes[1..]),
            Self::Long => b64(&[&bytes[..], &[0]].concat()),
            Self::Padded => json!(format!("{text}=")),
            Self::StdAlphabet => json!(format!("+{}", &text[1..])),
            Self::TrailingBits => {
                let (head, last) = text.split_at(text.len() - 1);
                let i = ALPHABET
                    .iter()
                    .position(|&c| c == last.as_bytes()[0])
                    .unwrap();
                assert_eq!(i & 1, 0, "canonical b64u leaves the spare bits zero");
                json!(format!("{head}{}", ALPHABET[i | 1] as char))
            }
            Self::LeadingSpace => json!(format!(" {text}")),
        };
    }
}

/// Values a `u64` field must not accept.
fn bad_u64() -> [(&'static str, Value); 6] {
    [
        ("a string", json!("1750000000")),
        ("negative", json!(-1)),
        ("a float", json!(1.5)),
        ("2^64", json!(18_446_744_073_709_551_616.0)),
        ("null", Value::Null),
        ("an object", json!({})),
    ]
}

// ---------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------

/// What a (tampered) exchange must end in.
#[derive(Clone, Debug)]
enum Expect {
    /// The server refuses with this error, the error frame the spec names for it (if
    /// any), and this close code.
    Server(HandshakeError, u16),
    /// The client refuses the `server_hello` with this error.
    Client(HandshakeError),
    /// Every check passes and the handshake completes.
    Accepted,
}

/// Exactly what the server outputs when it refuses with `error`: the error frame, if
/// the spec names one for it, then the close.
fn refusal(error: &HandshakeError, code: u16) -> Vec<ServerOutput> {
    let frame = match error {
        HandshakeError::AuthFailed(_) => Some(AUTH_FAILED_FRAME),
        HandshakeError::UnsupportedVersion => Some(UNSUPPORTED_VERSION_FRAME),
        HandshakeError::BadKey => Some(BAD_KEY_FRAME),
        _ => None,
    };
    let close = ServerOutput::Close(CloseCode::from_u16(code).expect("a protocol close code"));
    frame
        .map(|f| ServerOutput::SendText(f.into()))
        .into_iter()
        .chain([close])
        .collect()
}

/// The server is done for good: nothing to wait for, nothing to take.
fn assert_ended(server: ServerHandshake, case: &str) {
    assert!(!server.in_progress(), "{case}: still in progress");
    assert_eq!(server.poll_timeout(), None, "{case}: still has a timer");
    assert!(
        server.into_established().is_none(),
        "{case}: a session after a failure"
    );
}

/// Runs a default exchange with `tamper` applied to message `at`, and asserts `expect`.
fn check(case: &str, at: Msg, tamper: impl FnOnce(&mut Value), expect: Expect) {
    check_with(Setup::default(), case, at, tamper, expect);
}

fn check_with(setup: Setup, case: &str, at: Msg, tamper: impl FnOnce(&mut Value), expect: Expect) {
    let mut pair = Pair::with(setup);
    let outcome = pair.run(at, tamper);
    match expect {
        Expect::Server(error, code) => {
            let Outcome::Server(got, out) = outcome else {
                panic!("{case}: expected the server to refuse with {error:?}, got {outcome:?}")
            };
            assert_eq!(got, error, "{case}");
            assert_eq!(out, refusal(&error, code), "{case}: server output");
            assert_ended(pair.server, case);
        }
        Expect::Client(error) => {
            assert_eq!(outcome, Outcome::Client(error), "{case}");
            assert!(
                pair.client.into_established().is_none(),
                "{case}: client session after a failure"
            );
            // The server never saw a client_auth.
            assert!(pair.server.in_progress(), "{case}");
        }
        Expect::Accepted => {
            assert!(
                matches!(outcome, Outcome::CheckDevice(..)),
                "{case}: {outcome:?}"
            );
            pair.server.device_checked(DeviceStatus::Active).unwrap();
            assert_eq!(pair.drain(), [ServerOutput::Established], "{case}");
            let srv = pair.server.into_established().unwrap();
            let cli = pair.client.into_established().unwrap();
            assert_eq!(srv.session_id, cli.session_id, "{case}");
        }
    }
}

/// Runs [`check`] for every way of breaking every b64u field in `fields` of message `at`.
fn check_bad_b64(at: Msg, fields: &[&str], expect: &Expect) {
    for field in fields {
        for bad in BadB64::ALL {
            let case = format!("{at:?}.{field}: {bad:?}");
            check(&case, at, |v| bad.apply(v, field), expect.clone());
        }
    }
}

/// Sends frames both ways through an established pair and checks the channel.
fn assert_channel(srv: &mut Established, cli: &mut Established) {
    for i in 0..3 {
        let c2s = format!(r#"{{"type":"ping","rid":{i}}}"#);
        let frame = cli.sealer.seal(c2s.as_bytes()).unwrap();
        assert_eq!(srv.opener.open(&frame).unwrap(), c2s.as_bytes());
        let s2c = format!(r#"{{"type":"pong","rid":{i}}}"#);
        let frame = srv.sealer.seal(s2c.as_bytes()).unwrap();
        assert_eq!(cli.opener.open(&frame).unwrap(), s2c.as_bytes());
    }
    // A tampered frame does not open, and does not advance the counter (H9)…
    let frame = cli.sealer.seal(b"{}").unwrap();
    let mut bad = frame.clone();
    bad[0] ^= 1;
    assert!(srv.opener.open(&bad).is_err());
    // …a frame never opens in its own direction (the keys differ)…
    assert!(cli.opener.open(&frame).is_err());
    assert_eq!(srv.opener.open(&frame).unwrap(), b"{}");
    // …and a replay does not open either.
    assert!(srv.opener.open(&frame).is_err());
}

// ---------------------------------------------------------------------------------
// Happy path
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// client_hello
// ---------------------------------------------------------------------------------

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

/// H1: every Wycheproof X25519 public key that gives an all-zero shared secret.
fn low_order_x25519_vectors() -> Vec<wycheproof::xdh::Test> {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    set.test_groups
        .into_iter()
        .flat_map(|g| g.tests)
        .filter(|t| {
            let zero = t.shared_secret.iter().all(|&b| b == 0);
            let flagged = t.flags.contains(&TestFlag::LowOrderPublic)
                || t.flags.contains(&TestFlag::ZeroSharedSecret);
            !t.result.must_fail() && (zero || flagged)
        })
        .collect()
}

fn array32(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().expect("32 bytes")
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

// ---------------------------------------------------------------------------------
// server_hello (seen by the client)
// ---------------------------------------------------------------------------------

#[test]
fn server_hello_fields() {
    use Expect::*;
    use HandshakeError::*;
    #[rustfmt::skip]
    let cases: &[(&str, Tamper, Expect)] = &[
        ("unchanged, re-serialised",      |_| {},                                    Accepted),
        ("unknown fields are ignored",    |v| v["ext"] = json!([1]),                 Accepted),
        ("type: client_hello",            |v| v["type"] = json!("client_hello"),     Client(Unexpected)),
        ("type: a number",                |v| v["type"] = json!(2),                  Client(Malformed)),
        ("v: 2",                          |v| v["v"] = json!(2),                     Client(UnsupportedVersion)),
        ("v: \"1\", a string",            |v| v["v"] = json!("1"),                   Client(Malformed)),
        ("eph: another valid key",        |v| v["eph"] = b64(&x25519_public(7)),     Client(ServerSignature)),
        ("eph: top bit set",              |v| edit_bytes(v, "eph", |b| b[31] |= 0x80), Client(ServerSignature)),
        ("nonce: one bit flipped",        |v| flip(v, "nonce", 0),                   Client(ServerSignature)),
        ("server_key: another valid key", |v| v["server_key"] = b64(&pk(USER2)),     Client(ServerKeyMismatch)),
        ("server_key: small-order",       |v| v["server_key"] = b64(&identity_point()), Client(ServerKeyMismatch)),
        ("sig: a bit of R flipped",       |v| flip(v, "sig", 0),                     Client(ServerSignature)),
        ("sig: a bit of S flipped",       |v| flip(v, "sig", 32),                    Client(ServerSignature)),
        ("sig: S + L (malleated)",        |v| edit_bytes(v, "sig", |b| malleate(b)), Client(ServerSignature)),
        ("sig: all zero",                 |v| v["sig"] = b64(&[0; 64]),              Client(ServerSignature)),
    ];
    for (case, tamper, expect) in cases {
        check(case, Msg::ServerHello, tamper, expect.clone());
    }
    for field in ["type", "v"] {
        check(
            &format!("{field}: missing"),
            Msg::ServerHello,
            |v| remove(v, field),
            Client(Malformed),
        );
    }
    check_bad_b64(
        Msg::ServerHello,
        &["eph", "nonce", "server_key", "sig"],
        &Client(Malformed),
    );
}

#[test]
fn server_hello_with_trust_on_first_use() {
    let first_use = || Setup {
        pin: ServerPin::FirstUse,
        ..Setup::default()
    };
    let server_keys = [("another valid key", pk(USER2))]
        .into_iter()
        .chain(WEAK_KEYS.map(|weak| ("a small-order key", weak)));
    for (case, server_key) in server_keys {
        check_with(
            first_use(),
            &format!("server_key: {case}"),
            Msg::ServerHello,
            |v| v["server_key"] = b64(&server_key),
            Expect::Client(HandshakeError::ServerSignature),
        );
    }
}

/// A man in the middle re-signs the server_hello with its own key. A pinned client
/// refuses it; a trust-on-first-use client accepts it, but its `client_auth` covers
/// the key it saw, so the real server refuses (no unknown-key share, H6).
#[test]
fn server_hello_re_signed_by_another_key() {
    for (pin, expect) in [
        (
            ServerPin::Key(pk(SERVER)),
            Outcome::Client(HandshakeError::ServerKeyMismatch),
        ),
        (
            ServerPin::FirstUse,
            Outcome::Server(
                HandshakeError::AuthFailed(AuthFailure::Signature),
                refusal(&HandshakeError::AuthFailed(AuthFailure::Signature), 4002),
            ),
        ),
    ] {
        let mut pair = Pair::with(Setup {
            pin,
            ..Setup::default()
        });
        let client_hello = pair.client_hello.clone();
        let outcome = pair.run(Msg::ServerHello, |v| {
            let sh = ServerHello::parse(&v.to_string()).unwrap();
            *v = serde_json::from_str(&signed_server_hello(
                &client_hello,
                sh.eph,
                sh.nonce,
                &key(USER2),
            ))
            .unwrap();
        });
        assert_eq!(outcome, expect, "{pin:?}");
    }
}

#[test]
fn low_order_server_ephemeral_is_bad_key() {
    // The same construction with an honest key succeeds, so the failures below are
    // about the key alone.
    let mut pair = Pair::new();
    let sh = signed_server_hello(&pair.client_hello, x25519_public(9), [7; 32], &key(SERVER));
    assert!(pair.client.handle_text(&sh).is_ok());

    let vectors = low_order_x25519_vectors();
    assert!(!vectors.is_empty());
    for t in vectors {
        let mut pair = Pair::new();
        let sh = signed_server_hello(
            &pair.client_hello,
            array32(&t.public_key),
            [7; 32],
            &key(SERVER),
        );
        assert_eq!(
            pair.client.handle_text(&sh),
            Err(HandshakeError::BadKey),
            "tcId {}",
            t.tc_id
        );
        assert!(pair.client.into_established().is_none());
    }
}

#[test]
fn server_error_frame_is_refused() {
    let cases = [
        (
            r#"{"type":"error","code":"auth_failed","message":"authentication failed"}"#,
            "auth_failed",
        ),
        (UNSUPPORTED_VERSION_FRAME, "unsupported_version"),
        (r#"{"type":"error","code":"bad_key"}"#, "bad_key"),
        (r#"{"type":"error"}"#, "error"),
    ];
    for (frame, code) in cases {
        let mut pair = Pair::new();
        assert_eq!(
            pair.client.handle_text(frame),
            Err(HandshakeError::Refused(code.into())),
            "{frame}"
        );
        // Closed for good.
        let sh = signed_server_hello(&pair.client_hello, x25519_public(9), [7; 32], &key(SERVER));
        assert_eq!(
            pair.client.handle_text(&sh),
            Err(HandshakeError::Unexpected)
        );
    }

    // End to end: the server's own refusal, read by the client.
    let mut pair = Pair::new();
    let hello = tampered(&pair.client.client_hello().unwrap(), |v| v["v"] = json!(2));
    let (_, out) = pair.server_text(&hello);
    let ServerOutput::SendText(frame) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        pair.client.handle_text(frame),
        Err(HandshakeError::Refused("unsupported_version".into()))
    );
}

// ---------------------------------------------------------------------------------
// client_auth
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Certificates and identity keys
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Device lookup
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Replay, reflection and cross-protocol signatures
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Timeout
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Error mapping
// ---------------------------------------------------------------------------------

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
