//! Clock jumps (BAD-INPUTS F7) through the server's injected clock
//! (`ferry::clock::JumpingClock`): certificate windows, the ±5 minute revocation
//! window and token expiry follow the wall clock both ways and recover when it
//! comes back; rate limiters follow the monotonic clock only, so a wall-clock jump
//! neither refills nor drains them. Nothing crashes and nothing stored is lost. Real
//! servers on port 0, on SQLite and (when configured) PostgreSQL.

mod common;

use common::client::{Closed, TestUser, connect, now_secs, try_connect};
use common::http::{Api, login};
use common::server::TestServer;
use ed25519_dalek::SigningKey;
use ferry::clock::JumpingClock;
use ferry_proto::handshake::DeviceCredentials;
use ferry_proto::keys::DeviceCertificate;
use ferry_proto::message::{ErrorCode, ServerMessage};

const MINUTE_MS: i64 = 60_000;

/// A device whose certificate is valid from 10 s ago for `minutes`.
fn device_valid_for(user: &TestUser, minutes: u64) -> DeviceCredentials {
    let device_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let now = now_secs();
    let cert = DeviceCertificate::issue(
        &user.key,
        device_key.verifying_key().as_bytes(),
        now - 10,
        now + minutes * 60,
    );
    DeviceCredentials {
        user: user.key.verifying_key().to_bytes(),
        device_key,
        cert,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_window_follows_the_wall_clock_both_ways() {
    for db in common::db::databases().await {
        let clock = JumpingClock::new();
        let srv = TestServer::start_clocked(db.url(), &[], clock.clone()).await;
        let user = TestUser::random();
        let creds = device_valid_for(&user, 5);
        connect(&srv.ws_url(), creds.clone()).await;
        // Past the certificate's expiry: refused, as an expired certificate is.
        clock.jump_wall(10 * MINUTE_MS);
        assert_eq!(
            try_connect(&srv.ws_url(), creds.clone()).await.err(),
            Some(Closed::Code(4002))
        );
        // Before it was issued: refused too.
        clock.jump_wall(-70 * MINUTE_MS);
        assert_eq!(
            try_connect(&srv.ws_url(), creds.clone()).await.err(),
            Some(Closed::Code(4002))
        );
        // The clock is right again: admitted, nothing remembered from the jumps.
        clock.jump_wall(60 * MINUTE_MS);
        let mut c = connect(&srv.ws_url(), creds).await;
        assert!(matches!(
            c.request(r#"{"type":"ping","rid":1}"#).await,
            ServerMessage::Pong { .. }
        ));
        srv.stop().await;
        db.finish("certificate_window_follows_the_wall_clock_both_ways")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_window_and_token_expiry_follow_the_wall_clock() {
    for db in common::db::databases().await {
        let clock = JumpingClock::new();
        let settings = [("FERRY_AUTH_TOKEN_TTL", "15m")];
        let srv = TestServer::start_clocked(db.url(), &settings, clock.clone()).await;
        let api = Api::new(&srv);
        let user = TestUser::random();
        let (a, b) = (user.device(), user.device());
        let tokens = login(&api, &a).await;
        let mut c = connect(&srv.ws_url(), a.clone()).await;
        connect(&srv.ws_url(), b.clone()).await;

        // A revocation signed now, received by a server whose clock jumped 10 minutes
        // ahead: outside ±5 minutes, refused, and usable once the clock is back.
        let b_key = b.device_key.verifying_key().to_bytes();
        let ts = now_secs() * 1000;
        let sig = ferry_proto::keys::sign_revocation(&user.key, &b_key, ts);
        let revoke = format!(
            r#"{{"type":"revoke","rid":1,"device":"{}","ts":{ts},"sig":"{}"}}"#,
            ferry_proto::b64u::encode(&b_key),
            ferry_proto::b64u::encode(&sig)
        );
        clock.jump_wall(10 * MINUTE_MS);
        match c.request(&revoke).await {
            ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::Forbidden),
            other => panic!("expected forbidden, got {other:?}"),
        }
        // An access token (15 minutes) is expired an hour later…
        clock.jump_wall(50 * MINUTE_MS);
        api.get("/v1/me", Some(&tokens.access))
            .await
            .error(401, "unauthorized");
        // …and valid again when the clock comes back.
        clock.jump_wall(-60 * MINUTE_MS);
        api.get("/v1/me", Some(&tokens.access)).await.ok();
        match c.request(&revoke).await {
            ServerMessage::Ok { .. } => {}
            other => panic!("expected ok, got {other:?}"),
        }
        assert_eq!(
            try_connect(&srv.ws_url(), b).await.err(),
            Some(Closed::Code(4002))
        );
        srv.stop().await;
        db.finish("revocation_window_and_token_expiry_follow_the_wall_clock")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_follow_the_monotonic_clock_only() {
    for db in common::db::databases().await {
        let clock = JumpingClock::new();
        let settings = [
            ("FERRY_LIMITS_EVENTS_PER_SEC", "1"),
            ("FERRY_LIMITS_BURST", "2"),
        ];
        let srv = TestServer::start_clocked(db.url(), &settings, clock.clone()).await;
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        let publish = |n: u8| {
            common::client::publish_json(&ferry_proto::message::format_uuid(&[n; 16]), b"hi")
        };
        for n in 1..=2 {
            assert!(matches!(
                c.request(&publish(n)).await,
                ServerMessage::Ack { seq: Some(_), .. }
            ));
        }
        let refused = |m: ServerMessage| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        };
        assert!(refused(c.request(&publish(3)).await));
        // A wall-clock jump, either way, gives no new allowance…
        for jump in [60 * MINUTE_MS, -120 * MINUTE_MS, 60 * MINUTE_MS] {
            clock.jump_wall(jump);
            assert!(
                refused(c.request(&publish(3)).await),
                "after a {jump} ms jump"
            );
        }
        // …time that passed does.
        clock.advance_monotonic(std::time::Duration::from_secs(5));
        match c.request(&publish(3)).await {
            ServerMessage::Ack { seq, .. } => assert_eq!(seq, Some(3)),
            other => panic!("expected an ack, got {other:?}"),
        }
        srv.stop().await;
        db.finish("rate_limits_follow_the_monotonic_clock_only")
            .await;
    }
}
