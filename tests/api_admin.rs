//! The admin API on the admin listener: every endpoint, key checks (wrong key 401,
//! read key on a write endpoint 403, brute force from one address 429 — BAD-INPUTS
//! J8), and keys never showing up in logs or in `GET config`. Real servers on port
//! 0, on SQLite and (when configured) PostgreSQL.

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use common::client::{Closed, TestUser, connect, expect_close, try_connect};
use common::http::{admin_keys_env, login};
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use reqwest::Method;
use serde_json::json;

/// Everything every test of this binary logged (one global subscriber).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The admin keys of this test binary: (read, write), random once.
fn keys() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let k = || b64u::encode(&rand::random::<[u8; 32]>());
        (k(), k())
    })
}

/// `FERRY_ADMIN_KEYS` for [`keys`]; installs the log capture first, so everything
/// the server logs is in [`logs`].
fn admin_env() -> String {
    logs();
    let (read, write) = keys();
    admin_keys_env(read, write)
}

/// A test on every backend with the admin keys configured; after each run, the
/// capture holds the key's name and no key.
macro_rules! admin_test {
    ($name:ident, |$srv:ident, $api:ident, $read:ident, $write:ident| $body:block) => {
        each_backend!($name, &[("FERRY_ADMIN_KEYS", admin_env().as_str())], |$srv, $api| {
            let ($read, $write) = keys().clone();
            $body
        }, then {
            let text = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
            // The capture works (the key's name is logged), and no key is in it.
            assert!(text.contains("key=writer") || text.contains("key=reader"));
            let (read, write) = keys();
            for key in [read, write] {
                assert!(!text.contains(key.as_str()), "an admin key was logged");
            }
        });
    };
}

