//! The server side of one full handshake against the sum of the raw crypto
//! operations it is made of (see `docs/benchmarks.md`).
//!
//! All benches live in one group, `handshake`:
//!
//! - `server_handshake`: `ServerHandshake::new` → `handle_text(client_hello)` →
//!   drain → `handle_text(client_auth)` → drain → `device_checked(Active)` → drain
//!   → `into_established`, i.e. everything the relay's handshake task asks of
//!   `ferry_proto` for one connection.
//! - `raw_*`: each cryptographic primitive the server side performs, alone.
//! - `raw_sum`: all of them back to back, with the multiplicities of one handshake
//!   (two key decompressions, two strict verifications).
//! - `first_sight_prime_order`: `keys::require_prime_order` on one key (`[ℓ]A = 0`,
//!   a constant-time scalar multiplication). Not part of the handshake: the relay
//!   applies it to the user and device keys once, when it first registers a device.
//!
//! # How `server_handshake` gets valid inputs every iteration
//!
//! The transcript hashes the server's ephemeral key and nonce, so a `client_auth`
//! is only valid for the server instance that produced the `server_hello` it
//! answers. The setup of every iteration (not measured) therefore:
//!
//! 1. draws the server's ephemeral secret and nonce from a fast deterministic RNG;
//! 2. builds a *twin* `ServerHandshake` with those exact bytes (and the same
//!    identity key), and a client with its own fresh ephemeral;
//! 3. runs client_hello → twin → server_hello → client → client_auth.
//!
//! The measured routine then builds a second `ServerHandshake` from the same
//! ephemeral bytes. The state machine is deterministic in its inputs, so it
//! produces the same `server_hello` as the twin (dropped unsent) and accepts the
//! client's `client_auth`: exactly the server's work for one handshake, with the
//! client's work and the twin's left out of the measurement. A check before the
//! benches run asserts that the measured server ends with the client's session id.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use ferry_proto::handshake::crypto::{self, HandshakeSecret};
use ferry_proto::handshake::{
    ClientEphemeral, ClientHandshake, DeviceCredentials, DeviceStatus, Established,
    ServerEphemeral, ServerHandshake, ServerOutput, ServerPin,
};
use ferry_proto::keys::{self, DeviceCertificate};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

/// Wall clock handed to the certificate time rules.
const UNIX: u64 = 1_767_225_600;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Fixture {
    server: SigningKey,
    creds: DeviceCredentials,
    now: Instant,
}

fn fixture() -> Fixture {
    let server = SigningKey::from_bytes(&[1; 32]);
    let user = SigningKey::from_bytes(&[2; 32]);
    let device = SigningKey::from_bytes(&[3; 32]);
    let cert = DeviceCertificate::issue(&user, device.verifying_key().as_bytes(), UNIX - 60, 0);
    Fixture {
        server,
        creds: DeviceCredentials {
            user: user.verifying_key().to_bytes(),
            device_key: device,
            cert,
        },
        now: Instant::now(),
    }
}

/// One iteration's inputs for the measured server.
struct Prepared {
    key: SigningKey,
    eph: ServerEphemeral,
    hello: String,
    auth: String,
}

/// Drives a client against a twin server (same identity key, same ephemeral
/// bytes) up to `client_auth`; returns the inputs and the client's session.
fn prepare(f: &Fixture, rng: &mut StdRng) -> (Prepared, Established) {
    let eph = ServerEphemeral::random(rng);
    let twin_eph = ServerEphemeral {
        secret: eph.secret,
        nonce: eph.nonce,
    };
    let mut twin = ServerHandshake::new(f.server.clone(), twin_eph, f.now, TIMEOUT);
    let mut client = ClientHandshake::new(
        f.creds.clone(),
        ServerPin::Key(f.server.verifying_key().to_bytes()),
        ClientEphemeral::random(rng),
    );
    let hello = client.client_hello().expect("fresh client has a hello");
    twin.handle_text(&hello, UNIX).expect("twin accepts hello");
    let Some(ServerOutput::SendText(server_hello)) = twin.poll_output() else {
        panic!("twin did not answer with server_hello");
    };
    let auth = client
        .handle_text(&server_hello)
        .expect("client accepts server_hello");
    let session = client.into_established().expect("client established");
    let prepared = Prepared {
        key: f.server.clone(),
        eph,
        hello,
        auth,
    };
    (prepared, session)
}

