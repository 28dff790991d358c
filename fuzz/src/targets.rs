//! The body of each fuzz target: one function per target, taking libFuzzer's bytes.
//!
//! Where a target needs several values, the first input byte chooses what the rest
//! means (a "mode"); [`crate::seeds`] writes a valid input for every mode.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry::auth::jwt::{JwtKeys, Verified};
use ferry::config::{Config, NON_SETTING_ENV_VARS, ServerKeySource, TEST_ENV_PREFIX};
use ferry::keys::ServerKey;
use ferry::model::{DeviceId, UserId};
use ferry_proto::b64u;
use ferry_proto::handshake::{
    DeviceStatus, HandshakeError, ServerHandshake, ServerOutput, ServerPin,
};
use ferry_proto::keys::{self, DeviceCertificate};
use ferry_proto::message::{
    ClientMessage, ErrorCode, MAX_KEY_LEN, MAX_RID_LEN, MAX_SYNC_LIMIT, Request, Rid,
    ServerMessage, format_uuid, parse_uuid,
};
use ferry_proto::seal::{OpenError, Opener};

use crate::fixture::fixture;

/// The `i`-th byte of `bytes`, or 0 past its end.
fn byte(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}

// ---- sealed frames ----

/// `seal_open`: sealed frames into an [`Opener`] holding the vectors' client-to-server
/// key, as the server's session holds it after the vectors' handshake.
///
/// - Mode even: the rest is a list of frames, each one length byte then that many
///   bytes, opened in order. A frame opens exactly when it is the vectors' frame for
///   the opener's counter; a refused frame leaves the counter where it was.
/// - Mode odd: `[index, pos_hi, pos_lo, mask, cut, extra...]` tampers with the
///   vectors' frame `index` (one byte XOR a non-zero mask, then `cut` bytes off the
///   end, then `extra` appended). Unless that rebuilt the frame exactly, it never
///   opens, and the genuine frame still opens after it.
pub fn seal_open(data: &[u8]) {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut opener = Opener::new(&f.k_c2s);
    if mode % 2 == 0 {
        let mut rest = rest;
        while let Some((&len, tail)) = rest.split_first() {
            let (frame, tail) = tail.split_at(usize::from(len).min(tail.len()));
            rest = tail;
            let before = opener.counter();
            let expected = usize::try_from(before).ok().and_then(|i| f.c2s.get(i));
            match opener.open(frame) {
                Ok(plain) => {
                    let e = expected.expect("a frame opened past the vectors' last counter");
                    assert_eq!(frame, e.frame, "a frame other than the vectors' opened");
                    assert_eq!(plain, e.plaintext);
                    assert_eq!(opener.counter(), before + 1);
                }
                Err(OpenError) => {
                    assert!(
                        expected.is_none_or(|e| e.frame != frame),
                        "the vectors' frame for counter {before} did not open"
                    );
                    assert_eq!(
                        opener.counter(),
                        before,
                        "a refused frame moved the counter"
                    );
                }
            }
        }
    } else {
        let index = usize::from(byte(rest, 0)) % f.c2s.len();
        for earlier in &f.c2s[..index] {
            opener
                .open(&earlier.frame)
                .expect("the earlier vector frames open");
        }
        let genuine = &f.c2s[index];
        let mut frame = genuine.frame.clone();
        let pos = usize::from(u16::from_be_bytes([byte(rest, 1), byte(rest, 2)])) % frame.len();
        frame[pos] ^= byte(rest, 3).max(1);
        let keep = frame.len().saturating_sub(usize::from(byte(rest, 4)));
        frame.truncate(keep);
        frame.extend_from_slice(rest.get(5..).unwrap_or_default());
        let before = opener.counter();
        if frame == genuine.frame {
            assert_eq!(opener.open(&frame), Ok(genuine.plaintext.clone()));
            return;
        }
        assert_eq!(
            opener.open(&frame),
            Err(OpenError),
            "a tampered frame opened"
        );
        assert_eq!(
            opener.counter(),
            before,
            "a refused frame moved the counter"
        );
        assert_eq!(
            opener.open(&genuine.frame),
            Ok(genuine.plaintext.clone()),
            "the genuine frame no longer opens after a refused one"
        );
    }
}

