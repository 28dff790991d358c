//! An HTTP client for the REST and admin APIs of a [`TestServer`], and the REST
//! login flow (challenge → sign → token).

use ferry_proto::b64u;
use ferry_proto::handshake::DeviceCredentials;
use reqwest::Method;
use serde_json::{Value, json};

use super::server::{TestServer, server_key};

/// A response, read completely.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and the one error shape with this code, and that the
    /// error's `request_id` is the `x-request-id` header. Returns the message.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let err = &self.json["error"];
        assert_eq!(err["code"], code, "{}", self.text);
        assert!(err["message"].is_string(), "{}", self.text);
        let id = err["request_id"].as_str().expect("request_id");
        assert_eq!(Some(id), self.header("x-request-id"), "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text
        );
        err["message"].as_str().unwrap().to_string()
    }

    /// Asserts a 2xx status and returns the JSON body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status),
            "{} {}",
            self.status,
            self.text
        );
        &self.json
    }
}

/// A client for one test server.
#[derive(Clone)]
pub struct Api {
    /// The HTTP client.
    pub client: reqwest::Client,
    /// `http://addr` of the public listener.
    pub base: String,
    /// `http://addr` of the admin listener.
    pub admin: String,
}

impl Api {
    /// A client for `srv`.
    pub fn new(srv: &TestServer) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: format!("http://{}", srv.addr),
            admin: format!("http://{}", srv.admin),
        }
    }

    /// Sends a request to the public listener.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.send_to(&self.base, method, path, &bearer_header(bearer), body)
            .await
    }

    /// Sends a request with arbitrary headers to `base`.
    pub async fn send_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// `GET` on the public listener.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Resp {
        self.send(Method::GET, path, bearer, None).await
    }

    /// `POST` JSON on the public listener.
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Resp {
        self.send(Method::POST, path, bearer, Some(body)).await
    }

    /// `DELETE` with a JSON body on the public listener.
    pub async fn delete(&self, path: &str, bearer: Option<&str>, body: Value) -> Resp {
        self.send(Method::DELETE, path, bearer, Some(body)).await
    }

    /// A request to the admin listener with `X-Admin-Key`.
    pub async fn admin(&self, method: Method, path: &str, key: Option<&str>) -> Resp {
        let headers: Vec<(String, String)> = key
            .map(|k| vec![("x-admin-key".to_string(), k.to_string())])
            .unwrap_or_default();
        self.send_to(&self.admin, method, path, &headers, None)
            .await
    }
}

fn bearer_header(bearer: Option<&str>) -> Vec<(String, String)> {
    bearer
        .map(|t| vec![("authorization".to_string(), format!("Bearer {t}"))])
        .unwrap_or_default()
}

/// Reads a response completely.
pub async fn read(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        json,
        text,
    }
}

/// An access token and its refresh token.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The JWT.
    pub access: String,
    /// The refresh token.
    pub refresh: String,
}

impl Tokens {
    /// From a token response.
    #[track_caller]
    pub fn from_json(v: &Value) -> Self {
        assert_eq!(v["token_type"], "Bearer", "{v}");
        Self {
            access: v["access_token"].as_str().expect("access_token").into(),
            refresh: v["refresh_token"].as_str().expect("refresh_token").into(),
        }
    }
}

/// The body of `POST /v1/auth/token` for `creds`, signing `challenge` (b64u).
pub fn token_request(creds: &DeviceCredentials, challenge: &str) -> Value {
    let c = b64u::decode_array::<32>(challenge).expect("challenge is 32 bytes");
    let server = server_key().verifying_key().to_bytes();
    let sig = ferry_proto::keys::sign_rest_challenge(&creds.device_key, &c, &server);
    json!({
        "user": b64u::encode(&creds.user),
        "device": b64u::encode(creds.device_key.verifying_key().as_bytes()),
        "cert": {
            "issued_at": creds.cert.issued_at,
            "expires_at": creds.cert.expires_at,
            "sig": b64u::encode(&creds.cert.sig),
        },
        "challenge": challenge,
        "sig": b64u::encode(&sig),
    })
}

/// Asks for a challenge for `creds`.
pub async fn challenge(api: &Api, creds: &DeviceCredentials) -> String {
    let r = api
        .post(
            "/v1/auth/challenge",
            None,
            json!({
                "user": b64u::encode(&creds.user),
                "device": b64u::encode(creds.device_key.verifying_key().as_bytes()),
            }),
        )
        .await;
    r.ok()["challenge"].as_str().expect("challenge").to_string()
}

/// The whole REST login: challenge, sign, token.
pub async fn login(api: &Api, creds: &DeviceCredentials) -> Tokens {
    let c = challenge(api, creds).await;
    let r = api
        .post("/v1/auth/token", None, token_request(creds, &c))
        .await;
    Tokens::from_json(r.ok())
}

/// `FERRY_ADMIN_KEYS` for a read key and a write key, and the two keys.
pub fn admin_keys_env(read_key: &str, write_key: &str) -> String {
    format!(
        "reader:read:{},writer:write:{}",
        sha256_hex(read_key),
        sha256_hex(write_key)
    )
}

/// SHA-256 hex.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
