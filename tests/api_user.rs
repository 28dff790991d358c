//! The user endpoints end to end: `/v1/me`, `/v1/devices`, `/v1/events` with the
//! semantics of the WebSocket requests (publish, sync, devices, revoke), isolation
//! between users (BOLA, BAD-INPUTS J10/S1), and the HTTP hardening every response
//! gets (one error shape, security headers, request ids, CORS, body limit, rate
//! limits with `RateLimit-*` headers, bounded metric labels). Real servers on port 0,
//! on SQLite and (when configured) PostgreSQL.

mod common;

use std::time::Duration;

use common::client::{Closed, TestUser, connect, expect_close, now_secs};
use common::http::{Api, login};
use common::server::TestServer;
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use reqwest::Method;
use serde_json::{Value, json};

fn uuid(n: u128) -> String {
    ferry_proto::message::format_uuid(&n.to_be_bytes())
}

fn event(n: u128, payload: &[u8]) -> Value {
    json!({"id": uuid(n), "payload": b64u::encode(payload)})
}

fn key_of(creds: &ferry_proto::handshake::DeviceCredentials) -> String {
    b64u::encode(creds.device_key.verifying_key().as_bytes())
}

each_backend!(every_user_endpoint_needs_a_token, &[], |srv, api| {
    let device = b64u::encode(&[1u8; 32]);
    let paths: [(Method, String, Option<Value>); 6] = [
        (Method::GET, "/v1/me".into(), None),
        (Method::GET, "/v1/devices".into(), None),
        (Method::GET, "/v1/events".into(), None),
        (Method::POST, "/v1/events".into(), Some(event(1, b"x"))),
        (
            Method::DELETE,
            format!("/v1/devices/{device}"),
            Some(json!({"ts": 1, "sig": b64u::encode(&[0u8; 64])})),
        ),
        (Method::POST, "/v1/auth/logout".into(), Some(json!({}))),
    ];
    for (method, path, body) in paths {
        for token in [None, Some("garbage"), Some("a.b.c")] {
            let r = api.send(method.clone(), &path, token, body.clone()).await;
            r.error(401, "unauthorized");
            assert!(r.header("www-authenticate").is_some(), "{method} {path}");
        }
    }
});