// ---- the handshake ----

/// Drains `server`'s outputs and checks how a step ended: a failed step closes the
/// handshake and its last output is the close with the error's code.
fn settled(server: &mut ServerHandshake, result: &Result<(), HandshakeError>) -> Vec<ServerOutput> {
    let out: Vec<ServerOutput> = std::iter::from_fn(|| server.poll_output()).collect();
    if let Err(e) = result {
        assert!(
            !server.in_progress(),
            "a failed handshake is still in progress"
        );
        assert_eq!(
            out.last(),
            Some(&ServerOutput::Close(e.close_code())),
            "a failed handshake did not close with its error's code"
        );
    }
    out
}

/// `handshake`: a text frame (the input after its mode byte, as UTF-8) into the
/// client or the server state machine at each of its states.
///
/// | mode % 8 | machine and state | a wrong frame |
/// | --- | --- | --- |
/// | 0 | server, awaiting `client_hello` | closes with its code |
/// | 1 | server, awaiting `client_auth` | never admits anyone but the vectors' device |
/// | 2 | server, awaiting the device lookup | is out of order |
/// | 3 | server, established | is out of order |
/// | 4 | server, after a binary frame | is out of order (closed) |
/// | 5 | client pinned to the vectors' server key | never yields any `client_auth` but the vectors' |
/// | 6 | client trusting on first use | yields the vectors' `client_auth` only for the vectors' server |
/// | 7 | client, established | is out of order |
pub fn handshake(data: &[u8]) {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 8 {
        0 => {
            let mut server = f.server();
            let result = server.handle_text(text, f.now_secs);
            let out = settled(&mut server, &result);
            if result.is_ok() {
                assert!(matches!(out.as_slice(), [ServerOutput::SendText(_)]));
                assert!(server.in_progress());
            }
        }
        1 => {
            let mut server = f.server_awaiting_auth();
            let result = server.handle_text(text, f.now_secs);
            let out = settled(&mut server, &result);
            if result.is_err() {
                return;
            }
            let [ServerOutput::CheckDevice { identity, cert }] = out.as_slice() else {
                panic!("an accepted client_auth did not ask for the device lookup: {out:?}");
            };
            assert_eq!(identity.user(), &f.user_key, "a forged user was admitted");
            assert_eq!(
                identity.device(),
                &f.device_key,
                "a forged device was admitted"
            );
            assert_eq!(cert, &f.cert, "a forged certificate was admitted");
            server
                .device_checked(DeviceStatus::Active)
                .expect("an active device is admitted");
            assert_eq!(server.poll_output(), Some(ServerOutput::Established));
            let mut session = server.into_established().expect("established");
            assert_eq!(
                session.opener.open(&f.c2s[0].frame),
                Ok(f.c2s[0].plaintext.clone()),
                "an accepted client_auth gave other session keys"
            );
        }
        2..=4 => {
            let mut server = f.server_awaiting_device_check();
            match mode % 8 {
                3 => {
                    server
                        .device_checked(DeviceStatus::Active)
                        .expect("an active device is admitted");
                    while server.poll_output().is_some() {}
                }
                4 => {
                    server = f.server();
                    let result = server.handle_binary();
                    assert_eq!(result, Err(HandshakeError::Unexpected));
                    settled(&mut server, &result);
                }
                _ => {}
            }
            let result = server.handle_text(text, f.now_secs);
            assert_eq!(result, Err(HandshakeError::Unexpected));
            settled(&mut server, &result);
        }
        5 => {
            let mut client = f.client(ServerPin::Key(f.server_key));
            match client.handle_text(text) {
                Ok(auth) => {
                    assert_eq!(client.server_key(), Some(f.server_key));
                    assert_eq!(auth, f.client_auth, "a forged server_hello was taken");
                    assert!(client.into_established().is_some());
                }
                Err(_) => {
                    assert_eq!(client.handle_text(text), Err(HandshakeError::Unexpected));
                    assert!(client.into_established().is_none());
                }
            }
        }
        6 => {
            let mut client = f.client(ServerPin::FirstUse);
            match client.handle_text(text) {
                Ok(auth) => {
                    let key = client.server_key().expect("an accepted server has a key");
                    assert_eq!(
                        key == f.server_key,
                        auth == f.client_auth,
                        "client_auth does not follow from the server's hello"
                    );
                }
                Err(_) => assert!(client.into_established().is_none()),
            }
        }
        _ => {
            let mut client = f.client(ServerPin::Key(f.server_key));
            client
                .handle_text(&f.server_hello)
                .expect("the client takes the vectors' server_hello");
            assert_eq!(client.handle_text(text), Err(HandshakeError::Unexpected));
        }
    }
}

