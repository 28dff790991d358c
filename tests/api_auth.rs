//! REST authentication end to end (§5, BAD-INPUTS J1–J7): challenge logins, token
//! refresh and logout, the WebSocket `token` message, the discovery documents, and
//! every RFC 8725 attack on access tokens — each answered 401 with the one error
//! shape. Real servers on port 0, on SQLite and (when configured) PostgreSQL.

mod common;

use common::client::{TestUser, connect, now_secs};
use common::http::{Api, Resp, Tokens, challenge, login, token_request};
use common::server::{TestServer, server_key};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use hmac::Mac as _;
use serde_json::{Value, json};

// ---- crafting tokens by hand ----

fn part(v: &Value) -> String {
    b64u::encode(&serde_json::to_vec(v).unwrap())
}

fn decode_part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&b64u::decode(p).unwrap()).unwrap()
}

/// `header.claims.sig` with an Ed25519 signature by `key`.
fn sign_with(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let msg = format!("{}.{}", part(header), part(claims));
    let sig = key.sign(msg.as_bytes());
    format!("{msg}.{}", b64u::encode(&sig.to_bytes()))
}

/// Signed with the real server key: only the content can make it fail.
fn sign(header: &Value, claims: &Value) -> String {
    sign_with(&server_key(), header, claims)
}

/// `header.claims.` + HMAC-SHA256 with `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let msg = format!("{}.{}", part(header), part(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(msg.as_bytes());
    format!("{msg}.{}", b64u::encode(&mac.finalize().into_bytes()))
}

#[track_caller]
fn assert_invalid_token(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text);
    r.error(401, "unauthorized");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer")),
        "{what}"
    );
}

async fn me(api: &Api, token: &str) -> Resp {
    api.get("/v1/me", Some(token)).await
}

async fn fresh_login(api: &Api) -> (TestUser, ferry_proto::handshake::DeviceCredentials, Tokens) {
    let user = TestUser::random();
    let creds = user.device();
    let tokens = login(api, &creds).await;
    (user, creds, tokens)
}

// ---- logins ----

each_backend!(login_challenge_token_me, &[], |srv, api| {
    let (user, creds, t) = fresh_login(&api).await;
    let r = me(&api, &t.access).await;
    let body = r.ok();
    assert_eq!(
        body["user"],
        b64u::encode(user.key.verifying_key().as_bytes())
    );
    assert_eq!(
        body["device"],
        b64u::encode(creds.device_key.verifying_key().as_bytes())
    );
    assert_eq!(body["head"], 0);
    // The device was registered on first sight.
    let r = api.get("/v1/devices", Some(&t.access)).await;
    assert_eq!(r.ok()["devices"].as_array().unwrap().len(), 1);

    // Token responses: the protocol's fields, never cached.
    let c = challenge(&api, &creds).await;
    let r = api
        .post("/v1/auth/token", None, token_request(&creds, &c))
        .await;
    assert_eq!(r.ok()["expires_in"], 3600);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // The challenge is single use.
    let again = api
        .post("/v1/auth/token", None, token_request(&creds, &c))
        .await;
    again.error(401, "unauthorized");
    // It expires in 60 s.
    let r = api
        .post(
            "/v1/auth/challenge",
            None,
            json!({"user": b64u::encode(&creds.user), "device": b64u::encode(creds.device_key.verifying_key().as_bytes())}),
        )
        .await;
    let expires = r.ok()["expires_at"].as_i64().unwrap();
    let now_ms = now_secs() as i64 * 1000;
    assert!(
        (now_ms + 55_000..=now_ms + 62_000).contains(&expires),
        "{expires}"
    );
});