each_backend!(publish_sync_and_their_rules, &[], |srv, api| {
    let user = TestUser::random();
    let t = login(&api, &user.device()).await;
    let tok = Some(t.access.as_str());

    // Stored, acked with seq; the same id again is the original ack, marked duplicate.
    let r = api.post("/v1/events", tok, event(1, b"one")).await;
    let ack = r.ok();
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["id"], uuid(1));
    assert_eq!(ack["duplicate"], false);
    let ts = ack["ts"].as_i64().unwrap();
    let r = api.post("/v1/events", tok, event(1, b"other")).await;
    assert_eq!(r.ok()["seq"], 1);
    assert_eq!(r.json["duplicate"], true);
    assert_eq!(r.json["ts"], ts);

    // Compare-and-set on a key: base 0 stores, a stale base is a 409 with the head.
    let key = b64u::encode(b"doc");
    let mut keyed = event(2, b"v1");
    keyed["key"] = json!(key);
    keyed["base"] = json!(0);
    assert_eq!(api.post("/v1/events", tok, keyed).await.ok()["seq"], 2);
    let mut stale = event(3, b"v2");
    stale["key"] = json!(key);
    stale["base"] = json!(0);
    let r = api.post("/v1/events", tok, stale).await;
    r.error(409, "conflict");
    assert_eq!(r.json["error"]["details"]["head"], 2);
    assert_eq!(r.json["error"]["details"]["key"], key);
    assert_eq!(r.json["error"]["details"]["id"], uuid(3));
    // With a TTL.
    let mut ttl = event(4, b"short-lived");
    ttl["ttl"] = json!(60);
    assert_eq!(api.post("/v1/events", tok, ttl).await.ok()["seq"], 3);
    // Ephemeral: relayed, never stored.
    let mut eph = event(5, b"ping");
    eph["ephemeral"] = json!(true);
    let r = api.post("/v1/events", tok, eph).await;
    assert_eq!(r.ok()["ephemeral"], true);
    assert_eq!(r.json["delivered"], 0);
    assert!(r.json.get("seq").is_none());

    // Sync semantics.
    let r = api.get("/v1/events", tok).await;
    let page = r.ok();
    assert_eq!(page["head"], 3);
    assert_eq!(page["more"], false);
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(page["events"][0]["payload"], b64u::encode(b"one"));
    assert_eq!(page["events"][1]["key"], key);
    assert_eq!(page["events"][2]["ttl"], 60);
    let r = api.get("/v1/events?after=1&limit=1", tok).await;
    assert_eq!(r.ok()["events"][0]["seq"], 2);
    assert_eq!(r.json["more"], true);
    let r = api.get("/v1/events?after=3", tok).await;
    assert_eq!(r.ok()["events"], json!([]));
    assert_eq!(r.json["more"], false);

    // Bad input: 400 with the error shape.
    for q in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "after=-1",
        "after=9007199254740992",
    ] {
        api.get(&format!("/v1/events?{q}"), tok)
            .await
            .error(400, "bad_request");
    }
    let bad_bodies = [
        json!({"id": "NOT-A-UUID", "payload": ""}),
        json!({"id": uuid(0xabcdef).to_uppercase(), "payload": ""}),
        json!({"id": uuid(9), "payload": "a"}),
        json!({"id": uuid(9), "payload": "aGVsbG8="}),
        json!({"id": uuid(9), "payload": "", "key": ""}),
        json!({"id": uuid(9), "payload": "", "key": b64u::encode(&[1u8; 65])}),
        json!({"id": uuid(9), "payload": "", "base": 3}),
        json!({"id": uuid(9), "payload": "", "to": []}),
        json!({"id": uuid(9), "payload": "", "ephemeral": true, "ttl": 5}),
        json!({"id": uuid(9), "payload": "", "ephemeral": true, "key": "aw"}),
        json!({"id": uuid(9), "payload": "", "ttl": 0}),
        json!({"id": uuid(9), "payload": "", "ttl": 365 * 86_400}),
        json!({"id": uuid(9), "payload": "", "ttl": -1}),
        json!({"id": uuid(9), "payload": "", "colour": "blue"}),
        json!({"id": uuid(9)}),
        json!([1, 2]),
    ];
    for body in bad_bodies {
        let r = api.post("/v1/events", tok, body.clone()).await;
        assert_eq!(r.status, 400, "{body} -> {}", r.text);
        r.error(400, "bad_request");
    }
    // Larger than max_payload (64 KiB): 413.
    let big = api
        .post("/v1/events", tok, event(10, &vec![7u8; 65_537]))
        .await;
    big.error(413, "payload_too_large");
    // Nothing of that was stored.
    assert_eq!(api.get("/v1/me", tok).await.ok()["head"], 3);
});

each_backend!(
    publish_is_relayed_live_and_rate_limited,
    &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "1"),
        ("FERRY_LIMITS_BURST", "3"),
    ],
    |srv, api| {
        let user = TestUser::random();
        let rest = user.device();
        let watcher = user.device();
        let mut ws = connect(&srv.ws_url(), watcher.clone()).await;
        let t = login(&api, &rest).await;
        let tok = Some(t.access.as_str());
        let r = api.post("/v1/events", tok, event(1, b"live")).await;
        assert_eq!(r.ok()["seq"], 1);
        match ws.recv().await {
            ServerMessage::Event(e) => {
                assert_eq!(e.seq, Some(1));
                assert_eq!(e.device, key_of(&rest));
                assert_eq!(b64u::decode(&e.payload).unwrap(), b"live");
            }
            other => panic!("expected the event, got {other:?}"),
        }
        let mut eph = event(2, b"now");
        eph["ephemeral"] = json!(true);
        eph["to"] = json!([key_of(&watcher)]);
        let r = api.post("/v1/events", tok, eph).await;
        assert_eq!(r.ok()["delivered"], 1);
        match ws.recv().await {
            ServerMessage::Event(e) => {
                assert!(e.ephemeral);
                assert_eq!(e.seq, None);
            }
            other => panic!("expected the ephemeral event, got {other:?}"),
        }
        // The device's publish rate (1/s, burst 3): a quick series runs into 429.
        let mut limited = None;
        for n in 3..13 {
            let r = api.post("/v1/events", tok, event(n, b"c")).await;
            if r.status == 429 {
                limited = Some(r);
                break;
            }
            r.ok();
        }
        let r = limited.expect("the publish rate was never enforced");
        r.error(429, "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
    }
);

