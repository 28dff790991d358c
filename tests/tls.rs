//! Native `wss` through rustls: a real TLS handshake, then the Ferry handshake and
//! a sealed request, against a server on port 0 with a self-signed certificate.

mod common;

use std::sync::Arc;

use common::client::TestUser;
use common::server::TestServer;
use ferry_proto::handshake::{ClientEphemeral, ClientHandshake, ServerPin};
use ferry_proto::message::ServerMessage;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_handshake_and_sealed_ping() {
    let certs = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", db.path().display());
    let cert = cert_path.display().to_string();
    let key = key_path.display().to_string();
    let srv = TestServer::start(&url, &[("FERRY_TLS_CERT", &cert), ("FERRY_TLS_KEY", &key)]).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let wss = format!("wss://127.0.0.1:{}/v1/ws", srv.addr.port());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        &wss,
        None,
        false,
        Some(Connector::Rustls(Arc::new(config.clone()))),
    )
    .await
    .expect("wss connects");
    let user = TestUser::random();
    let mut hs = ClientHandshake::new(
        user.device(),
        ServerPin::Key(common::server::server_key().verifying_key().to_bytes()),
        ClientEphemeral::random(&mut rand::rngs::OsRng),
    );
    ws.send(Message::text(hs.client_hello().unwrap()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!("server_hello expected")
    };
    ws.send(Message::text(hs.handle_text(&hello).unwrap()))
        .await
        .unwrap();
    let mut est = hs.into_established().unwrap();
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("auth_ok expected")
    };
    let auth_ok: ServerMessage = serde_json::from_slice(&est.opener.open(&b).unwrap()).unwrap();
    assert!(matches!(auth_ok, ServerMessage::AuthOk { .. }));
    ws.send(Message::binary(
        est.sealer.seal(br#"{"type":"ping","rid":5}"#).unwrap(),
    ))
    .await
    .unwrap();
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("pong expected")
    };
    let pong: ServerMessage = serde_json::from_slice(&est.opener.open(&b).unwrap()).unwrap();
    assert!(matches!(pong, ServerMessage::Pong { .. }));

    // Plain ws:// to a TLS listener does not get a session.
    let plain =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", srv.addr.port())).await;
    assert!(plain.is_err());
    // A client that does not trust the certificate fails the TLS handshake.
    let untrusted = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let refused = tokio_tungstenite::connect_async_tls_with_config(
        &wss,
        None,
        false,
        Some(Connector::Rustls(Arc::new(untrusted))),
    )
    .await;
    assert!(refused.is_err());
    srv.stop().await;
}

/// The served certificate's `notAfter` is exported as
/// `ferry_tls_certificate_expiry_timestamp_seconds`; without `[tls]` there is no
/// such series (so the expiry alert has nothing to fire on).
#[tokio::test]
async fn certificate_expiry_is_exported() {
    let certs = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", db.path().display());
    let (cert, key) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let srv = TestServer::start(&url, &[("FERRY_TLS_CERT", &cert), ("FERRY_TLS_KEY", &key)]).await;
    let metrics = common::server::http_get(srv.admin, "/metrics")
        .await
        .unwrap();
    // 2031-05-17T00:00:00Z
    let expected = params.not_after.unix_timestamp();
    assert_eq!(expected, 1_936_742_400);
    assert!(
        metrics.contains(&format!(
            "\nferry_tls_certificate_expiry_timestamp_seconds {expected}\n"
        )),
        "{metrics}"
    );
    srv.stop().await;

    let plain_db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", plain_db.path().display());
    let plain = TestServer::start(&url, &[]).await;
    let metrics = common::server::http_get(plain.admin, "/metrics")
        .await
        .unwrap();
    assert!(metrics.contains("ferry_sessions_live"), "{metrics}");
    assert!(
        !metrics.contains("ferry_tls_certificate_expiry_timestamp_seconds"),
        "{metrics}"
    );
    plain.stop().await;
}
