//! The starting corpus of every target, built from the protocol vectors: a valid
//! input for each mode of each target. `cargo run --example seed` writes them to
//! `corpus/<target>/`.

use ferry::model::{DeviceId, UserId};
use ferry_proto::b64u;
use serde_json::Value;

use crate::fixture::{VECTORS_JSON, fixture};
use crate::targets::{JWT_JTI, jwt_keys};

/// One seed: the target it is for, a file name, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The fuzz target (a binary of `fuzz_targets/`).
    pub target: &'static str,
    /// The file name in the target's corpus directory.
    pub name: String,
    /// The input.
    pub data: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, data: impl Into<Vec<u8>>) -> Seed {
    Seed {
        target,
        name: name.into(),
        data: data.into(),
    }
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut data = vec![mode];
    data.extend_from_slice(rest);
    data
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = seal_open();
    seeds.extend(handshake());
    seeds.extend(request());
    seeds.extend(config());
    seeds.extend(jwt());
    seeds.extend(keys());
    seeds
}

fn seal_open() -> Vec<Seed> {
    let f = fixture();
    let mut in_order = vec![0u8];
    for frame in &f.c2s {
        in_order.push(u8::try_from(frame.frame.len()).expect("a vector frame is short"));
        in_order.extend_from_slice(&frame.frame);
    }
    let mut skipped = vec![0u8];
    let last = &f.c2s[f.c2s.len() - 1].frame;
    skipped.push(u8::try_from(last.len()).expect("a vector frame is short"));
    skipped.extend_from_slice(last);
    vec![
        seed("seal_open", "frames-in-order", in_order),
        seed("seal_open", "frame-out-of-order", skipped),
        seed("seal_open", "flip-first-byte", [1, 0, 0, 0, 1, 0]),
        seed("seal_open", "flip-tag-bit-and-cut", [1, 1, 0, 40, 0x80, 3]),
    ]
}

fn handshake() -> Vec<Seed> {
    let f = fixture();
    let error = r#"{"type":"error","code":"auth_failed","message":"authentication failed"}"#;
    vec![
        seed(
            "handshake",
            "server-hello-state",
            with_mode(0, f.client_hello.as_bytes()),
        ),
        seed(
            "handshake",
            "server-auth-state",
            with_mode(1, f.client_auth.as_bytes()),
        ),
        seed(
            "handshake",
            "server-device-check-state",
            with_mode(2, f.client_auth.as_bytes()),
        ),
        seed(
            "handshake",
            "server-established",
            with_mode(3, f.client_hello.as_bytes()),
        ),
        seed(
            "handshake",
            "server-after-binary",
            with_mode(4, f.client_hello.as_bytes()),
        ),
        seed(
            "handshake",
            "client-pinned",
            with_mode(5, f.server_hello.as_bytes()),
        ),
        seed(
            "handshake",
            "client-error-frame",
            with_mode(5, error.as_bytes()),
        ),
        seed(
            "handshake",
            "client-first-use",
            with_mode(6, f.server_hello.as_bytes()),
        ),
        seed(
            "handshake",
            "client-established",
            with_mode(7, f.server_hello.as_bytes()),
        ),
    ]
}