each_backend!(devices_and_revocation, &[], |srv, api| {
    let user = TestUser::random();
    let a = user.device();
    let b = user.device();
    let c = user.device();
    let ta = login(&api, &a).await;
    let tok = Some(ta.access.as_str());
    let mut wb = connect(&srv.ws_url(), b.clone()).await;
    let mut wc = connect(&srv.ws_url(), c.clone()).await;
    let r = api.get("/v1/devices", tok).await;
    let list = r.ok()["devices"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3);
    let online: Vec<bool> = list
        .iter()
        .filter(|d| d["device"] == key_of(&b) || d["device"] == key_of(&c))
        .map(|d| d["online"].as_bool().unwrap())
        .collect();
    assert_eq!(online, vec![true, true]);

    let b_key = b.device_key.verifying_key().to_bytes();
    let path = format!("/v1/devices/{}", b64u::encode(&b_key));
    let now_ms = now_secs() * 1000;
    let good = ferry_proto::keys::sign_revocation(&user.key, &b_key, now_ms);
    // A forged signature, and a stale one: 403.
    let forged = ferry_proto::keys::sign_revocation(&TestUser::random().key, &b_key, now_ms);
    api.delete(
        &path,
        tok,
        json!({"ts": now_ms, "sig": b64u::encode(&forged)}),
    )
    .await
    .error(403, "forbidden");
    let old = now_ms - 10 * 60 * 1000;
    let stale = ferry_proto::keys::sign_revocation(&user.key, &b_key, old);
    api.delete(&path, tok, json!({"ts": old, "sig": b64u::encode(&stale)}))
        .await
        .error(403, "forbidden");
    // Malformed: 400.
    api.delete(
        "/v1/devices/not-a-key",
        tok,
        json!({"ts": now_ms, "sig": b64u::encode(&good)}),
    )
    .await
    .error(400, "bad_request");
    api.delete(&path, tok, json!({"ts": now_ms, "sig": "short"}))
        .await
        .error(400, "bad_request");
    api.delete(&path, tok, json!({"ts": now_ms}))
        .await
        .error(400, "bad_request");
    // Unknown device: 404.
    let nobody = b64u::encode(&[3u8; 32]);
    api.delete(
        &format!("/v1/devices/{nobody}"),
        tok,
        json!({"ts": now_ms, "sig": b64u::encode(&good)}),
    )
    .await
    .error(404, "not_found");

    // The good one: b's session closes 4003, c hears presence(revoked).
    let r = api
        .delete(
            &path,
            tok,
            json!({"ts": now_ms, "sig": b64u::encode(&good)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(expect_close(&mut wb.ws).await, Closed::Code(4003));
    loop {
        match wc.recv().await {
            ServerMessage::Presence {
                device, revoked, ..
            } if device == b64u::encode(&b_key) && revoked => break,
            ServerMessage::Presence { .. } => continue,
            other => panic!("expected presence, got {other:?}"),
        }
    }
    // Single use.
    api.delete(
        &path,
        tok,
        json!({"ts": now_ms, "sig": b64u::encode(&good)}),
    )
    .await
    .error(403, "forbidden");
    let r = api.get("/v1/devices", tok).await;
    let revoked = r.ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == b64u::encode(&b_key))
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    assert_eq!(revoked["online"], false);
});

each_backend!(users_never_reach_each_other, &[], |srv, api| {
    let alice = TestUser::random();
    let bob = TestUser::random();
    let (a, b) = (alice.device(), bob.device());
    let ta = login(&api, &a).await;
    let tb = login(&api, &b).await;
    let (at, bt) = (Some(ta.access.as_str()), Some(tb.access.as_str()));
    // Bob stores events; Alice uses the same event id.
    for i in 1..=3 {
        api.post("/v1/events", bt, event(i, format!("bob-{i}").as_bytes()))
            .await
            .ok();
    }
    let r = api.post("/v1/events", at, event(1, b"alice-1")).await;
    assert_eq!(r.ok()["seq"], 1);
    assert_eq!(r.json["duplicate"], false, "an id is per user");

    // Alice's reads never show Bob's data.
    let r = api.get("/v1/events?after=0&limit=1000", at).await;
    let events = r.ok()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"], b64u::encode(b"alice-1"));
    assert!(!r.text.contains(&b64u::encode(b"bob-1")));
    let r = api.get("/v1/devices", at).await;
    assert!(!r.text.contains(&key_of(&b)));
    let me = api.get("/v1/me", at).await;
    assert_eq!(
        me.ok()["user"],
        b64u::encode(alice.key.verifying_key().as_bytes())
    );
    assert_eq!(me.json["head"], 1);

    // Alice cannot revoke Bob's device, not even with Bob's own valid signature.
    let b_key = b.device_key.verifying_key().to_bytes();
    let ts = now_secs() * 1000;
    for signer in [&bob.key, &alice.key] {
        let sig = ferry_proto::keys::sign_revocation(signer, &b_key, ts);
        api.delete(
            &format!("/v1/devices/{}", b64u::encode(&b_key)),
            at,
            json!({"ts": ts, "sig": b64u::encode(&sig)}),
        )
        .await
        .error(404, "not_found");
    }
    // Bob is untouched.
    let r = api.get("/v1/events", bt).await;
    assert_eq!(r.ok()["head"], 3);
    let r = api.get("/v1/devices", bt).await;
    assert!(r.ok()["devices"][0].get("revoked_at").is_none());
    // Alice's publishes never reach Bob's live session, not even an ephemeral one
    // addressed to Bob's device.
    let live = bob.device();
    let mut wb = connect(&srv.ws_url(), live.clone()).await;
    api.post("/v1/events", at, event(2, b"alice-2")).await.ok();
    let mut eph = event(3, b"alice-eph");
    eph["ephemeral"] = json!(true);
    eph["to"] = json!([key_of(&live)]);
    let r = api.post("/v1/events", at, eph).await;
    assert_eq!(r.ok()["delivered"], 0);
    api.post("/v1/events", bt, event(4, b"bob-4")).await.ok();
    match wb.recv().await {
        ServerMessage::Event(e) => assert_eq!(b64u::decode(&e.payload).unwrap(), b"bob-4"),
        other => panic!("{other:?}"),
    }
});

each_backend!(
    one_error_shape_and_security_headers,
    &[("FERRY_SERVER_CORS_ORIGINS", "https://app.example.com"),],
    |srv, api| {
        let t = login(&api, &TestUser::random().device()).await;
        let tok = Some(t.access.as_str());
        // 404 for an unknown path, 405 with Allow, 413 for a huge body, 415 for non-JSON.
        api.get("/v1/nothing", None).await.error(404, "not_found");
        let r = api.send(Method::PUT, "/v1/events", tok, None).await;
        r.error(405, "method_not_allowed");
        let allow = r.header("allow").unwrap().to_ascii_uppercase();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        // A declared body over 1 MiB is refused before it is read (raw TCP: the
        // server answers without waiting for the body).
        let raw = {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
            let head = format!(
                "POST /v1/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                t.access,
                2 * 1024 * 1024
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        };
        assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
        assert!(raw.contains("\"code\":\"payload_too_large\""), "{raw}");
        let r = api
            .client
            .post(format!("{}/v1/events", api.base))
            .header("authorization", format!("Bearer {}", t.access))
            .header("content-type", "text/plain")
            .body(event(1, b"x").to_string())
            .send()
            .await
            .unwrap();
        common::http::read(r)
            .await
            .error(415, "unsupported_media_type");
        // The WebSocket path without an upgrade: 400, same shape.
        api.get("/v1/ws", None).await.error(400, "bad_request");

        // Security headers on success and error responses alike.
        for r in [
            api.get("/v1/me", tok).await,
            api.get("/v1/nothing", None).await,
        ] {
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert!(
                r.header("content-security-policy")
                    .is_some_and(|v| v.contains("frame-ancestors 'none'"))
            );
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }

        // Request ids: a sane one is echoed, anything else replaced.
        let with_id = async |id: &str| {
            api.send_to(
                &api.base,
                Method::GET,
                "/v1/nothing",
                &[("x-request-id".into(), id.to_string())],
                None,
            )
            .await
        };
        let r = with_id("trace-42.a_b:c").await;
        assert_eq!(r.header("x-request-id"), Some("trace-42.a_b:c"));
        assert_eq!(r.json["error"]["request_id"], "trace-42.a_b:c");
        for bad in ["has space", &"x".repeat(65), "semi;colon"] {
            let r = with_id(bad).await;
            let id = r.header("x-request-id").unwrap().to_string();
            assert_ne!(id, bad);
            assert_eq!(r.json["error"]["request_id"], id);
        }

        // CORS: only the listed origin.
        let cors = async |origin: &str| {
            api.send_to(
                &api.base,
                Method::GET,
                "/.well-known/ferry",
                &[("origin".into(), origin.to_string())],
                None,
            )
            .await
        };
        let r = cors("https://app.example.com").await;
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        let r = cors("https://evil.example.com").await;
        assert_eq!(r.header("access-control-allow-origin"), None);
        let r = api
            .client
            .request(Method::OPTIONS, format!("{}/v1/events", api.base))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(
            r.headers().get("access-control-allow-origin").unwrap(),
            "https://app.example.com"
        );
    }
);

each_backend!(
    per_ip_and_per_token_rate_limits,
    &[("FERRY_LIMITS_REST_REQUESTS_PER_TOKEN_PER_SEC", "1"),],
    |srv, api| {
        let t = login(&api, &TestUser::random().device()).await;
        let tok = Some(t.access.as_str());
        // Per token: burst 2, then 429 with Retry-After and RateLimit-* headers.
        let first = api.get("/v1/me", tok).await;
        first.ok();
        assert_eq!(first.header("ratelimit-limit"), Some("2"));
        assert_eq!(first.header("ratelimit-remaining"), Some("1"));
        api.get("/v1/me", tok).await.ok();
        let r = api.get("/v1/me", tok).await;
        r.error(429, "rate_limited");
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        assert!(r.header("retry-after").is_some());
        assert!(r.header("ratelimit-reset").is_some());
        // Another token is not affected.
        let other = login(&api, &TestUser::random().device()).await;
        api.get("/v1/me", Some(&other.access)).await.ok();
        // After the wait, the token works again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        api.get("/v1/me", tok).await.ok();
    }
);

each_backend!(
    per_ip_rate_limit,
    &[("FERRY_LIMITS_REST_REQUESTS_PER_IP_PER_SEC", "2")],
    |srv, api| {
        // Burst 4 from one address, then 429 on every REST route; probes are exempt.
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(api.get("/.well-known/ferry", None).await.status);
        }
        assert_eq!(&statuses[..4], &[200, 200, 200, 200], "{statuses:?}");
        let r = api.get("/v1/me", None).await;
        r.error(429, "rate_limited");
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.header("ratelimit-limit"), Some("4"));
        assert_eq!(api.get("/health/live", None).await.status, 200);
    }
);

each_backend!(health_and_bounded_metric_labels, &[], |srv, api| {
    let r = api.get("/health/ready", None).await;
    let body = r.ok();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["migrations"], "ok");
    assert_eq!(body["checks"]["redis"], "not_configured");
    assert_eq!(body["failed"], json!([]));

    // J11: user-controlled values never become labels.
    let t = login(&api, &TestUser::random().device()).await;
    for i in 0..20 {
        api.get(&format!("/v1/probe-{i}-{}", "z".repeat(i)), None)
            .await;
        api.delete(
            &format!("/v1/devices/{}", b64u::encode(&[i as u8; 32])),
            Some(&t.access),
            json!({"ts": 1, "sig": b64u::encode(&[0u8; 64])}),
        )
        .await;
    }
    let metrics = api.admin(Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = &metrics.text;
    assert!(!text.contains("probe-"), "raw paths leaked into labels");
    assert!(
        !text.contains(&b64u::encode(&[3u8; 32])),
        "ids leaked into labels"
    );
    assert!(text.contains(r#"route="/v1/devices/{device}""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#));
    assert!(text.contains("ferry_http_request_seconds_bucket"));
    assert!(text.contains(r#"ferry_auth_outcomes_total{outcome="ok",reason="ok"}"#));
    assert!(text.contains(r#"ferry_tokens_total{event="issued"}"#));
    assert!(text.contains("ferry_db_pool_connections"));
    assert!(!text.contains(&t.access[..20]));
});

/// With `[redis] url`, readiness also pings Redis (needs `FERRY_TEST_REDIS_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_redis_when_configured() {
    let url = match std::env::var("FERRY_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var_os("CI").is_some() => panic!("FERRY_TEST_REDIS_URL must be set in CI"),
        _ => return,
    };
    let db = common::db::TestDb::sqlite().await;
    let srv = TestServer::start(db.url(), &[("FERRY_REDIS_URL", url.as_str())]).await;
    let api = Api::new(&srv);
    let r = api.get("/health/ready", None).await;
    assert_eq!(r.ok()["checks"]["redis"], "ok", "{}", r.text);
    srv.stop().await;
    db.finish("readiness_checks_redis_when_configured").await;
}