// ---- in-session messages ----

/// Serializes `message` and reads it back: it must come back equal.
fn round_trip(message: &ServerMessage) {
    let json = message.to_json();
    let back: ServerMessage =
        serde_json::from_slice(&json).expect("a serialized server message reads back");
    assert_eq!(&back, message, "a server message changed through JSON");
}

/// The shape rules [`Request::decode`] promises for what it accepts.
fn check_request(request: &Request) {
    if let Some(Rid::Str(s)) = &request.rid {
        assert!(
            s.chars().count() <= MAX_RID_LEN,
            "an over-long rid was accepted"
        );
    }
    match &request.body {
        ClientMessage::Sync { limit, .. } => {
            assert!(
                (1..=MAX_SYNC_LIMIT).contains(limit),
                "sync limit {limit} accepted"
            );
        }
        ClientMessage::Publish(p) => {
            if let Some(key) = &p.key {
                assert!(
                    (1..=MAX_KEY_LEN).contains(&key.len()),
                    "key length accepted"
                );
            }
            assert!(
                p.base.is_none() || p.key.is_some(),
                "base without key accepted"
            );
            assert!(
                p.to.is_none() || p.ephemeral,
                "to without ephemeral accepted"
            );
            assert!(
                !p.ephemeral || (p.key.is_none() && p.ttl.is_none()),
                "an ephemeral event with key or ttl accepted"
            );
        }
        _ => {}
    }
}

/// `request`: the bytes of an opened frame into the in-session decoders.
///
/// - [`Request::decode`]: what it accepts keeps the documented shape rules; what it
///   refuses becomes an error reply that survives JSON.
/// - `ServerMessage` as the client reads it: what parses survives a round trip.
/// - As text, [`parse_uuid`] and [`b64u::decode`]: what they accept is canonical
///   (formatting the result gives the input back), and the fixed-length decoder
///   agrees with the general one.
pub fn request(data: &[u8]) {
    match Request::decode(data) {
        Ok(request) => check_request(&request),
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::BadRequest | ErrorCode::UnknownType
            ));
            round_trip(&ServerMessage::error(e.rid, e.code, e.message));
        }
    }
    if let Ok(message) = serde_json::from_slice::<ServerMessage>(data) {
        round_trip(&message);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = parse_uuid(text) {
        assert_eq!(format_uuid(&id), text, "a non-canonical UUID was accepted");
    }
    let decoded = b64u::decode(text);
    if let Ok(bytes) = &decoded {
        assert_eq!(b64u::encode(bytes), text, "non-canonical b64u was accepted");
    }
    let fixed = b64u::decode_array::<32>(text);
    match (&decoded, &fixed) {
        (Ok(bytes), Ok(array)) => assert_eq!(bytes.as_slice(), array.as_slice()),
        (Ok(bytes), Err(_)) => assert_ne!(bytes.len(), 32, "decode_array refused 32 bytes"),
        (Err(_), Ok(_)) => panic!("decode_array accepted what decode refused"),
        (Err(_), Err(_)) => {}
    }
}

// ---- configuration ----

