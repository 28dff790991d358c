//! Generated bad inputs at the REST API: valid bodies of `POST /v1/auth/challenge`,
//! `POST /v1/auth/token` and `POST /v1/events`, mutated by the protocol crate's
//! `mutate` (bytes flipped, inserted, deleted, truncated; values of other types,
//! huge numbers, wrong-length base64url, unknown and duplicate keys), 500 cases a
//! property on each backend, through the real router (`ferry::api::router` on an
//! app from `ferry::server::build_app`, in process).
//!
//! Every answer is a success only when the body still is a valid request (for
//! `token`: when it means exactly the original), and otherwise a 4xx in the one
//! error shape — `{"error":{"code","message","request_id"[,"details"]}}`, the code
//! matching the status, the request id in `x-request-id`. Never a 5xx, never a
//! panic.

#[path = "../ferry-proto/tests/support/mutate.rs"]
mod mutate;

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ferry::config::Config;
use ferry::keys::ServerKey;
use ferry::store::StoreOptions;
use ferry_proto::b64u;
use ferry_proto::keys::{self, DeviceCertificate};
use ferry_proto::message::format_uuid;
use mutate::{Doc, Mutation};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::db::{TestDb, databases};

const SERVER_SEED: [u8; 32] = [7; 32];

/// A response, read completely.
struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// One backend's app and a device that can log in.
struct Rest {
    rt: tokio::runtime::Runtime,
    router: Router,
    user: SigningKey,
    device: SigningKey,
    cert: DeviceCertificate,
    token: String,
    next_id: AtomicU64,
    _dir: tempfile::TempDir,
}

impl Rest {
    /// An app on `db`, with a device already logged in (through the router).
    fn start(db: &TestDb) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let env: HashMap<String, String> = [
            ("FERRY_DATA_DIR", dir.path().display().to_string()),
            ("FERRY_DATABASE_URL", db.url().to_owned()),
            // Thousands of requests from one address and one token.
            ("FERRY_LIMITS_EVENTS_PER_SEC", "1000000".into()),
            ("FERRY_LIMITS_BURST", "10000000".into()),
            (
                "FERRY_LIMITS_REST_REQUESTS_PER_IP_PER_SEC",
                "1000000".into(),
            ),
            (
                "FERRY_LIMITS_REST_REQUESTS_PER_TOKEN_PER_SEC",
                "1000000".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = Config::load(None, &env).expect("test config");
        let router = rt.block_on(async {
            let store = ferry::store::connect(&config.database.url, &StoreOptions::default())
                .await
                .unwrap();
            let (app, _writer) =
                ferry::server::build_app(config, ServerKey::from_seed(SERVER_SEED), store);
            ferry::api::router(app)
        });
        let user = SigningKey::from_bytes(&[2; 32]);
        let device = SigningKey::from_bytes(&[3; 32]);
        let now = ferry::clock::unix_ms() as u64 / 1000;
        let cert =
            DeviceCertificate::issue(&user, device.verifying_key().as_bytes(), now - 3600, 0);
        let mut rest = Self {
            rt,
            router,
            user,
            device,
            cert,
            token: String::new(),
            next_id: AtomicU64::new(1),
            _dir: dir,
        };
        let body = rest.token_body();
        let answer = rest.post("/v1/auth/token", body.into_bytes(), false);
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let tokens: Value = serde_json::from_slice(&answer.body).unwrap();
        rest.token = tokens["access_token"].as_str().unwrap().to_owned();
        rest
    }

    fn post(&self, path: &str, body: Vec<u8>, bearer: bool) -> Answer {
        let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        let req = req.body(Body::from(body)).unwrap();
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let text = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (request_id, content_type) = (text("x-request-id"), text("content-type"));
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec();
            Answer {
                status,
                request_id,
                content_type,
                body,
            }
        })
    }

    fn challenge_body(&self) -> String {
        json!({
            "user": b64u::encode(self.user.verifying_key().as_bytes()),
            "device": b64u::encode(self.device.verifying_key().as_bytes()),
        })
        .to_string()
    }

    /// A valid `token` body: a fresh challenge, signed.
    fn token_body(&self) -> String {
        let answer = self.post(
            "/v1/auth/challenge",
            self.challenge_body().into_bytes(),
            false,
        );
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let c: Value = serde_json::from_slice(&answer.body).unwrap();
        let challenge = b64u::decode_array::<32>(c["challenge"].as_str().unwrap()).unwrap();
        let server_key = SigningKey::from_bytes(&SERVER_SEED)
            .verifying_key()
            .to_bytes();
        let sig = keys::sign_rest_challenge(&self.device, &challenge, &server_key);
        json!({
            "user": b64u::encode(self.user.verifying_key().as_bytes()),
            "device": b64u::encode(self.device.verifying_key().as_bytes()),
            "cert": {
                "issued_at": self.cert.issued_at,
                "expires_at": self.cert.expires_at,
                "sig": b64u::encode(&self.cert.sig),
            },
            "challenge": b64u::encode(&challenge),
            "sig": b64u::encode(&sig),
        })
        .to_string()
    }

    /// A valid `publish` body of each shape (stored, keyed, ephemeral), with a
    /// fresh event id.
    fn publish_body(&self, shape: &Index) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id =
            format_uuid(&(u128::from(n) | 0x0190_0000_0000_7000_8000_0000_0000_0000).to_be_bytes());
        let device = b64u::encode(self.device.verifying_key().as_bytes());
        let bodies = [
            json!({"id": id, "payload": "aGVsbG8"}),
            json!({"id": id, "payload": "AQID", "key": "a2V5", "base": 0, "ttl": 60}),
            json!({"id": id, "payload": "", "ephemeral": true, "to": [device]}),
        ];
        bodies[shape.index(bodies.len())].to_string()
    }
}