/// The measured part: the server side of one handshake.
#[inline(never)] // a symbol for callgrind `--toggle-collect`
fn server_side(f: &Fixture, p: Prepared) -> Established {
    let mut server = ServerHandshake::new(p.key, p.eph, f.now, TIMEOUT);
    server
        .handle_text(black_box(&p.hello), UNIX)
        .expect("hello accepted");
    while let Some(out) = server.poll_output() {
        black_box(out);
    }
    server
        .handle_text(black_box(&p.auth), UNIX)
        .expect("auth accepted");
    while let Some(out) = server.poll_output() {
        black_box(out);
    }
    server
        .device_checked(DeviceStatus::Active)
        .expect("device active");
    while let Some(out) = server.poll_output() {
        black_box(out);
    }
    server.into_established().expect("established")
}

/// Precomputed, valid inputs of every raw operation, shaped as in a handshake.
struct Raw {
    eph_secret: StaticSecret,
    peer_eph: XPublic,
    server_key: SigningKey,
    /// `"ferry-hs/v1 server" || 0x00 || TH1`.
    server_sig_msg: Vec<u8>,
    user: [u8; 32],
    device: [u8; 32],
    user_vk: VerifyingKey,
    device_vk: VerifyingKey,
    cert_msg: Vec<u8>,
    cert_sig: Signature,
    /// `"ferry-hs/v1 client" || 0x00 || TH2`.
    client_sig_msg: Vec<u8>,
    client_sig: Signature,
    /// The bytes hashed into TH1 and TH2.
    th1_input: Vec<u8>,
    th2_input: Vec<u8>,
    th1: [u8; 32],
    th2: [u8; 32],
    dh: [u8; 32],
    mac: [u8; 32],
}

fn raw_inputs(f: &Fixture) -> Raw {
    let eph_secret = StaticSecret::from([4; 32]);
    let peer_secret = StaticSecret::from([5; 32]);
    let peer_eph = XPublic::from(&peer_secret);
    let eph_s = XPublic::from(&eph_secret).to_bytes();
    let server_pk = f.server.verifying_key().to_bytes();
    let (nonce_c, nonce_s) = ([6u8; 32], [7u8; 32]);

    let mut th1_input = crypto::HS_LABEL.to_vec();
    th1_input.push(0);
    for part in [peer_eph.as_bytes(), &nonce_c, &eph_s, &nonce_s, &server_pk] {
        th1_input.extend_from_slice(part);
    }
    let th1 = crypto::th1(peer_eph.as_bytes(), &nonce_c, &eph_s, &nonce_s, &server_pk);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&th1_input)), th1);

    let user = f.creds.user;
    let device_key = &f.creds.device_key;
    let device = device_key.verifying_key().to_bytes();
    let cert = f.creds.cert;
    let mut th2_input = th1.to_vec();
    th2_input.extend_from_slice(&user);
    th2_input.extend_from_slice(&device);
    th2_input.extend_from_slice(&cert.issued_at.to_be_bytes());
    th2_input.extend_from_slice(&cert.expires_at.to_be_bytes());
    th2_input.extend_from_slice(&cert.sig);
    let th2 = crypto::th2(
        &th1,
        &user,
        &device,
        cert.issued_at,
        cert.expires_at,
        &cert.sig,
    );
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&th2_input)), th2);

    let dh = crypto::x25519(&eph_secret, peer_eph.as_bytes()).expect("contributory");
    let client_sig_msg = crypto::client_sig_message(&th2);
    let client_sig = device_key.sign(&client_sig_msg);
    let mac = HandshakeSecret::derive(&th1, &dh).client_mac(&th2);
    Raw {
        eph_secret,
        peer_eph,
        server_key: f.server.clone(),
        server_sig_msg: crypto::server_sig_message(&th1),
        user,
        device,
        user_vk: keys::parse_identity_key(&user).expect("user key"),
        device_vk: keys::parse_identity_key(&device).expect("device key"),
        cert_msg: keys::cert_message(&user, &device, cert.issued_at, cert.expires_at),
        cert_sig: Signature::from_bytes(&cert.sig),
        client_sig_msg,
        client_sig,
        th1_input,
        th2_input,
        th1,
        th2,
        dh,
        mac,
    }
}

fn x25519_public(r: &Raw) -> [u8; 32] {
    XPublic::from(black_box(&r.eph_secret)).to_bytes()
}

fn x25519_dh(r: &Raw) -> Option<[u8; 32]> {
    let shared = black_box(&r.eph_secret).diffie_hellman(black_box(&r.peer_eph));
    shared.was_contributory().then(|| shared.to_bytes())
}

