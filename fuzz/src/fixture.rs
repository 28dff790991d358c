//! The protocol vectors, decoded once, and the valid handshake frames they give.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ferry_proto::b64u;
use ferry_proto::handshake::{
    ClientEphemeral, ClientHandshake, DeviceCredentials, DeviceStatus, ServerEphemeral,
    ServerHandshake, ServerOutput, ServerPin,
};
use ferry_proto::keys::DeviceCertificate;
use ferry_proto::seal::Opener;
use serde_json::Value;

/// The protocol vectors, shared with `ferry-proto`'s own vector tests.
pub const VECTORS_JSON: &str = include_str!("../../ferry-proto/tests/data/protocol-vectors.json");

/// Handshake timeout given to every [`ServerHandshake`] the targets build; no target
/// ever reaches it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3600);

/// One sealed client-to-server frame of the vectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedFrame {
    /// `ciphertext || tag`.
    pub frame: Vec<u8>,
    /// What it opens to.
    pub plaintext: Vec<u8>,
}

/// Everything the targets need from the protocol vectors.
#[derive(Debug)]
pub struct Fixture {
    /// Seed of the server identity key.
    pub server_seed: [u8; 32],
    /// The server identity public key.
    pub server_key: [u8; 32],
    /// Seed of the user key.
    pub user_seed: [u8; 32],
    /// The user public key.
    pub user_key: [u8; 32],
    /// Seed of the device key.
    pub device_seed: [u8; 32],
    /// The device public key.
    pub device_key: [u8; 32],
    /// The device certificate the user key issued.
    pub cert: DeviceCertificate,
    /// The wall clock (Unix seconds) the handshake runs at: the certificate's issue time.
    pub now_secs: u64,
    /// The client's X25519 secret and nonce.
    pub client_eph: ([u8; 32], [u8; 32]),
    /// The server's X25519 secret and nonce.
    pub server_eph: ([u8; 32], [u8; 32]),
    /// The client-to-server session key.
    pub k_c2s: [u8; 32],
    /// The sealed client-to-server frames, in counter order from 0.
    pub c2s: Vec<SealedFrame>,
    /// The revoked device, the revocation's time (Unix ms) and its signature.
    pub revoke: ([u8; 32], u64, [u8; 64]),
    /// The REST challenge and the device's signature over it.
    pub rest: ([u8; 32], [u8; 64]),
    /// The client's `client_hello` text frame.
    pub client_hello: String,
    /// The server's `server_hello` reply to it.
    pub server_hello: String,
    /// The client's `client_auth` reply to that.
    pub client_auth: String,
}

/// The fixture, decoded and checked on first use.
///
/// # Panics
///
/// When the vectors do not decode, or a handshake driven by them does not establish
/// a session whose opener opens the vectors' first client frame.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::from_vectors)
}

fn b32(v: &Value) -> [u8; 32] {
    b64u::decode_array(v.as_str().expect("a b64u string")).expect("32 bytes of b64u")
}

fn b64(v: &Value) -> [u8; 64] {
    b64u::decode_array(v.as_str().expect("a b64u string")).expect("64 bytes of b64u")
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().expect("an unsigned integer")
}

impl Fixture {
    fn from_vectors() -> Self {
        let v: Value = serde_json::from_str(VECTORS_JSON).expect("the vectors are JSON");
        let (i, k, h) = (&v["inputs"], &v["keys"], &v["handshake"]);
        let c2s = v["sealed"]["c2s"]
            .as_array()
            .expect("sealed.c2s is a list")
            .iter()
            .map(|f| SealedFrame {
                frame: b64u::decode(f["frame"].as_str().expect("a frame")).expect("b64u"),
                plaintext: f["plaintext"]
                    .as_str()
                    .expect("a plaintext")
                    .as_bytes()
                    .to_vec(),
            })
            .collect();
        let mut fixture = Self {
            server_seed: b32(&i["server_seed"]),
            server_key: b32(&k["server_key"]),
            user_seed: b32(&i["user_seed"]),
            user_key: b32(&k["user_key"]),
            device_seed: b32(&i["device_seed"]),
            device_key: b32(&k["device_key"]),
            cert: DeviceCertificate {
                issued_at: u64_of(&v["cert"]["issued_at"]),
                expires_at: u64_of(&v["cert"]["expires_at"]),
                sig: b64(&v["cert"]["sig"]),
            },
            now_secs: u64_of(&i["cert_issued_at"]),
            client_eph: (b32(&i["client_eph_secret"]), b32(&i["client_nonce"])),
            server_eph: (b32(&i["server_eph_secret"]), b32(&i["server_nonce"])),
            k_c2s: b32(&h["k_c2s"]),
            c2s,
            revoke: (
                b32(&v["revoke"]["device_key"]),
                u64_of(&v["revoke"]["ts"]),
                b64(&v["revoke"]["sig"]),
            ),
            rest: (b32(&v["rest"]["challenge"]), b64(&v["rest"]["sig"])),
            client_hello: String::new(),
            server_hello: String::new(),
            client_auth: String::new(),
        };
        fixture.run_handshake();
        fixture
    }

