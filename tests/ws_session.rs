//! The WebSocket endpoint end to end: real tokio-tungstenite clients against a
//! server on port 0, on SQLite and (when configured) PostgreSQL.

mod common;

use std::time::Duration;

use common::client::{Closed, TestUser, connect, expect_close, open, try_connect};
use common::server::{TestServer, http_get};
use ferry_proto::handshake::{ClientEphemeral, ClientHandshake, ServerPin};
use ferry_proto::message::{ErrorCode, ServerMessage};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

each_backend!(handshake_succeeds_and_ping_answers, &[], |srv| {
    let user = TestUser::random();
    let creds = user.device();
    let device = creds.device_key.verifying_key().to_bytes();
    let mut c = connect(&srv.ws_url(), creds).await;
    let ServerMessage::AuthOk {
        session,
        user: u,
        device: d,
        head,
        limits,
        ..
    } = c.auth_ok.clone()
    else {
        unreachable!()
    };
    assert_eq!(session, c.est.session_id);
    assert_eq!(
        u,
        ferry_proto::b64u::encode(user.key.verifying_key().as_bytes())
    );
    assert_eq!(d, ferry_proto::b64u::encode(&device));
    assert_eq!(head, 0);
    assert_eq!(limits.max_payload, 65536);
    match c.request(r#"{"type":"ping","rid":1}"#).await {
        ServerMessage::Pong { rid, .. } => assert_eq!(rid, Some(ferry_proto::message::Rid::Int(1))),
        other => panic!("{other:?}"),
    }
    // Unknown types get an error and the session goes on.
    match c.request(r#"{"type":"teleport","rid":"x"}"#).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::UnknownType),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.request(r#"{"type":"ping"}"#).await,
        ServerMessage::Pong { .. }
    ));
});

each_backend!(malformed_hello_closes_4001, &[], |srv| {
    let mut ws = open(&srv.ws_url()).await;
    ws.send(Message::text(
        r#"{"type":"client_hello","v":1,"eph":"short"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await, Closed::Code(4001));
});

each_backend!(unsupported_version_says_so_and_closes_4001, &[], |srv| {
    let mut ws = open(&srv.ws_url()).await;
    ws.send(Message::text(
        r#"{"type":"client_hello","v":2,"eph":"x","nonce":"y"}"#,
    ))
    .await
    .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("error frame expected")
    };
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["code"], "unsupported_version");
    assert_eq!(v["supported"], serde_json::json!([1]));
    assert_eq!(expect_close(&mut ws).await, Closed::Code(4001));
});

each_backend!(low_order_ephemeral_closes_4001, &[], |srv| {
    let mut ws = open(&srv.ws_url()).await;
    let zero = ferry_proto::b64u::encode(&[0u8; 32]);
    ws.send(Message::text(format!(
        r#"{{"type":"client_hello","v":1,"eph":"{zero}","nonce":"{zero}"}}"#
    )))
    .await
    .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("error frame expected")
    };
    assert!(t.contains("bad_key"), "{t}");
    assert_eq!(expect_close(&mut ws).await, Closed::Code(4001));
});

each_backend!(binary_frame_during_handshake_closes_4001, &[], |srv| {
    let mut ws = open(&srv.ws_url()).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, Closed::Code(4001));
});

each_backend!(
    handshake_timeout_closes_4001,
    &[("FERRY_LIMITS_HANDSHAKE_TIMEOUT", "1s")],
    |srv| {
        let mut ws = open(&srv.ws_url()).await;
        // Say nothing.
        assert_eq!(expect_close(&mut ws).await, Closed::Code(4001));
    }
);

each_backend!(bad_certificate_closes_4002, &[], |srv| {
    let user = TestUser::random();
    let other = TestUser::random();
    let mut creds = user.device();
    // A certificate signed by another user.
    creds.cert = other.device_with(creds.device_key.clone()).cert;
    assert_eq!(
        try_connect(&srv.ws_url(), creds).await.err(),
        Some(Closed::Code(4002))
    );
    // Expired.
    let mut creds = user.device();
    creds.cert = ferry_proto::keys::DeviceCertificate::issue(
        &user.key,
        creds.device_key.verifying_key().as_bytes(),
        common::client::now_secs() - 100,
        common::client::now_secs() - 1,
    );
    assert_eq!(
        try_connect(&srv.ws_url(), creds).await.err(),
        Some(Closed::Code(4002))
    );
});