/// Every `FERRY_*` variable that names a setting, read from the example file (which
/// holds every setting, and a test keeps equal to the declarations).
fn setting_env_vars() -> &'static HashSet<String> {
    static VARS: OnceLock<HashSet<String>> = OnceLock::new();
    VARS.get_or_init(|| {
        let table: toml::Table = ferry::config::EXAMPLE
            .parse()
            .expect("the example configuration is TOML");
        let mut vars = HashSet::new();
        for (key, value) in &table {
            match value.as_table() {
                Some(section) => vars.extend(
                    section
                        .keys()
                        .map(|k| format!("FERRY_{key}_{k}").to_ascii_uppercase()),
                ),
                None => {
                    vars.insert(format!("FERRY_{key}").to_ascii_uppercase());
                }
            }
        }
        vars
    })
}

/// `config`: TOML text and an environment into [`Config::from_toml`], the loader
/// `ferry serve` uses. The input is the TOML text, a NUL byte, then `NAME=value`
/// lines.
///
/// - An unknown `FERRY_*` variable is refused.
/// - An accepted configuration dumps to TOML ([`Config::to_redacted_toml`]) that
///   parses, and never holds the inline server key in any base64 spelling.
pub fn config(data: &[u8]) {
    let (text, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let env: HashMap<String, String> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let result = Config::from_toml(text, &env);
    let unknown = env.keys().find(|k| {
        k.starts_with("FERRY_")
            && !NON_SETTING_ENV_VARS.contains(&k.as_str())
            && !k.starts_with(TEST_ENV_PREFIX)
            && !setting_env_vars().contains(k.as_str())
    });
    if let Some(name) = unknown {
        assert!(result.is_err(), "the unknown variable {name} was accepted");
    }
    let Ok(config) = result else {
        return;
    };
    let dump = config.to_redacted_toml();
    dump.parse::<toml::Table>()
        .expect("the redacted configuration is TOML");
    if let ServerKeySource::Inline(key) = &config.server_key {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
        let seed = key.signing_key().to_bytes();
        for spelling in [
            b64u::encode(&seed),
            URL_SAFE.encode(seed),
            STANDARD.encode(seed),
            STANDARD_NO_PAD.encode(seed),
        ] {
            assert!(
                !dump.contains(&spelling),
                "the redacted dump holds the server key"
            );
        }
    }
}

// ---- access tokens ----

/// The issuer the token target's keys use.
pub const JWT_ISSUER: &str = "ferry";
/// The lifetime of the token target's keys (a day: longer than any run).
pub const JWT_LIFETIME_SECS: u64 = 86_400;
/// The `jti` of the token the target signs.
pub const JWT_JTI: &str = "ZnV6ei10b2tlbi1pZA";

/// The server's token keys, from the vectors' server seed.
pub fn jwt_keys() -> JwtKeys {
    JwtKeys::new(
        &ServerKey::from_seed(fixture().server_seed),
        JWT_ISSUER,
        JWT_LIFETIME_SECS,
    )
}

struct JwtFixture {
    keys: JwtKeys,
    now: u64,
    token: String,
    verified: Verified,
}

fn jwt_fixture() -> &'static JwtFixture {
    static JWT: OnceLock<JwtFixture> = OnceLock::new();
    JWT.get_or_init(|| {
        let f = fixture();
        let keys = jwt_keys();
        // jsonwebtoken checks `exp` against the system clock, so the token is
        // issued now.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let (user, device) = (UserId(f.user_key), DeviceId(f.device_key));
        let token = keys.sign(&user, &device, now, JWT_JTI);
        let verified = keys.verify(&token, now).expect("a fresh token verifies");
        JwtFixture {
            keys,
            now,
            token,
            verified,
        }
    })
}