    /// Drives both state machines through the vectors' handshake, keeps its three
    /// text frames, and checks that the session it establishes is the vectors'.
    fn run_handshake(&mut self) {
        let mut client = self.client(ServerPin::Key(self.server_key));
        let mut server = self.server();
        let hello = client.client_hello().expect("a fresh client has a hello");
        server
            .handle_text(&hello, self.now_secs)
            .expect("the server takes the vectors' hello");
        let Some(ServerOutput::SendText(server_hello)) = server.poll_output() else {
            panic!("the server answers the hello with a text frame");
        };
        let auth = client
            .handle_text(&server_hello)
            .expect("the client takes the server's hello");
        server
            .handle_text(&auth, self.now_secs)
            .expect("the server takes the vectors' client_auth");
        assert!(matches!(
            server.poll_output(),
            Some(ServerOutput::CheckDevice { .. })
        ));
        server
            .device_checked(DeviceStatus::Active)
            .expect("an active device is admitted");
        assert_eq!(server.poll_output(), Some(ServerOutput::Established));
        let mut established = server.into_established().expect("established");
        for (n, f) in self.c2s.iter().enumerate() {
            assert_eq!(
                established.opener.open(&f.frame).as_deref(),
                Ok(f.plaintext.as_slice()),
                "the established session opens c2s frame {n}"
            );
        }
        let mut opener = Opener::new(&self.k_c2s);
        assert_eq!(
            opener.open(&self.c2s[0].frame).as_deref(),
            Ok(self.c2s[0].plaintext.as_slice()),
            "handshake.k_c2s opens c2s frame 0"
        );
        self.client_hello = hello;
        self.server_hello = server_hello;
        self.client_auth = auth;
    }

    /// The device's credentials.
    pub fn credentials(&self) -> DeviceCredentials {
        DeviceCredentials {
            user: self.user_key,
            device_key: SigningKey::from_bytes(&self.device_seed),
            cert: self.cert,
        }
    }

    /// A client handshake with the vectors' credentials and ephemeral values, before
    /// the server's hello.
    pub fn client(&self, pin: ServerPin) -> ClientHandshake {
        ClientHandshake::new(
            self.credentials(),
            pin,
            ClientEphemeral {
                secret: self.client_eph.0,
                nonce: self.client_eph.1,
            },
        )
    }

    /// A server handshake with the vectors' key and ephemeral values, awaiting the
    /// client's hello.
    pub fn server(&self) -> ServerHandshake {
        ServerHandshake::new(
            SigningKey::from_bytes(&self.server_seed),
            ServerEphemeral {
                secret: self.server_eph.0,
                nonce: self.server_eph.1,
            },
            Instant::now(),
            HANDSHAKE_TIMEOUT,
        )
    }

    /// A server handshake that took the vectors' hello and awaits `client_auth`.
    pub fn server_awaiting_auth(&self) -> ServerHandshake {
        let mut server = self.server();
        server
            .handle_text(&self.client_hello, self.now_secs)
            .expect("the server takes the vectors' hello");
        while server.poll_output().is_some() {}
        server
    }

    /// A server handshake that took the vectors' `client_auth` and awaits the device
    /// lookup.
    pub fn server_awaiting_device_check(&self) -> ServerHandshake {
        let mut server = self.server_awaiting_auth();
        server
            .handle_text(&self.client_auth, self.now_secs)
            .expect("the server takes the vectors' client_auth");
        while server.poll_output().is_some() {}
        server
    }
}