fn request() -> Vec<Seed> {
    let f = fixture();
    let v: Value = serde_json::from_str(VECTORS_JSON).expect("the vectors are JSON");
    let mut seeds: Vec<Seed> = f
        .c2s
        .iter()
        .enumerate()
        .map(|(i, frame)| seed("request", format!("c2s-{i}"), frame.plaintext.clone()))
        .collect();
    for (i, frame) in v["sealed"]["s2c"]
        .as_array()
        .expect("a list")
        .iter()
        .enumerate()
    {
        let text = frame["plaintext"].as_str().expect("a plaintext");
        seeds.push(seed("request", format!("s2c-{i}"), text));
    }
    let device = b64u::encode(&f.device_key);
    let (revoked, ts, sig) = f.revoke;
    let requests = [
        (
            "publish",
            r#"{"type":"publish","rid":"p1","id":"0192f0c4-7a6e-7cc0-8a3b-5b2f3d4e5f60","payload":"aGVsbG8","key":"a2V5","base":3,"ttl":60}"#
                .to_string(),
        ),
        (
            "publish-ephemeral",
            format!(
                r#"{{"type":"publish","rid":2,"id":"0192f0c4-7a6e-7cc0-8a3b-5b2f3d4e5f61","payload":"","ephemeral":true,"to":["{device}"]}}"#
            ),
        ),
        (
            "revoke",
            format!(
                r#"{{"type":"revoke","rid":3,"device":"{}","ts":{ts},"sig":"{}"}}"#,
                b64u::encode(&revoked),
                b64u::encode(&sig)
            ),
        ),
        (
            "cursor",
            r#"{"type":"cursor","rid":4,"seq":17}"#.to_string(),
        ),
        ("devices", r#"{"type":"devices"}"#.to_string()),
        ("token", r#"{"type":"token","rid":null}"#.to_string()),
        ("uuid", "0192f0c4-7a6e-7cc0-8a3b-5b2f3d4e5f60".to_string()),
        ("b64u-32", device.clone()),
    ];
    seeds.extend(
        requests
            .into_iter()
            .map(|(name, text)| seed("request", name, text)),
    );
    seeds
}

/// A setting's value as its environment variable spells it.
fn env_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(env_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn config() -> Vec<Seed> {
    let f = fixture();
    let example: toml::Table = ferry::config::EXAMPLE
        .parse()
        .expect("the example configuration is TOML");
    let mut env = String::new();
    for (key, value) in &example {
        match value.as_table() {
            Some(section) => {
                for (k, v) in section {
                    let name = format!("FERRY_{key}_{k}").to_ascii_uppercase();
                    env.push_str(&format!("{name}={}\n", env_value(v)));
                }
            }
            None => env.push_str(&format!(
                "{}={}\n",
                format!("FERRY_{key}").to_ascii_uppercase(),
                env_value(value)
            )),
        }
    }
    let key = b64u::encode(&f.server_seed);
    let inline = format!(
        "env = \"production\"\n[server]\nkey = \"{key}\"\n[tls]\ncert = \"\"\n[database]\nurl = \"postgres://ferry:secret@db.example/ferry\"\n\0FERRY_LOG=info\n"
    );
    vec![
        seed("config", "example", format!("{}\0", ferry::config::EXAMPLE)),
        seed("config", "every-variable", format!("\0{env}")),
        seed("config", "inline-key", inline),
        seed(
            "config",
            "key-from-env",
            format!(
                "[limits]\nmax_ttl = \"7d\"\n\0FERRY_SERVER_KEY={key}\nFERRY_ADMIN_KEYS=ops:read:{}\n",
                "ab".repeat(32)
            ),
        ),
    ]
}

fn jwt() -> Vec<Seed> {
    let f = fixture();
    let token = jwt_keys().sign(
        &UserId(f.user_key),
        &DeviceId(f.device_key),
        f.now_secs,
        JWT_JTI,
    );
    let len = u16::try_from(token.len()).expect("a token is short");
    vec![
        seed("jwt", "signed-token", with_mode(0, token.as_bytes())),
        seed("jwt", "genuine", [1]),
        seed("jwt", "one-byte-edited", [1, 0, 5, b'x']),
        seed("jwt", "whole", with_mode(2, &len.to_be_bytes())),
        seed("jwt", "cut-with-tail", [2, 0, 20, b'.', b'e', b'y', b'J']),
    ]
}

fn keys() -> Vec<Seed> {
    let f = fixture();
    let layout = |a: &[u8; 32], b: &[u8; 32], n: u64, m: u64, sig: &[u8; 64]| {
        let mut data = Vec::with_capacity(crate::targets::KEYS_INPUT_LEN);
        data.extend_from_slice(a);
        data.extend_from_slice(b);
        data.extend_from_slice(&n.to_be_bytes());
        data.extend_from_slice(&m.to_be_bytes());
        data.extend_from_slice(sig);
        data
    };
    let c = f.cert;
    let (revoked, ts, revoke_sig) = f.revoke;
    let (challenge, rest_sig) = f.rest;
    vec![
        seed(
            "keys",
            "certificate",
            with_mode(
                0,
                &layout(
                    &f.user_key,
                    &f.device_key,
                    c.issued_at,
                    c.expires_at,
                    &c.sig,
                ),
            ),
        ),
        seed(
            "keys",
            "revocation",
            with_mode(1, &layout(&f.user_key, &revoked, ts, 0, &revoke_sig)),
        ),
        seed(
            "keys",
            "rest-challenge",
            with_mode(2, &layout(&f.device_key, &challenge, 0, 0, &rest_sig)),
        ),
    ]
}
