//! Several instances on one database with Redis: a device on one instance receives
//! live events, presence and revocation from another. Needs `FERRY_TEST_REDIS_URL`
//! (with `CI` set, a missing or unreachable Redis fails this suite).

mod common;

use common::client::{Closed, TestUser, connect, expect_close};
use common::server::TestServer;
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_relay_presence_and_revocation_cross_instances() {
    let Some(redis) = common::redis::url_from_env().await else {
        return;
    };
    // Several instances share a PostgreSQL database (a SQLite file takes one
    // server: see `a_second_server_on_one_sqlite_file_is_refused`).
    if let Some(db) = common::db::TestDb::postgres().await {
        let env = [("FERRY_REDIS_URL", redis.as_str())];
        let one = TestServer::start(db.url(), &env).await;
        let two = TestServer::start(db.url(), &env).await;
        let user = TestUser::random();
        let mut a = connect(&one.ws_url(), user.device()).await;
        let b_creds = user.device();
        let b_dev = b_creds.device_key.verifying_key().to_bytes();
        let mut b = connect(&two.ws_url(), b_creds.clone()).await;
        // a (instance one) hears that b came online on instance two.
        match a.recv().await {
            ServerMessage::Presence {
                device,
                online: true,
                ..
            } => assert_eq!(device, b64u::encode(&b_dev)),
            other => panic!("{other:?}"),
        }
        for i in 1..=20u64 {
            let id = ferry_proto::message::format_uuid(&u128::from(i).to_be_bytes());
            let req = format!(
                r#"{{"type":"publish","id":"{id}","payload":"{}"}}"#,
                b64u::encode(b"x")
            );
            assert!(
                matches!(a.request(&req).await, ServerMessage::Ack { seq: Some(s), .. } if s == i)
            );
        }
        for i in 1..=20u64 {
            loop {
                match b.recv().await {
                    ServerMessage::Event(e) => {
                        assert_eq!(e.seq, Some(i));
                        break;
                    }
                    ServerMessage::Presence { .. } => continue,
                    other => panic!("{other:?}"),
                }
            }
        }
        // Revoking b through instance one closes its session on instance two.
        let ts = common::client::now_secs() * 1000;
        let sig = ferry_proto::keys::sign_revocation(&user.key, &b_dev, ts);
        let req = format!(
            r#"{{"type":"revoke","device":"{}","ts":{ts},"sig":"{}"}}"#,
            b64u::encode(&b_dev),
            b64u::encode(&sig)
        );
        assert!(matches!(a.request(&req).await, ServerMessage::Ok { .. }));
        assert_eq!(expect_close(&mut b.ws).await, Closed::Code(4003));
        one.stop().await;
        two.stop().await;
        db.finish("live_relay_presence_and_revocation_cross_instances")
            .await;
    }
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    let db = common::db::TestDb::sqlite().await;
    let first = TestServer::start(db.url(), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = std::collections::HashMap::new();
    env.insert(
        "FERRY_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    );
    env.insert("FERRY_DATABASE_URL".to_string(), db.url().to_string());
    env.insert(
        "FERRY_SERVER_KEY".to_string(),
        b64u::encode(&common::server::SERVER_SEED),
    );
    let config = ferry::config::Config::load(None, &env).unwrap();
    let listeners = ferry::server::Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let err = ferry::server::run(config, listeners, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("a server runs on this database"),
        "{err}"
    );
    // Once the first stops, the file is free again.
    first.stop().await;
    let again = TestServer::start(db.url(), &[]).await;
    again.stop().await;
}

#[tokio::test]
async fn unreachable_redis_refuses_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = std::collections::HashMap::new();
    env.insert(
        "FERRY_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    );
    env.insert(
        "FERRY_SERVER_KEY".to_string(),
        b64u::encode(&common::server::SERVER_SEED),
    );
    env.insert(
        "FERRY_REDIS_URL".to_string(),
        "redis://127.0.0.1:1".to_string(),
    );
    let config = ferry::config::Config::load(None, &env).unwrap();
    let listeners = ferry::server::Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let err = ferry::server::run(config, listeners, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("redis:"), "{err}");
}