each_backend!(login_refusals, &[], |srv, api| {
    let user = TestUser::random();
    let creds = user.device();
    let dev = b64u::encode(creds.device_key.verifying_key().as_bytes());

    // A challenge issued to another device cannot be redeemed by this one.
    let other = user.device();
    let c = challenge(&api, &other).await;
    api.post("/v1/auth/token", None, token_request(&creds, &c))
        .await
        .error(401, "unauthorized");

    // A signature over a challenge that was never issued.
    let never = b64u::encode(&[9u8; 32]);
    api.post("/v1/auth/token", None, token_request(&creds, &never))
        .await
        .error(401, "unauthorized");

    // A bad signature (the challenge signed for another server key).
    let c = challenge(&api, &creds).await;
    let mut body = token_request(&creds, &c);
    let wrong = ferry_proto::keys::sign_rest_challenge(
        &creds.device_key,
        &b64u::decode_array::<32>(&c).unwrap(),
        &[1u8; 32],
    );
    body["sig"] = json!(b64u::encode(&wrong));
    api.post("/v1/auth/token", None, body)
        .await
        .error(401, "unauthorized");

    // A certificate signed by another user.
    let mallory = TestUser::random();
    let c = challenge(&api, &creds).await;
    let mut forged = creds.clone();
    forged.cert = mallory.device_with(creds.device_key.clone()).cert;
    api.post("/v1/auth/token", None, token_request(&forged, &c))
        .await
        .error(401, "unauthorized");

    // An expired certificate.
    let c = challenge(&api, &creds).await;
    let mut expired = creds.clone();
    expired.cert = ferry_proto::keys::DeviceCertificate::issue(
        &user.key,
        creds.device_key.verifying_key().as_bytes(),
        now_secs() - 100,
        now_secs() - 10,
    );
    api.post("/v1/auth/token", None, token_request(&expired, &c))
        .await
        .error(401, "unauthorized");

    // A weak (small-order) device key: the identity point.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut body = token_request(&creds, &challenge(&api, &creds).await);
    body["device"] = json!(b64u::encode(&identity));
    api.post("/v1/auth/token", None, body)
        .await
        .error(401, "unauthorized");

    // Malformed input is 400 with the error shape.
    let r = api
        .post(
            "/v1/auth/challenge",
            None,
            json!({"user": "x", "device": dev}),
        )
        .await;
    assert!(r.error(400, "bad_request").contains("user"));
    let r = api
        .post(
            "/v1/auth/challenge",
            None,
            json!({"user": dev, "device": dev, "extra": 1}),
        )
        .await;
    r.error(400, "bad_request");
    // Non-JSON bodies are 415.
    let r = api
        .client
        .post(format!("{}/v1/auth/challenge", api.base))
        .body("user=x")
        .send()
        .await
        .unwrap();
    common::http::read(r)
        .await
        .error(415, "unsupported_media_type");
    // Duplicate keys in the JSON body (J7).
    let r = api
        .client
        .post(format!("{}/v1/auth/refresh", api.base))
        .header("content-type", "application/json")
        .body(r#"{"refresh_token":"a","refresh_token":"b"}"#)
        .send()
        .await
        .unwrap();
    common::http::read(r).await.error(400, "bad_request");
});

// ---- refresh, logout, revocation ----

each_backend!(
    refresh_rotates_and_reuse_revokes_the_family,
    &[],
    |srv, api| {
        let (_, creds, t1) = fresh_login(&api).await;
        let r = api
            .post(
                "/v1/auth/refresh",
                None,
                json!({"refresh_token": t1.refresh}),
            )
            .await;
        let t2 = Tokens::from_json(r.ok());
        assert_ne!(t2.refresh, t1.refresh);
        me(&api, &t2.access).await.ok();
        let r = api
            .post(
                "/v1/auth/refresh",
                None,
                json!({"refresh_token": t2.refresh}),
            )
            .await;
        let t3 = Tokens::from_json(r.ok());
        me(&api, &t3.access).await.ok();

        // t1's refresh token is spent: presenting it again revokes the whole family.
        api.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": t1.refresh}),
        )
        .await
        .error(401, "unauthorized");
        // The rotated successor stops working too, and so do the family's access tokens.
        api.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": t3.refresh}),
        )
        .await
        .error(401, "unauthorized");
        assert_invalid_token(&me(&api, &t3.access).await, "family access token");
        assert_invalid_token(&me(&api, &t2.access).await, "older access token");

        // Another login of the same device is another family: unaffected.
        let t = login(&api, &creds).await;
        me(&api, &t.access).await.ok();
    }
);

each_backend!(token_kinds_are_not_interchangeable, &[], |srv, api| {
    let (_, _, t) = fresh_login(&api).await;
    // A refresh token is not an access token (J5) ...
    assert_invalid_token(&me(&api, &t.refresh).await, "refresh as access");
    // ... and an access token is not a refresh token.
    api.post("/v1/auth/refresh", None, json!({"refresh_token": t.access}))
        .await
        .error(401, "unauthorized");
    api.post(
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": b64u::encode(&[5u8; 32])}),
    )
    .await
    .error(401, "unauthorized");
    // Both still work as what they are.
    me(&api, &t.access).await.ok();
    api.post(
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": t.refresh}),
    )
    .await
    .ok();
});