admin_test!(stats_users_pages_and_config, |srv, api, read, write| {
    let users: Vec<TestUser> = (0..3).map(|_| TestUser::random()).collect();
    for u in &users {
        let t = login(&api, &u.device()).await;
        api.post(
            "/v1/events",
            Some(&t.access),
            json!({"id": ferry_proto::message::format_uuid(&[1; 16]), "payload": "aGk"}),
        )
        .await
        .ok();
    }
    let _live = connect(&srv.ws_url(), users[0].device()).await;

    let r = api.admin(Method::GET, "/admin/v1/stats", Some(&read)).await;
    let s = r.ok();
    assert_eq!(s["users"], 3);
    assert_eq!(s["devices"], 4);
    assert_eq!(s["active_devices"], 4);
    assert_eq!(s["events"], 3);
    assert_eq!(s["live_sessions"], 1);
    assert!(s["database_bytes"].as_u64().unwrap() > 0);

    // Cursor pagination, in key order, covering every user once.
    let r = api
        .admin(Method::GET, "/admin/v1/users?limit=2", Some(&read))
        .await;
    let page1 = r.ok().clone();
    assert_eq!(page1["users"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let r = api
        .admin(
            Method::GET,
            &format!("/admin/v1/users?limit=2&cursor={cursor}"),
            Some(&read),
        )
        .await;
    let page2 = r.ok().clone();
    assert_eq!(page2["users"].as_array().unwrap().len(), 1);
    assert!(page2.get("next_cursor").is_none());
    let mut seen: Vec<String> = page1["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["users"].as_array().unwrap())
        .map(|u| u["user"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = seen.clone();
    sorted.sort_by_key(|u| b64u::decode(u).unwrap());
    assert_eq!(seen, sorted);
    seen.sort();
    let mut expected: Vec<String> = users
        .iter()
        .map(|u| b64u::encode(u.key.verifying_key().as_bytes()))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=101", "cursor=nope", "limit=x"] {
        api.admin(Method::GET, &format!("/admin/v1/users?{bad}"), Some(&read))
            .await
            .error(400, "bad_request");
    }

    // One user.
    let u0 = b64u::encode(users[0].key.verifying_key().as_bytes());
    let r = api
        .admin(Method::GET, &format!("/admin/v1/users/{u0}"), Some(&read))
        .await;
    let detail = r.ok();
    assert_eq!(detail["user"]["user"], u0);
    assert_eq!(detail["user"]["head"], 1);
    assert_eq!(detail["user"]["live_sessions"], 1);
    assert_eq!(detail["devices"].as_array().unwrap().len(), 2);
    let nobody = b64u::encode(&[4u8; 32]);
    api.admin(
        Method::GET,
        &format!("/admin/v1/users/{nobody}"),
        Some(&read),
    )
    .await
    .error(404, "not_found");
    api.admin(Method::GET, "/admin/v1/users/short", Some(&read))
        .await
        .error(400, "bad_request");

    // The effective configuration: redacted, and never a key or its hash.
    let r = api
        .admin(Method::GET, "/admin/v1/config", Some(&read))
        .await;
    let config = r.ok()["config"].as_str().unwrap().to_string();
    assert!(config.contains("[[admin.keys]]"), "{config}");
    assert!(config.contains("name = \"writer\""), "{config}");
    assert!(config.contains("REDACTED"), "{config}");
    for secret in [
        read.clone(),
        write.clone(),
        common::http::sha256_hex(&read),
        common::http::sha256_hex(&write),
        b64u::encode(&common::server::SERVER_SEED),
    ] {
        assert!(!config.contains(&secret), "secret in GET config");
    }
    // The admin document.
    let doc = api.admin(Method::GET, "/openapi.json", None).await;
    assert!(doc.ok()["paths"]["/admin/v1/users/{user}"]["delete"].is_object());
});

admin_test!(disconnect_revoke_and_erase, |srv, api, read, write| {
    let user = TestUser::random();
    let a = user.device();
    let b = user.device();
    let ta = login(&api, &a).await;
    let tb = login(&api, &b).await;
    api.post(
        "/v1/events",
        Some(&ta.access),
        json!({"id": ferry_proto::message::format_uuid(&[2; 16]), "payload": "aGk"}),
    )
    .await
    .ok();
    let u = b64u::encode(user.key.verifying_key().as_bytes());
    let bk = b64u::encode(b.device_key.verifying_key().as_bytes());

    // Disconnect: the session closes 1001 (it may reconnect).
    let mut wa = connect(&srv.ws_url(), a.clone()).await;
    let r = api
        .admin(
            Method::POST,
            &format!("/admin/v1/users/{u}/disconnect"),
            Some(&write),
        )
        .await;
    assert_eq!(r.ok()["closed"], 1);
    assert_eq!(expect_close(&mut wa.ws).await, Closed::Code(1001));
    let nobody = b64u::encode(&[4u8; 32]);
    api.admin(
        Method::POST,
        &format!("/admin/v1/users/{nobody}/disconnect"),
        Some(&write),
    )
    .await
    .error(404, "not_found");

    // Revoke one device: its session closes 4003, its token stops working.
    let mut wb = connect(&srv.ws_url(), b.clone()).await;
    let path = format!("/admin/v1/users/{u}/devices/{bk}");
    let r = api.admin(Method::DELETE, &path, Some(&write)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(expect_close(&mut wb.ws).await, Closed::Code(4003));
    // It connected before: whatever remembered it as admitted forgot it.
    assert_eq!(
        try_connect(&srv.ws_url(), b.clone()).await.err(),
        Some(Closed::Code(4002))
    );
    api.get("/v1/me", Some(&tb.access))
        .await
        .error(401, "unauthorized");
    api.get("/v1/me", Some(&ta.access)).await.ok();
    // Another user's id with this device: not found.
    api.admin(
        Method::DELETE,
        &format!("/admin/v1/users/{nobody}/devices/{bk}"),
        Some(&write),
    )
    .await
    .error(404, "not_found");

    // Erase: counts, sessions closed, tokens dead, data gone.
    let mut wa = connect(&srv.ws_url(), a.clone()).await;
    let r = api
        .admin(
            Method::DELETE,
            &format!("/admin/v1/users/{u}"),
            Some(&write),
        )
        .await;
    let counts = r.ok();
    assert_eq!(counts["events"], 1);
    assert_eq!(counts["devices"], 2);
    assert_eq!(counts["sessions_closed"], 1);
    assert!(counts["refresh_tokens"].as_u64().unwrap() >= 2);
    // 4012, erased: the device is not revoked (4003 would tell it to wipe its keys).
    assert_eq!(expect_close(&mut wa.ws).await, Closed::Code(4012));
    api.get("/v1/me", Some(&ta.access))
        .await
        .error(401, "unauthorized");
    api.admin(Method::GET, &format!("/admin/v1/users/{u}"), Some(&read))
        .await
        .error(404, "not_found");
    api.admin(
        Method::DELETE,
        &format!("/admin/v1/users/{u}"),
        Some(&write),
    )
    .await
    .error(404, "not_found");
    let r = api.admin(Method::GET, "/admin/v1/stats", Some(&read)).await;
    assert_eq!(r.ok()["users"], 0);
    assert_eq!(r.json["events"], 0);

    // A device of the erased user that connects again is registered anew, on an
    // empty log (nothing remembered from before the erasure stands in).
    let wa = connect(&srv.ws_url(), a.clone()).await;
    assert!(
        matches!(wa.auth_ok, ServerMessage::AuthOk { head: 0, .. }),
        "{:?}",
        wa.auth_ok
    );
    let r = api
        .admin(Method::GET, &format!("/admin/v1/users/{u}"), Some(&read))
        .await;
    assert_eq!(r.ok()["user"]["devices"], 1, "{}", r.text);
    assert_eq!(r.json["user"]["head"], 0);
});

// A stolen device is revoked, then the account wiped: the revocation outlives the
// erasure, whether an operator revoked it or the user did with a signed revocation.
// A device that was not revoked may come back (to an empty log).
admin_test!(revocations_outlive_erasure, |srv, api, read, write| {
    let user = TestUser::random();
    let kept = user.device();
    let by_admin = user.device();
    let by_user = user.device();
    for d in [&kept, &by_admin, &by_user] {
        login(&api, d).await;
    }
    let u = b64u::encode(user.key.verifying_key().as_bytes());
    let admin_key = b64u::encode(by_admin.device_key.verifying_key().as_bytes());
    api.admin(
        Method::DELETE,
        &format!("/admin/v1/users/{u}/devices/{admin_key}"),
        Some(&write),
    )
    .await;
    let tk = login(&api, &kept).await;
    let user_key = by_user.device_key.verifying_key().to_bytes();
    let ts = common::client::now_secs() * 1000;
    let sig = ferry_proto::keys::sign_revocation(&user.key, &user_key, ts);
    api.delete(
        &format!("/v1/devices/{}", b64u::encode(&user_key)),
        Some(&tk.access),
        json!({"ts": ts, "sig": b64u::encode(&sig)}),
    )
    .await;
    for d in [&by_admin, &by_user] {
        assert_eq!(
            try_connect(&srv.ws_url(), d.clone()).await.err(),
            Some(Closed::Code(4002))
        );
    }

    let mut live = connect(&srv.ws_url(), kept.clone()).await;
    let r = api
        .admin(
            Method::DELETE,
            &format!("/admin/v1/users/{u}"),
            Some(&write),
        )
        .await;
    assert_eq!(r.ok()["devices"], 3);
    assert_eq!(expect_close(&mut live.ws).await, Closed::Code(4012));

    // Neither revoked device gets back in, by handshake or by REST login…
    for d in [&by_admin, &by_user] {
        assert_eq!(
            try_connect(&srv.ws_url(), d.clone()).await.err(),
            Some(Closed::Code(4002)),
            "a device revoked before the erasure completed a handshake"
        );
        let c = common::http::challenge(&api, d).await;
        api.post("/v1/auth/token", None, common::http::token_request(d, &c))
            .await
            .error(401, "unauthorized");
    }
    // …and the one that was not revoked does, to an empty log.
    let back = connect(&srv.ws_url(), kept.clone()).await;
    assert!(
        matches!(back.auth_ok, ServerMessage::AuthOk { head: 0, .. }),
        "{:?}",
        back.auth_ok
    );
    let r = api
        .admin(Method::GET, &format!("/admin/v1/users/{u}"), Some(&read))
        .await;
    let revoked = r.ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["revoked_at"].is_number())
        .count();
    assert_eq!(revoked, 2, "{}", r.text);
});

admin_test!(admin_key_checks, |srv, api, read, write| {
    let u = b64u::encode(&[4u8; 32]);
    let endpoints: [(Method, String, bool); 7] = [
        (Method::GET, "/admin/v1/stats".into(), false),
        (Method::GET, "/admin/v1/users".into(), false),
        (Method::GET, format!("/admin/v1/users/{u}"), false),
        (Method::GET, "/admin/v1/config".into(), false),
        (
            Method::POST,
            format!("/admin/v1/users/{u}/disconnect"),
            true,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/users/{u}/devices/{u}"),
            true,
        ),
        (Method::DELETE, format!("/admin/v1/users/{u}"), true),
    ];
    for (method, path, writes) in &endpoints {
        // The read key: fine for reads, 403 for writes.
        let r = api.admin(method.clone(), path, Some(&read)).await;
        if *writes {
            r.error(403, "forbidden");
        } else {
            assert!(matches!(r.status, 200 | 404), "{path}: {}", r.text);
        }
        // The write key can do everything (404: the user does not exist).
        let r = api.admin(method.clone(), path, Some(&write)).await;
        assert!(matches!(r.status, 200 | 404), "{path}: {}", r.text);
    }
    // As a bearer credential too.
    let r = api
        .send_to(
            &api.admin,
            Method::GET,
            "/admin/v1/stats",
            &[("authorization".into(), format!("Bearer {read}"))],
            None,
        )
        .await;
    r.ok();
    // The admin API is not on the public listener.
    api.send_to(
        &api.base,
        Method::GET,
        "/admin/v1/stats",
        &[("x-admin-key".into(), read.clone())],
        None,
    )
    .await
    .error(404, "not_found");

    // Wrong keys: 401 (a user's access token, the hash, a near miss, nothing), and
    // after ten failures from this address, 429 even for a correct key.
    let wrong = [
        Some(common::http::sha256_hex(&write)),
        Some(format!("{}x", &write[..write.len() - 1])),
        Some(String::new()),
        None,
    ];
    let mut failures = 0;
    for k in wrong.iter().cycle().take(10) {
        let r = api
            .admin(Method::GET, "/admin/v1/stats", k.as_deref())
            .await;
        r.error(401, "unauthorized");
        failures += 1;
    }
    assert_eq!(failures, 10);
    let r = api
        .admin(Method::GET, "/admin/v1/stats", Some("guess"))
        .await;
    r.error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    api.admin(Method::GET, "/admin/v1/stats", Some(&write))
        .await
        .error(429, "rate_limited");
    let metrics = api.admin(Method::GET, "/metrics", None).await.text;
    assert!(
        metrics.contains(r#"ferry_admin_auth_failures_total{reason="invalid"} 10"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("admin_auth"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains(r#"ferry_admin_auth_failures_total{reason="scope"} 3"#));
    assert!(metrics.contains(r#"ferry_admin_auth_failures_total{reason="rate_limited"} 2"#));
    let _ = std::io::stderr().flush();
});

/// `ferry admin key-hash`: a generated key is printed once with its hash; a key from
/// stdin is only hashed; the printed entry is a valid configuration.
#[test]
fn key_hash_command() {
    use std::process::{Command, Stdio};
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let out = Command::new(ferry)
        .args(["admin", "key-hash", "--name", "ops", "--scope", "read"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let key = field("key:");
    let hash = field("sha256:");
    assert_eq!(b64u::decode(&key).unwrap().len(), 32);
    assert_eq!(hash, common::http::sha256_hex(&key));
    let entry = &text[text.find("[[admin.keys]]").unwrap()..];
    let config = ferry::config::Config::from_toml(entry, &Default::default()).unwrap();
    assert_eq!(config.admin.keys.len(), 1);
    assert_eq!(config.admin.keys[0].name, "ops");
    assert_eq!(config.admin.keys[0].scope, ferry::config::AdminScope::Read);

    let mut child = Command::new(ferry)
        .args(["admin", "key-hash", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my-own-key\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("my-own-key"), "{text}");
    assert!(text.contains(&format!(
        "sha256: {}",
        common::http::sha256_hex("my-own-key")
    )));
    assert!(text.contains("FERRY_ADMIN_KEYS=\"admin:write:"));
}