impl Answer {
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        format!(
            "{} {}",
            self.status,
            text.chars().take(300).collect::<String>()
        )
    }

    /// Checks a refusal: a 4xx in the one error shape. Never a 5xx.
    fn refusal(&self, sent: &[u8]) -> Result<(), TestCaseError> {
        let shown = String::from_utf8_lossy(sent)
            .chars()
            .take(300)
            .collect::<String>();
        prop_assert!(
            self.status.is_client_error(),
            "{} for {}",
            self.text(),
            shown
        );
        prop_assert_eq!(self.content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_slice(&self.body).map_err(|e| {
            TestCaseError::fail(format!("error body not JSON ({e}): {}", self.text()))
        })?;
        let outer = body.as_object().filter(|o| o.len() == 1);
        let error = outer
            .and_then(|o| o.get("error"))
            .and_then(Value::as_object);
        let Some(error) = error else {
            return Err(TestCaseError::fail(format!(
                "not the error shape: {}",
                self.text()
            )));
        };
        prop_assert!(
            error
                .keys()
                .all(|k| ["code", "message", "request_id", "details"].contains(&k.as_str())),
            "unexpected members: {}",
            self.text()
        );
        let code = match self.status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            429 => "rate_limited",
            other => {
                return Err(TestCaseError::fail(format!(
                    "status {other}: {}",
                    self.text()
                )));
            }
        };
        prop_assert_eq!(error.get("code"), Some(&json!(code)), "{}", self.text());
        prop_assert!(
            error.get("message").is_some_and(Value::is_string),
            "{}",
            self.text()
        );
        let id = error.get("request_id").and_then(Value::as_str);
        prop_assert!(
            id.is_some() && id == self.request_id.as_deref(),
            "{}",
            self.text()
        );
        Ok(())
    }
}

/// Whether `value` is a string of canonical base64url (no padding) of `len` bytes.
fn is_b64u(value: Option<&Doc>, len: Option<usize>) -> bool {
    let Some(Doc::Leaf(Value::String(s))) = value else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(s)
        .is_ok_and(|b| URL_SAFE_NO_PAD.encode(&b) == *s && len.is_none_or(|n| b.len() == n))
}