each_backend!(logout_revokes_access_and_refresh, &[], |srv, api| {
    let (_, _, t) = fresh_login(&api).await;
    let (_, _, other) = fresh_login(&api).await;
    let r = api
        .post("/v1/auth/logout", Some(&t.access), json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_invalid_token(&me(&api, &t.access).await, "after logout");
    api.post(
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": t.refresh}),
    )
    .await
    .error(401, "unauthorized");
    // Logging out again with the revoked token is refused too.
    assert_invalid_token(
        &api.post("/v1/auth/logout", Some(&t.access), json!({}))
            .await,
        "second logout",
    );
    // Other sessions are unaffected.
    me(&api, &other.access).await.ok();
    assert_invalid_token(
        &api.post("/v1/auth/logout", None, json!({})).await,
        "logout without a token",
    );
});

each_backend!(revoked_device_tokens_stop_working, &[], |srv, api| {
    let user = TestUser::random();
    let a = user.device();
    let b = user.device();
    let ta = login(&api, &a).await;
    let tb = login(&api, &b).await;
    let b_key = b.device_key.verifying_key().to_bytes();
    let ts = now_secs() * 1000;
    let sig = ferry_proto::keys::sign_revocation(&user.key, &b_key, ts);
    let r = api
        .delete(
            &format!("/v1/devices/{}", b64u::encode(&b_key)),
            Some(&ta.access),
            json!({"ts": ts, "sig": b64u::encode(&sig)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // On the next request: the revoked device's access token, its refresh token,
    // and a new login are all refused.
    assert_invalid_token(&me(&api, &tb.access).await, "revoked device");
    api.post(
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": tb.refresh}),
    )
    .await
    .error(401, "unauthorized");
    let c = challenge(&api, &b).await;
    api.post("/v1/auth/token", None, token_request(&b, &c))
        .await
        .error(401, "unauthorized");
    // The revoking device goes on.
    me(&api, &ta.access).await.ok();
});

each_backend!(
    websocket_token_message_issues_a_working_pair,
    &[],
    |srv, api| {
        let user = TestUser::random();
        let mut ws = connect(&srv.ws_url(), user.device()).await;
        let (access, refresh, expires_at) = match ws.request(r#"{"type":"token","rid":7}"#).await {
            ServerMessage::Token {
                rid,
                access_token,
                refresh_token,
                expires_at,
            } => {
                assert_eq!(rid, Some(ferry_proto::message::Rid::Int(7)));
                (access_token, refresh_token, expires_at)
            }
            other => panic!("expected token, got {other:?}"),
        };
        let now = now_secs() as i64;
        assert!(
            (now + 3590..=now + 3610).contains(&expires_at),
            "{expires_at}"
        );
        let r = me(&api, &access).await;
        assert_eq!(
            r.ok()["user"],
            b64u::encode(user.key.verifying_key().as_bytes())
        );
        api.post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
            .await
            .ok();
    }
);

each_backend!(discovery_documents, &[], |srv, api| {
    let (_, _, t) = fresh_login(&api).await;
    let jwks = api.get("/.well-known/jwks.json", None).await;
    let key = &jwks.ok()["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    let x = b64u::decode_array::<32>(key["x"].as_str().unwrap()).unwrap();
    assert_eq!(x, server_key().verifying_key().to_bytes());
    // The access token verifies with the published key and names its kid.
    let header = decode_part(&t.access, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], key["kid"]);
    let (msg, sig) = t.access.rsplit_once('.').unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(&b64u::decode_array::<64>(sig).unwrap());
    vk.verify(msg.as_bytes(), &sig).unwrap();
    let claims = decode_part(&t.access, 1);
    for c in ["iss", "aud", "sub", "did", "iat", "exp", "jti"] {
        assert!(claims.get(c).is_some(), "{c} in {claims}");
    }
    assert_eq!(claims["aud"], "ferry");
    assert_eq!(claims["iss"], "ferry");

    let info = api.get("/.well-known/ferry", None).await;
    let info = info.ok();
    assert_eq!(
        info["server_key"],
        b64u::encode(server_key().verifying_key().as_bytes())
    );
    assert_eq!(info["protocol_versions"], json!([1]));
    assert_eq!(info["limits"]["max_payload"], 65536);

    let doc = api.get("/openapi.json", None).await;
    assert_eq!(doc.ok()["openapi"], "3.1.0");
    assert!(doc.json["paths"]["/v1/events"]["post"].is_object());
    assert!(doc.json["components"]["securitySchemes"]["bearer"].is_object());
});

// ---- RFC 8725 attacks, each 401 ----

each_backend!(jwt_attacks_are_refused, &[], |srv, api| {
    let (_, _, t) = fresh_login(&api).await;
    let header = decode_part(&t.access, 0);
    let claims = decode_part(&t.access, 1);
    let kid = header["kid"].as_str().unwrap().to_string();
    let now = now_secs();
    // The baseline re-signed by hand is accepted: each case below changes one thing.
    me(&api, &sign(&header, &claims)).await.ok();

    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hdr = |patch: Value| {
        let mut h = header.clone();
        for (k, v) in patch.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };

    let mut cases: Vec<(String, String)> = Vec::new();
    // J1: alg none in every spelling, empty and "null" signatures.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = hdr(json!({"alg": alg}));
        cases.push((
            format!("alg {alg}"),
            format!("{}.{}.", part(&h), part(&claims)),
        ));
        cases.push((
            format!("alg {alg} with a signature"),
            format!("{}.{}.null", part(&h), part(&claims)),
        ));
    }
    cases.push((
        "empty signature".into(),
        format!("{}.{}.", part(&header), part(&claims)),
    ));
    cases.push((
        "two parts".into(),
        format!("{}.{}", part(&header), part(&claims)),
    ));
    // J2: HS256 keyed with the server's public key (raw bytes, b64u text, JWK JSON).
    let pk = server_key().verifying_key().to_bytes();
    let hs = hdr(json!({"alg": "HS256"}));
    for (what, secret) in [
        ("raw", pk.to_vec()),
        ("b64u", b64u::encode(&pk).into_bytes()),
        (
            "jwk",
            api.get("/.well-known/jwks.json", None)
                .await
                .text
                .into_bytes(),
        ),
    ] {
        cases.push((
            format!("HS256 with the public key ({what})"),
            hs256(&hs, &claims, &secret),
        ));
    }
    // J3: kid values that are not ours, including injection attempts.
    for bad in [
        "other",
        "../x",
        "../../../../dev/null",
        "' OR '1'='1",
        "1; DROP TABLE users --",
        "$(touch /tmp/pwned)",
        "`id`|&;<>",
        "",
    ] {
        cases.push((
            format!("kid {bad:?}"),
            sign(&hdr(json!({"kid": bad})), &claims),
        ));
    }
    let mut no_kid = header.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    cases.push(("no kid".into(), sign(&no_kid, &claims)));
    // The header is exactly `alg`, `typ` and `kid` (docs/api.md): `typ` is required.
    let mut no_typ = header.clone();
    no_typ.as_object_mut().unwrap().remove("typ");
    cases.push(("no typ".into(), sign(&no_typ, &claims)));
    // J3: key-carrying headers, whether signed by an attacker key or even by ours.
    let attacker = SigningKey::from_bytes(&[66u8; 32]);
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64u::encode(attacker.verifying_key().as_bytes())});
    cases.push((
        "embedded jwk (attacker key)".into(),
        sign_with(&attacker, &hdr(json!({"jwk": jwk})), &claims),
    ));
    cases.push((
        "embedded jwk (signed by ours)".into(),
        sign(&hdr(json!({"jwk": jwk})), &claims),
    ));
    for (field, value) in [
        ("jku", json!("http://127.0.0.1:1/jwks.json")),
        ("x5u", json!("http://127.0.0.1:1/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
    ] {
        cases.push((
            format!("{field} header"),
            sign(&hdr(json!({field: value})), &claims),
        ));
    }
    cases.push((
        "typ other".into(),
        sign(&hdr(json!({"typ": "at+jwt"})), &claims),
    ));
    // J4: time claims.
    cases.push((
        "expired".into(),
        sign(&header, &with(json!({"exp": now - 120, "iat": now - 4000}))),
    ));
    cases.push((
        "nbf in the future".into(),
        sign(&header, &with(json!({"nbf": now + 600}))),
    ));
    cases.push((
        "iat in the future".into(),
        sign(&header, &with(json!({"iat": now + 600}))),
    ));
    cases.push((
        "exp as a string".into(),
        sign(&header, &with(json!({"exp": (now + 600).to_string()}))),
    ));
    cases.push((
        "exp as a float".into(),
        sign(&header, &with(json!({"exp": (now + 600) as f64 + 0.5}))),
    ));
    cases.push((
        "exp negative".into(),
        sign(&header, &with(json!({"exp": -1}))),
    ));
    cases.push((
        "exp absurdly large".into(),
        sign(&header, &with(json!({"exp": 9_999_999_999_u64}))),
    ));
    cases.push((
        "exp missing".into(),
        sign(&header, &with(json!({"exp": null}))),
    ));
    // Audience, issuer, subject, other claims.
    cases.push((
        "wrong aud".into(),
        sign(&header, &with(json!({"aud": "other"}))),
    ));
    cases.push((
        "aud as a list".into(),
        sign(&header, &with(json!({"aud": ["ferry", "other"]}))),
    ));
    let big_aud: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
    cases.push((
        "10k-element aud".into(),
        sign(&header, &with(json!({"aud": big_aud}))),
    ));
    cases.push((
        "wrong iss".into(),
        sign(&header, &with(json!({"iss": "elsewhere"}))),
    ));
    cases.push(("no jti".into(), sign(&header, &with(json!({"jti": null})))));
    cases.push((
        "extra claim".into(),
        sign(&header, &with(json!({"admin": true}))),
    ));
    cases.push((
        "sub not a key".into(),
        sign(&header, &with(json!({"sub": "root"}))),
    ));
    // Tampered claims: re-encoded with another subject, original signature kept.
    let other_user = b64u::encode(TestUser::random().key.verifying_key().as_bytes());
    let sig = t.access.rsplit('.').next().unwrap();
    cases.push((
        "tampered sub".into(),
        format!(
            "{}.{}.{sig}",
            part(&header),
            part(&with(json!({"sub": other_user})))
        ),
    ));
    cases.push((
        "tampered exp".into(),
        format!(
            "{}.{}.{sig}",
            part(&header),
            part(&with(json!({"exp": now + 3500})))
        ),
    ));
    // A token of another user's unknown device, validly signed: the device must exist.
    cases.push((
        "unknown device".into(),
        sign(
            &header,
            &with(json!({"sub": other_user, "did": other_user})),
        ),
    ));
    // J7: encodings and sizes.
    let padded = format!("{}=.{}.{sig}", part(&header), part(&claims));
    cases.push(("padded base64".into(), padded));
    let std_alphabet = t.access.replace('-', "+").replace('_', "/");
    if std_alphabet != t.access {
        cases.push(("standard alphabet".into(), std_alphabet));
    }
    cases.push(("100 KB token".into(), "a".repeat(100_000)));
    let dup = format!(
        "{{\"iss\":\"ferry\",\"aud\":\"ferry\",\"sub\":{},\"sub\":{},\"did\":{},\"iat\":{},\"exp\":{},\"jti\":\"x\"}}",
        claims["sub"], claims["sub"], claims["did"], claims["iat"], claims["exp"]
    );
    let msg = format!("{}.{}", part(&header), b64u::encode(dup.as_bytes()));
    let dup_sig = server_key().sign(msg.as_bytes());
    cases.push((
        "duplicate claim keys".into(),
        format!("{msg}.{}", b64u::encode(&dup_sig.to_bytes())),
    ));

    for (what, token) in &cases {
        let r = me(&api, token).await;
        // Past the 64 KiB request-head limit, the HTTP layer may refuse the head
        // (431) before the token is looked at, depending on how the bytes arrive;
        // either way the token is refused.
        if token.len() > 64 * 1024 && r.status == 431 {
            continue;
        }
        assert_invalid_token(&r, what);
    }
    // Leeway: 10 s past exp is still within the 30 s leeway; the kid is ours.
    me(
        &api,
        &sign(&header, &with(json!({"exp": now - 10, "iat": now - 3000}))),
    )
    .await
    .ok();
    assert_eq!(header["kid"], kid);
    // Authorization headers that are not one bearer token.
    for value in [
        "Basic dXNlcjpwdw==",
        "Bearer",
        "Bearer  ",
        &format!("bearer{}", t.access),
    ] {
        let r = api
            .send_to(
                &api.base,
                reqwest::Method::GET,
                "/v1/me",
                &[("authorization".into(), value.to_string())],
                None,
            )
            .await;
        assert_invalid_token(&r, value);
    }
});

// The request-head limit (64 KiB): a head that is still incomplete past it is
// refused with 431 and the connection closed, without waiting for the rest.
#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_431() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", dir.path().display());
    let srv = TestServer::start(&url, &[]).await;
    let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // Read while writing: the reply is taken as soon as it comes, before the close.
    let reader = tokio::spawn(async move {
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        reply
    });
    wr.write_all(b"GET /v1/me HTTP/1.1\r\nHost: ferry\r\nAuthorization: Bearer ")
        .await
        .unwrap();
    let chunk = [b'a'; 1024];
    // Written in pieces, so the server sees a partial head grow past the limit.
    for _ in 0..80 {
        if wr.write_all(&chunk).await.is_err() || reader.is_finished() {
            break; // the server already answered and closed
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
        .await
        .expect("the server answers and closes")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    srv.stop().await;
}
