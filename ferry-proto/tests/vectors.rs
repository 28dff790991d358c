//! Reproduces `tests/data/protocol-vectors.json` byte for byte: keys, certificate,
//! every handshake intermediate, the sealed frames, and the revoke and REST
//! signatures — both from the primitive functions and through the two state machines.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ferry_proto::b64u;
use ferry_proto::handshake::crypto::{self, HandshakeSecret};
use ferry_proto::handshake::wire::{ClientAuth, ServerHello};
use ferry_proto::handshake::{
    ClientEphemeral, ClientHandshake, DeviceCredentials, DeviceStatus, ServerEphemeral,
    ServerHandshake, ServerOutput, ServerPin,
};
use ferry_proto::keys::{self, DeviceCertificate};
use ferry_proto::seal::{Opener, Sealer, nonce_for};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/protocol-vectors.json")).unwrap()
}

fn b32(v: &Value) -> [u8; 32] {
    b64u::decode_array::<32>(v.as_str().unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    b64u::decode(v.as_str().unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

struct Fixture {
    v: Value,
    server: SigningKey,
    user: SigningKey,
    device: SigningKey,
    cert: DeviceCertificate,
}

fn fixture() -> Fixture {
    let v = vectors();
    let i = &v["inputs"];
    let server = SigningKey::from_bytes(&b32(&i["server_seed"]));
    let user = SigningKey::from_bytes(&b32(&i["user_seed"]));
    let device = SigningKey::from_bytes(&b32(&i["device_seed"]));
    let cert = DeviceCertificate::issue(
        &user,
        device.verifying_key().as_bytes(),
        i["cert_issued_at"].as_u64().unwrap(),
        i["cert_expires_at"].as_u64().unwrap(),
    );
    Fixture {
        v,
        server,
        user,
        device,
        cert,
    }
}

#[test]
fn keys_and_certificate() {
    let f = fixture();
    let k = &f.v["keys"];
    assert_eq!(
        b64u::encode(f.server.verifying_key().as_bytes()),
        s(&k["server_key"])
    );
    assert_eq!(
        b64u::encode(f.user.verifying_key().as_bytes()),
        s(&k["user_key"])
    );
    assert_eq!(
        b64u::encode(f.device.verifying_key().as_bytes()),
        s(&k["device_key"])
    );
    let i = &f.v["inputs"];
    let c_eph = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b32(
        &i["client_eph_secret"],
    )));
    let s_eph = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b32(
        &i["server_eph_secret"],
    )));
    assert_eq!(b64u::encode(c_eph.as_bytes()), s(&k["client_eph"]));
    assert_eq!(b64u::encode(s_eph.as_bytes()), s(&k["server_eph"]));

    let c = &f.v["cert"];
    let msg = keys::cert_message(
        f.user.verifying_key().as_bytes(),
        f.device.verifying_key().as_bytes(),
        c["issued_at"].as_u64().unwrap(),
        c["expires_at"].as_u64().unwrap(),
    );
    assert_eq!(msg, bytes(&c["message"]));
    assert_eq!(b64u::encode(&f.cert.sig), s(&c["sig"]));
    f.cert
        .verify_signature(&f.user.verifying_key(), f.device.verifying_key().as_bytes())
        .unwrap();
}

#[test]
fn handshake_intermediates() {
    let f = fixture();
    let i = &f.v["inputs"];
    let k = &f.v["keys"];
    let h = &f.v["handshake"];
    let s_secret = x25519_dalek::StaticSecret::from(b32(&i["server_eph_secret"]));
    let dh = crypto::x25519(&s_secret, &b32(&k["client_eph"])).unwrap();
    assert_eq!(b64u::encode(&dh), s(&h["dh"]));
    let th1 = crypto::th1(
        &b32(&k["client_eph"]),
        &b32(&i["client_nonce"]),
        &b32(&k["server_eph"]),
        &b32(&i["server_nonce"]),
        &b32(&k["server_key"]),
    );
    assert_eq!(b64u::encode(&th1), s(&h["th1"]));
    let server_sig = keys::sign(&f.server, &crypto::server_sig_message(&th1));
    assert_eq!(b64u::encode(&server_sig), s(&h["server_sig"]));
    assert_eq!(
        b64u::encode(&HandshakeSecret::prk_bytes(&th1, &dh)),
        s(&h["prk"])
    );
    let hs = HandshakeSecret::derive(&th1, &dh);
    assert_eq!(b64u::encode(hs.k_hs()), s(&h["k_hs"]));
    let th2 = crypto::th2(
        &th1,
        f.user.verifying_key().as_bytes(),
        f.device.verifying_key().as_bytes(),
        f.cert.issued_at,
        f.cert.expires_at,
        &f.cert.sig,
    );
    assert_eq!(b64u::encode(&th2), s(&h["th2"]));
    let client_sig = keys::sign(&f.device, &crypto::client_sig_message(&th2));
    assert_eq!(b64u::encode(&client_sig), s(&h["client_sig"]));
    assert_eq!(b64u::encode(&hs.client_mac(&th2)), s(&h["client_mac"]));
    let sk = hs.session_keys(&th2);
    assert_eq!(b64u::encode(&sk.k_c2s), s(&h["k_c2s"]));
    assert_eq!(b64u::encode(&sk.k_s2c), s(&h["k_s2c"]));
    assert_eq!(b64u::encode(&sk.session_id), s(&h["session_id"]));
}