fn ed25519_sign(r: &Raw) -> Signature {
    black_box(&r.server_key).sign(black_box(&r.server_sig_msg))
}

/// `VerifyingKey::from_bytes` (decompression) + `is_weak`.
fn parse_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    let key = VerifyingKey::from_bytes(black_box(bytes)).ok()?;
    (!key.is_weak()).then_some(key)
}

/// The first-sight check of an identity key (not done during the handshake).
fn prime_order(key: &VerifyingKey) -> bool {
    keys::require_prime_order(black_box(key)).is_ok()
}

fn verify_cert(r: &Raw) -> bool {
    black_box(&r.user_vk)
        .verify_strict(black_box(&r.cert_msg), black_box(&r.cert_sig))
        .is_ok()
}

fn verify_client_sig(r: &Raw) -> bool {
    black_box(&r.device_vk)
        .verify_strict(black_box(&r.client_sig_msg), black_box(&r.client_sig))
        .is_ok()
}

fn sha256(input: &[u8]) -> [u8; 32] {
    Sha256::digest(black_box(input)).into()
}

/// HKDF-Extract + Expand(confirm), then Expand ×3 (c2s, s2c, session id).
fn hkdf(r: &Raw) -> HandshakeSecret {
    let hs = HandshakeSecret::derive(black_box(&r.th1), black_box(&r.dh));
    black_box(hs.session_keys(black_box(&r.th2)));
    hs
}

fn hmac_verify(r: &Raw, hs: &HandshakeSecret) -> bool {
    hs.verify_client_mac(black_box(&r.th2), black_box(&r.mac))
}

/// Every raw operation of the server side, with one handshake's multiplicities.
#[inline(never)] // a symbol for callgrind `--toggle-collect`
fn raw_sum(r: &Raw) {
    black_box(x25519_public(r));
    black_box(x25519_dh(r));
    black_box(sha256(&r.th1_input));
    black_box(ed25519_sign(r));
    black_box(parse_key(&r.user));
    black_box(parse_key(&r.device));
    black_box(verify_cert(r));
    black_box(sha256(&r.th2_input));
    black_box(verify_client_sig(r));
    let hs = hkdf(r);
    black_box(hmac_verify(r, &hs));
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let mut rng = StdRng::seed_from_u64(0x00fe_7272);

    // The twin construction must yield a server that completes the handshake with
    // the client's keys; check it once, outside any measurement.
    let (p, client_session) = prepare(&f, &mut rng);
    assert_eq!(server_side(&f, p).session_id, client_session.session_id);

    let r = raw_inputs(&f);
    assert!(x25519_dh(&r).is_some());
    assert!(parse_key(&r.user).is_some() && parse_key(&r.device).is_some());
    assert!(prime_order(&r.user_vk) && prime_order(&r.device_vk));
    assert!(verify_cert(&r) && verify_client_sig(&r));
    assert!(hmac_verify(&r, &hkdf(&r)));

    let mut g = c.benchmark_group("handshake");
    g.bench_function("server_handshake", |b| {
        b.iter_batched(
            || prepare(&f, &mut rng).0,
            |p| server_side(&f, p),
            BatchSize::SmallInput,
        );
    });
    // Right after `server_handshake`, so that the two are measured under the same
    // load on a shared machine.
    g.bench_function("raw_sum", |b| b.iter(|| raw_sum(&r)));
    g.bench_function("raw_x25519_public", |b| b.iter(|| x25519_public(&r)));
    g.bench_function("raw_x25519_dh", |b| b.iter(|| x25519_dh(&r)));
    g.bench_function("raw_ed25519_sign", |b| b.iter(|| ed25519_sign(&r)));
    g.bench_function("raw_ed25519_verify_strict", |b| b.iter(|| verify_cert(&r)));
    g.bench_function("raw_ed25519_parse_key", |b| b.iter(|| parse_key(&r.user)));
    g.bench_function("raw_sha256_th1", |b| b.iter(|| sha256(&r.th1_input)));
    g.bench_function("raw_sha256_th2", |b| b.iter(|| sha256(&r.th2_input)));
    g.bench_function("raw_hkdf_extract_expand4", |b| b.iter(|| hkdf(&r)));
    let hs = hkdf(&r);
    g.bench_function("raw_hmac_verify", |b| b.iter(|| hmac_verify(&r, &hs)));
    g.bench_function("first_sight_prime_order", |b| {
        b.iter(|| prime_order(&r.user_vk))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