/// `jwt`: token strings into [`JwtKeys::verify`] with the server's key, at the time
/// the one genuine token was signed (at start-up).
///
/// - Mode 0: the rest, as UTF-8, is the token.
/// - Mode 1: the rest is `(pos_hi, pos_lo, byte)` triples, each overwriting one byte
///   of the genuine token.
/// - Mode 2: `(cut_hi, cut_lo, tail...)`: the genuine token cut at `cut`, then `tail`.
///
/// A string equal to the genuine token verifies, to its user, device, `jti` and
/// `exp`; any other string never does.
pub fn jwt(data: &[u8]) {
    let j = jwt_fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let mut token = j.token.clone().into_bytes();
            let len = token.len();
            for edit in rest.chunks_exact(3) {
                token[usize::from(u16::from_be_bytes([edit[0], edit[1]])) % len] = edit[2];
            }
            token
        }
        _ => {
            let cut = usize::from(u16::from_be_bytes([byte(rest, 0), byte(rest, 1)]))
                % (j.token.len() + 1);
            let mut token = j.token.as_bytes()[..cut].to_vec();
            token.extend_from_slice(rest.get(2..).unwrap_or_default());
            token
        }
    };
    let Ok(token) = String::from_utf8(bytes) else {
        return;
    };
    let result = j.keys.verify(&token, j.now);
    if token == j.token {
        assert_eq!(
            result,
            Ok(j.verified.clone()),
            "the genuine token did not verify"
        );
    } else {
        assert!(
            result.is_err(),
            "a token other than the one signed verified: {token:?}"
        );
    }
}

// ---- certificates and signed statements ----

/// The length of a `keys` input after its mode byte.
pub const KEYS_INPUT_LEN: usize = 32 + 32 + 8 + 8 + 64;

/// `keys`: signed statements of [`ferry_proto::keys`] with every field from the input,
/// laid out after the mode byte as `a[32] b[32] n[8] m[8] sig[64]` (missing bytes are
/// zero).
///
/// | mode % 3 | statement | fields |
/// | --- | --- | --- |
/// | 0 | device certificate | user `a`, device `b`, issued `n`, expires `m` |
/// | 1 | revocation | user `a`, device `b`, time `n` |
/// | 2 | REST challenge | device `a`, challenge `b`, for the vectors' server key |
///
/// Identity keys parse or are refused without a panic, the certificate time rules
/// take any clock, and a signature verifies only over exactly the vectors' statement.
pub fn keys(data: &[u8]) {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = [0u8; KEYS_INPUT_LEN];
    let n = rest.len().min(KEYS_INPUT_LEN);
    input[..n].copy_from_slice(&rest[..n]);
    let a: [u8; 32] = input[..32].try_into().expect("32 bytes");
    let b: [u8; 32] = input[32..64].try_into().expect("32 bytes");
    let n = u64::from_be_bytes(input[64..72].try_into().expect("8 bytes"));
    let m = u64::from_be_bytes(input[72..80].try_into().expect("8 bytes"));
    let sig: [u8; 64] = input[80..].try_into().expect("64 bytes");
    let Ok(key) = keys::parse_identity_key(&a) else {
        return;
    };
    let _ = keys::require_prime_order(&key);
    match mode % 3 {
        0 => {
            let cert = DeviceCertificate {
                issued_at: n,
                expires_at: m,
                sig,
            };
            for now in [0, n, m, u64::MAX] {
                let _ = cert.valid_at(now);
            }
            if cert.verify_signature(&key, &b).is_ok() {
                assert_eq!(
                    (a, b, cert),
                    (f.user_key, f.device_key, f.cert),
                    "a certificate other than the vectors' verified"
                );
            }
        }
        1 => {
            if keys::verify_revocation(&key, &b, n, &sig).is_ok() {
                assert_eq!(
                    (a, b, n, sig),
                    (f.user_key, f.revoke.0, f.revoke.1, f.revoke.2),
                    "a revocation other than the vectors' verified"
                );
            }
        }
        _ => {
            if keys::verify_rest_challenge(&key, &b, &f.server_key, &sig).is_ok() {
                assert_eq!(
                    (a, b, sig),
                    (f.device_key, f.rest.0, f.rest.1),
                    "a REST challenge signature other than the vectors' verified"
                );
            }
        }
    }
}