#[test]
fn sealed_frames() {
    let v = vectors();
    let h = &v["handshake"];
    for (dir, key) in [("c2s", "k_c2s"), ("s2c", "k_s2c")] {
        let key = b32(&h[key]);
        let mut sealer = Sealer::new(&key);
        let mut opener = Opener::new(&key);
        for frame in v["sealed"][dir].as_array().unwrap() {
            let counter = frame["counter"].as_u64().unwrap();
            assert_eq!(sealer.counter(), counter);
            assert_eq!(nonce_for(counter).to_vec(), bytes(&frame["nonce"]));
            let sealed = sealer.seal(s(&frame["plaintext"]).as_bytes()).unwrap();
            assert_eq!(
                b64u::encode(&sealed),
                s(&frame["frame"]),
                "{dir} frame {counter}"
            );
            assert_eq!(
                opener.open(&sealed).unwrap(),
                s(&frame["plaintext"]).as_bytes()
            );
        }
    }
}

#[test]
fn revoke_and_rest_signatures() {
    let f = fixture();
    let r = &f.v["revoke"];
    let device = b32(&r["device_key"]);
    let ts = r["ts"].as_u64().unwrap();
    let sig = keys::sign_revocation(&f.user, &device, ts);
    assert_eq!(b64u::encode(&sig), s(&r["sig"]));
    keys::verify_revocation(&f.user.verifying_key(), &device, ts, &sig).unwrap();
    assert!(keys::verify_revocation(&f.user.verifying_key(), &device, ts + 1, &sig).is_err());

    let rest = &f.v["rest"];
    let challenge = b32(&rest["challenge"]);
    let server_key = f.server.verifying_key().to_bytes();
    let sig = keys::sign_rest_challenge(&f.device, &challenge, &server_key);
    assert_eq!(b64u::encode(&sig), s(&rest["sig"]));
    keys::verify_rest_challenge(&f.device.verifying_key(), &challenge, &server_key, &sig).unwrap();
}

/// The same values, produced by driving both state machines against each other.
#[test]
fn state_machines_reproduce_the_vectors() {
    let f = fixture();
    let i = &f.v["inputs"];
    let h = &f.v["handshake"];
    let now = Instant::now();
    let unix = i["cert_issued_at"].as_u64().unwrap();
    let mut server = ServerHandshake::new(
        f.server.clone(),
        ServerEphemeral {
            secret: b32(&i["server_eph_secret"]),
            nonce: b32(&i["server_nonce"]),
        },
        now,
        Duration::from_secs(10),
    );
    let creds = DeviceCredentials {
        user: f.user.verifying_key().to_bytes(),
        device_key: f.device.clone(),
        cert: f.cert,
    };
    let mut client = ClientHandshake::new(
        creds,
        ServerPin::Key(f.server.verifying_key().to_bytes()),
        ClientEphemeral {
            secret: b32(&i["client_eph_secret"]),
            nonce: b32(&i["client_nonce"]),
        },
    );
    let hello = client.client_hello().unwrap();
    assert_eq!(
        hello,
        format!(
            r#"{{"type":"client_hello","v":1,"eph":"{}","nonce":"{}"}}"#,
            s(&f.v["keys"]["client_eph"]),
            s(&i["client_nonce"])
        )
    );
    server.handle_text(&hello, unix).unwrap();
    let Some(ServerOutput::SendText(server_hello)) = server.poll_output() else {
        panic!("expected server_hello")
    };
    let sh = ServerHello::parse(&server_hello).unwrap();
    assert_eq!(b64u::encode(&sh.sig), s(&h["server_sig"]));
    let auth = client.handle_text(&server_hello).unwrap();
    let ca = ClientAuth::parse(&auth).unwrap();
    assert_eq!(b64u::encode(&ca.sig), s(&h["client_sig"]));
    assert_eq!(b64u::encode(&ca.mac), s(&h["client_mac"]));
    server.handle_text(&auth, unix).unwrap();
    assert!(matches!(
        server.poll_output(),
        Some(ServerOutput::CheckDevice { .. })
    ));
    server.device_checked(DeviceStatus::Active).unwrap();
    assert_eq!(server.poll_output(), Some(ServerOutput::Established));
    let mut srv = server.into_established().unwrap();
    let mut cli = client.into_established().unwrap();
    assert_eq!(srv.session_id, s(&h["session_id"]));
    assert_eq!(cli.session_id, s(&h["session_id"]));
    for frame in f.v["sealed"]["c2s"].as_array().unwrap() {
        let sealed = cli.sealer.seal(s(&frame["plaintext"]).as_bytes()).unwrap();
        assert_eq!(b64u::encode(&sealed), s(&frame["frame"]));
        srv.opener.open(&sealed).unwrap();
    }
    for frame in f.v["sealed"]["s2c"].as_array().unwrap() {
        let sealed = srv.sealer.seal(s(&frame["plaintext"]).as_bytes()).unwrap();
        assert_eq!(b64u::encode(&sealed), s(&frame["frame"]));
        cli.opener.open(&sealed).unwrap();
    }
}