/// Whether `mutated` is JSON without duplicate keys whose root object has only
/// members named in `allowed`.
fn plain_object(mutated: &[u8], allowed: &[&str]) -> Option<Doc> {
    let doc = Doc::parse(mutated)?;
    let Doc::Object(members) = &doc else {
        return None;
    };
    (!doc.has_duplicate_keys() && members.iter().all(|(k, _)| allowed.contains(&k.as_str())))
        .then_some(doc)
}

/// Runs `case` for 500 generated inputs on every backend; panics with the shrunk
/// input when one fails.
fn property<S: Strategy>(
    name: &str,
    strategy: S,
    case: impl Fn(&Rest, S::Value) -> Result<(), TestCaseError>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for db in rt.block_on(databases()) {
        let rest = Rest::start(&db);
        let mut runner = TestRunner::new(mutate::config());
        let result = runner.run(&strategy, |value| case(&rest, value));
        drop(rest);
        rt.block_on(db.finish(name));
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn mutated_challenge_bodies_get_a_challenge_or_a_4xx() {
    property(
        "mutated_challenge_bodies",
        mutate::mutations(),
        |rest, mutations: Vec<Mutation>| {
            let original = rest.challenge_body().into_bytes();
            let mutated = mutate::apply(&mutations, &original);
            let answer = rest.post("/v1/auth/challenge", mutated.clone(), false);
            // Valid: exactly `user` and `device`, each a 32-byte key (any bytes).
            let valid = plain_object(&mutated, &["user", "device"]).is_some_and(|doc| {
                is_b64u(doc.pointer("/user").ok().flatten(), Some(32))
                    && is_b64u(doc.pointer("/device").ok().flatten(), Some(32))
            });
            if valid {
                prop_assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            } else {
                answer.refusal(&mutated)?;
            }
            Ok(())
        },
    );
}

#[test]
fn mutated_token_bodies_log_in_only_if_unchanged_in_meaning() {
    property(
        "mutated_token_bodies",
        mutate::mutations(),
        |rest, mutations: Vec<Mutation>| {
            let original = rest.token_body().into_bytes();
            let mutated = mutate::apply(&mutations, &original);
            let answer = rest.post("/v1/auth/token", mutated.clone(), false);
            if mutate::same_document(&mutated, &original) {
                prop_assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            } else {
                answer.refusal(&mutated)?;
            }
            Ok(())
        },
    );
}

#[test]
fn mutated_publish_bodies_are_stored_or_get_a_4xx() {
    let strategy = (any::<Index>(), mutate::mutations());
    property(
        "mutated_publish_bodies",
        strategy,
        |rest, (shape, mutations)| {
            let original = rest.publish_body(&shape).into_bytes();
            let mutated = mutate::apply(&mutations, &original);
            let answer = rest.post("/v1/events", mutated.clone(), true);
            if answer.status.is_success() {
                // Only a body of known members, with a canonical UUID and a b64u payload.
                let doc = plain_object(
                    &mutated,
                    &["id", "payload", "key", "base", "ttl", "ephemeral", "to"],
                );
                let doc = doc.ok_or_else(|| {
                    TestCaseError::fail(format!("accepted: {}", String::from_utf8_lossy(&mutated)))
                })?;
                let id = match doc.pointer("/id") {
                    Ok(Some(Doc::Leaf(Value::String(id)))) => id.clone(),
                    _ => String::new(),
                };
                prop_assert!(
                    ferry_proto::message::parse_uuid(&id).is_some_and(|b| format_uuid(&b) == id),
                    "accepted an id of {:?}",
                    id
                );
                prop_assert!(is_b64u(doc.pointer("/payload").ok().flatten(), None));
            } else {
                answer.refusal(&mutated)?;
            }
            Ok(())
        },
    );
}