each_backend!(auth_failure_frame_says_only_auth_failed, &[], |srv| {
    let user = TestUser::random();
    let mut creds = user.device();
    creds.cert.sig[0] ^= 1;
    let mut ws = open(&srv.ws_url()).await;
    let mut hs = ClientHandshake::new(
        creds,
        ServerPin::Key(common::server::server_key().verifying_key().to_bytes()),
        ClientEphemeral::random(&mut rand::rngs::OsRng),
    );
    ws.send(Message::text(hs.client_hello().unwrap()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!()
    };
    ws.send(Message::text(hs.handle_text(&hello).unwrap()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("error frame expected")
    };
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "auth_failed");
    assert_eq!(v["message"], "authentication failed");
    assert_eq!(expect_close(&mut ws).await, Closed::Code(4002));
});

// The revocation is written by another store on the same database, as another
// process would: the server notices it (with SQLite, within the admission memo's
// check interval, `FOREIGN_COMMIT_CHECK`) and refuses the device from then on.
each_backend!(revoked_device_is_refused_4002, &[], |srv| {
    let user = TestUser::random();
    let creds = user.device();
    for _ in 0..2 {
        let c = connect(&srv.ws_url(), creds.clone()).await;
        drop(c);
    }
    revoke(&srv.db_url, &user, &creds).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match try_connect(&srv.ws_url(), creds.clone()).await {
            Err(closed) => break closed,
            Ok(c) => {
                drop(c);
                assert!(
                    std::time::Instant::now() < deadline,
                    "a device revoked by another process is still admitted"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(refused, Closed::Code(4002));
    // And stays refused.
    assert_eq!(
        try_connect(&srv.ws_url(), creds).await.err(),
        Some(Closed::Code(4002))
    );
});

each_backend!(tampered_sealed_frame_closes_4010, &[], |srv| {
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    let mut frame = c.est.sealer.seal(br#"{"type":"ping"}"#).unwrap();
    frame[3] ^= 0x80;
    c.ws.send(Message::binary(frame)).await.unwrap();
    assert_eq!(expect_close(&mut c.ws).await, Closed::Code(4010));
});

each_backend!(replayed_sealed_frame_closes_4010, &[], |srv| {
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    let frame = c.est.sealer.seal(br#"{"type":"ping"}"#).unwrap();
    c.ws.send(Message::binary(frame.clone())).await.unwrap();
    assert!(matches!(c.recv().await, ServerMessage::Pong { .. }));
    c.ws.send(Message::binary(frame)).await.unwrap();
    assert_eq!(expect_close(&mut c.ws).await, Closed::Code(4010));
});

each_backend!(reordered_sealed_frames_close_4010, &[], |srv| {
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    let first = c.est.sealer.seal(br#"{"type":"ping","rid":1}"#).unwrap();
    let second = c.est.sealer.seal(br#"{"type":"ping","rid":2}"#).unwrap();
    c.ws.send(Message::binary(second)).await.unwrap();
    c.ws.send(Message::binary(first)).await.unwrap();
    assert_eq!(expect_close(&mut c.ws).await, Closed::Code(4010));
});

each_backend!(text_frame_after_auth_closes_4010, &[], |srv| {
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    c.ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut c.ws).await, Closed::Code(4010));
});

each_backend!(ten_protocol_errors_close_4010, &[], |srv| {
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    for i in 0..9 {
        match c.request(&format!(r#"{{"type":"nope","rid":{i}}}"#)).await {
            ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::UnknownType),
            other => panic!("{other:?}"),
        }
    }
    c.send_json(r#"{"type":"nope"}"#).await;
    assert_eq!(expect_close(&mut c.ws).await, Closed::Code(4010));
});

each_backend!(
    oversize_frame_closes_1009,
    &[
        ("FERRY_LIMITS_MAX_MESSAGE_SIZE", "4096"),
        ("FERRY_LIMITS_MAX_PAYLOAD", "1024")
    ],
    |srv| {
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        c.ws.send(Message::binary(vec![0u8; 4097])).await.unwrap();
        assert_eq!(expect_close(&mut c.ws).await, Closed::Code(1009));
        // Also before authentication.
        let mut ws = open(&srv.ws_url()).await;
        ws.send(Message::text("x".repeat(5000))).await.unwrap();
        assert_eq!(expect_close(&mut ws).await, Closed::Code(1009));
    }
);

each_backend!(
    second_session_of_a_device_replaces_the_first_4011,
    &[],
    |srv| {
        let user = TestUser::random();
        let creds = user.device();
        let mut first = connect(&srv.ws_url(), creds.clone()).await;
        let mut second = connect(&srv.ws_url(), creds).await;
        assert_eq!(expect_close(&mut first.ws).await, Closed::Code(4011));
        assert!(matches!(
            second.request(r#"{"type":"ping"}"#).await,
            ServerMessage::Pong { .. }
        ));
    }
);

each_backend!(
    idle_session_is_closed,
    &[
        ("FERRY_LIMITS_PING_INTERVAL", "1s"),
        ("FERRY_LIMITS_IDLE_TIMEOUT", "2s")
    ],
    |srv| {
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        // Read nothing (so no pongs go back) for longer than the idle timeout.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let mut saw_ping = false;
        let code = loop {
            match c.ws.next().await {
                Some(Ok(Message::Ping(_))) => saw_ping = true,
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                other => panic!("{other:?}"),
            }
        };
        assert!(saw_ping, "the server pings while it waits");
        assert_eq!(code, 1000);
    }
);

#[tokio::test]
async fn graceful_shutdown_closes_sessions_1001() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", dir.path().display());
    let mut srv = TestServer::start(&url, &[]).await;
    let (user_a, user_b) = (TestUser::random(), TestUser::random());
    let (creds_a, creds_b) = (user_a.device(), user_b.device());
    let mut a = connect(&srv.ws_url(), creds_a.clone()).await;
    let mut b = connect(&srv.ws_url(), creds_b.clone()).await;
    let before_stop = ferry::clock::unix_ms();
    srv.begin_stop();
    assert_eq!(expect_close(&mut a.ws).await, Closed::Code(1001));
    assert_eq!(expect_close(&mut b.ws).await, Closed::Code(1001));
    srv.join().await;
    // The sessions' ends were recorded in memory and written before `run` returned.
    let store = ferry::store::connect(&url, &ferry::store::StoreOptions::default())
        .await
        .unwrap();
    for (user, creds) in [(&user_a, &creds_a), (&user_b, &creds_b)] {
        let u = ferry::store::UserId(user.key.verifying_key().to_bytes());
        let d = ferry::store::DeviceId(creds.device_key.verifying_key().to_bytes());
        let dev = store.device(&u, &d).await.unwrap().unwrap();
        assert!(dev.created_at <= before_stop, "{dev:?}");
        assert!(
            dev.last_seen >= before_stop,
            "last_seen not written at shutdown: {dev:?}"
        );
    }
}

#[tokio::test]
async fn bad_upgrade_requests_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", dir.path().display());
    let srv = TestServer::start(&url, &[]).await;
    let resp = http_get(srv.addr, "/v1/ws").await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    for headers in [
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n",
    ] {
        let resp = raw_request(
            srv.addr,
            &format!("GET /v1/ws HTTP/1.1\r\nHost: t\r\n{headers}\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{headers}: {resp}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn per_ip_connection_cap_and_handshake_rate() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", dir.path().display());
    let srv = TestServer::start(
        &url,
        &[
            ("FERRY_LIMITS_MAX_CONNECTIONS_PER_IP", "2"),
            ("FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC", "1"),
        ],
    )
    .await;
    // Handshake rate: 1/s with a burst of 2 — the third upgrade in a row gets 429.
    let mut a = open(&srv.ws_url()).await;
    let b = open(&srv.ws_url()).await;
    // The cap: both slots are taken by a and b, so a third connection is dropped.
    let refused = tokio_tungstenite::connect_async(srv.ws_url()).await;
    assert!(
        refused.is_err(),
        "third connection from one IP must be refused"
    );
    drop(b);
    // Free a slot; now the rate limit answers.
    let mut resp = String::new();
    for _ in 0..50 {
        resp = raw_request(
            srv.addr,
            "GET /v1/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await;
        if !resp.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("retry-after"), "{resp}");
    a.close(None).await.ok();
    srv.stop().await;
}

#[tokio::test]
async fn metrics_count_handshakes_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", dir.path().display());
    let srv = TestServer::start(&url, &[]).await;
    let returning = TestUser::random().device();
    let _c = connect(&srv.ws_url(), returning.clone()).await;
    let mut bad = TestUser::random().device();
    bad.cert.sig[5] ^= 4;
    let _ = try_connect(&srv.ws_url(), bad).await;
    let m = http_get(srv.admin, "/metrics").await.unwrap();
    assert!(
        m.contains(r#"ferry_handshakes_total{outcome="ok",reason="ok"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_handshakes_total{outcome="failed",reason="cert_signature"} 1"#),
        "{m}"
    );
    assert!(m.contains("ferry_sessions_live 1"), "{m}");
    // The device's first admission read the store; when it comes back, the
    // admission memo answers (a single SQLite instance).
    assert!(
        m.contains(r#"ferry_device_checks_total{source="store"} 1"#),
        "{m}"
    );
    assert!(!m.contains(r#"source="memo""#), "{m}");
    drop(_c);
    let _c = connect(&srv.ws_url(), returning).await;
    let m = http_get(srv.admin, "/metrics").await.unwrap();
    assert!(
        m.contains(r#"ferry_device_checks_total{source="memo"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferry_device_checks_total{source="store"} 1"#),
        "{m}"
    );
    // A client that upgrades and leaves before finishing the handshake is counted.
    let (mut gone, _) = tokio_tungstenite::connect_async(srv.ws_url())
        .await
        .unwrap();
    gone.close(None).await.ok();
    drop(gone);
    let mut m = String::new();
    for _ in 0..100 {
        m = http_get(srv.admin, "/metrics").await.unwrap();
        if m.contains(r#"reason="abandoned""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        m.contains(r#"ferry_handshakes_total{outcome="failed",reason="abandoned"} 1"#),
        "{m}"
    );
    // Public listener does not serve metrics.
    assert!(
        http_get(srv.addr, "/metrics")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );
    srv.stop().await;
}

async fn raw_request(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Revokes a device directly in the store (the `revoke` message comes with the relay).
async fn revoke(db_url: &str, user: &TestUser, creds: &ferry_proto::handshake::DeviceCredentials) {
    let store = ferry::store::connect(db_url, &ferry::store::StoreOptions::default())
        .await
        .unwrap();
    let u = ferry::store::UserId(user.key.verifying_key().to_bytes());
    let d = ferry::store::DeviceId(creds.device_key.verifying_key().to_bytes());
    let ts = common::client::now_secs() as i64 * 1000;
    let outcome = store
        .revoke_device(&u, &d, ts, &[9u8; 64], ts)
        .await
        .unwrap();
    assert_eq!(outcome, ferry::store::RevokeOutcome::Revoked);
}

each_backend!(client_close_gets_a_close_reply, &[], |srv| {
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    c.ws.close(None).await.unwrap();
    loop {
        match c.ws.next().await {
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => continue,
            other => panic!("expected the server's close reply, got {other:?}"),
        }
    }
});

// RFC 6455 §5.5.1: a close frame sent during the handshake gets a close reply — the
// code echoed, or 1002 for a code a peer may not send.
each_backend!(close_during_the_handshake_is_answered, &[], |srv| {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
    for (sent, want) in [(1000u16, 1000u16), (4321, 4321), (1005, 1002), (999, 1002)] {
        let mut ws = open(&srv.ws_url()).await;
        let frame = CloseFrame {
            code: WsCode::from(sent),
            reason: "".into(),
        };
        ws.send(Message::Close(Some(frame))).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    other => panic!("close {sent}: no close reply, got {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("close {sent}: no close reply in time"));
        assert_eq!(reply, Some(want), "close {sent}");
    }
});

// A device that revokes itself gets its `ok` before the 4003 close (PROTOCOL.md §4).
each_backend!(
    a_device_that_revokes_itself_gets_ok_before_4003,
    &[],
    |srv| {
        let user = TestUser::random();
        let creds = user.device();
        let me = creds.device_key.verifying_key().to_bytes();
        let mut c = connect(&srv.ws_url(), creds).await;
        let ts = common::client::now_secs() * 1000;
        let sig = ferry_proto::keys::sign_revocation(&user.key, &me, ts);
        c.send_json(&format!(
            r#"{{"type":"revoke","rid":"bye","device":"{}","ts":{ts},"sig":"{}"}}"#,
            ferry_proto::b64u::encode(&me),
            ferry_proto::b64u::encode(&sig)
        ))
        .await;
        let first = c.try_recv(Duration::from_secs(10)).await;
        assert!(
            matches!(&first, Ok(ServerMessage::Ok { rid: Some(ferry_proto::message::Rid::Str(r)) }) if r == "bye"),
            "the ok did not come first: {first:?}"
        );
        assert_eq!(
            c.try_recv(Duration::from_secs(10)).await.err(),
            Some(Closed::Code(4003))
        );
    }
);

// A session closed 4008 for sustained rate-limit abuse still gets the acks of the
// publishes that were committed before (they were earned).
each_backend!(
    a_4008_close_sends_the_acks_already_earned,
    &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "1"),
        ("FERRY_LIMITS_BURST", "8")
    ],
    |srv| {
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        // All at once: the burst's 8 are accepted (their commits take a moment),
        // the rest refused, and refusals past burst + 20 close the session.
        let ids: Vec<String> = (0..40).map(|_| common::client::new_event_id()).collect();
        for id in &ids {
            let frame = c
                .est
                .sealer
                .seal(common::client::publish_json(id, b"x").as_bytes())
                .unwrap();
            c.ws.feed(Message::Binary(frame.into())).await.unwrap();
        }
        c.ws.flush().await.unwrap();
        let mut acked = Vec::new();
        let closed = loop {
            match c.try_recv(Duration::from_secs(10)).await {
                Ok(ServerMessage::Ack {
                    id, seq: Some(_), ..
                }) => acked.push(id),
                Ok(_) => {}
                Err(code) => break code,
            }
        };
        assert_eq!(closed, Closed::Code(4008));
        assert_eq!(
            acked,
            ids[..8].to_vec(),
            "acks of committed publishes were lost"
        );
    }
);

// The outbound queue is bounded in bytes, not only in messages: a device that never
// reads, while another device of its user publishes 60 KiB events, is closed 4009
// once its queue holds `limits.outbound_queue_bytes`, long before the queue's 1,024
// messages, so the memory a slow consumer holds stays bounded. The publisher is not
// affected, and nothing acked is lost.
each_backend!(
    a_slow_consumer_is_closed_at_the_queue_byte_limit,
    &[
        ("FERRY_LIMITS_MAX_MESSAGE_SIZE", "131072"),
        ("FERRY_LIMITS_OUTBOUND_QUEUE_BYTES", "131072"),
        ("FERRY_LIMITS_EVENTS_PER_SEC", "10000"),
        ("FERRY_LIMITS_BURST", "10000")
    ],
    |srv| {
        let user = TestUser::random();
        let sleeper_creds = user.device();
        let mut sleeper = connect(&srv.ws_url(), sleeper_creds.clone()).await;
        let mut publisher = connect(&srv.ws_url(), user.device()).await;
        let payload = vec![7u8; 60 * 1024];
        let mut acked = 0;
        // 300 events of 60 KiB (18 MiB): far more than the socket buffers and the
        // 128 KiB queue hold, far fewer than the queue's 1,024 messages.
        for _ in 0..30 {
            let window: Vec<(String, Vec<u8>)> = (0..10)
                .map(|_| (common::client::new_event_id(), payload.clone()))
                .collect();
            publisher
                .publish_window(&window, |m| {
                    if matches!(m, ServerMessage::Ack { seq: Some(_), .. }) {
                        acked += 1;
                    }
                })
                .await
                .expect("the publisher is not affected");
        }
        assert_eq!(acked, 300);
        // The sleeper wakes up: what was buffered, then the 4009 close.
        let mut received = 0;
        let closed = loop {
            match sleeper.try_recv(Duration::from_secs(10)).await {
                Ok(ServerMessage::Event { .. }) => received += 1,
                Ok(_) => {}
                Err(code) => break code,
            }
        };
        assert_eq!(closed, Closed::Code(4009), "after {received} events");
        assert!(received < 300, "it was sent everything: {received} events");
        // Reconnected, it catches up on everything, as 4009 promises.
        let mut back = connect(&srv.ws_url(), sleeper_creds).await;
        let (events, head) = back.sync_all(1000).await;
        assert_eq!((events.len(), head), (300, 300));
    }
);
