//! The OpenAPI 3.1 documents, generated from the handlers' `#[utoipa::path]`
//! annotations: one for the public listener, one for the admin listener.
//!
//! [`render`] then completes what annotations cannot say once for all operations:
//! the error responses every operation can give (all in the one error shape), and
//! the limits that come from the configuration (`max_payload`, `max_ttl`).

use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::extract::MAX_BODY;
use crate::config::Config;

/// The base document: metadata and security schemes; paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry relay API",
        description = "REST API of the Ferry relay: challenge logins and tokens, the user's \
                       devices and event log, discovery documents and health. The WebSocket \
                       protocol (`/v1/ws`) is described in docs/protocol.md. Errors always have \
                       the shape `{\"error\":{\"code\",\"message\",\"request_id\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Challenge login, token refresh and logout"),
        (name = "user", description = "The token's user: devices and events"),
        (name = "discovery", description = "Public documents"),
        (name = "health", description = "Probes"),
        (name = "admin", description = "Operator API (admin listener only)"),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /v1/auth/token or /v1/auth/refresh",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Key",
                "An admin key from [[admin.keys]] (scope read or write)",
            ))),
        );
        components.add_security_scheme(
            "admin_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin key as a bearer credential"))
                    .build(),
            ),
        );
    }
}

/// Which listener a document describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// REST API, discovery, health.
    Public,
    /// Admin API, health.
    Admin,
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// base64url length of `n` bytes, unpadded.
fn b64u_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// The finished document as JSON text.
pub(crate) fn render(doc: utoipa::openapi::OpenApi, config: &Config, listener: Listener) -> String {
    let mut v = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if !matches!(method.as_str(), "get" | "post" | "put" | "delete" | "patch") {
                    continue;
                }
                complete_operation(op, listener);
            }
        }
    }
    let schemas = &mut v["components"]["schemas"];
    let max_ttl = config.limits.max_ttl.as_secs();
    let max_payload_len = b64u_len(config.limits.max_payload).min(MAX_BODY - 4096);
    for name in ["DurablePublish", "KeyedPublish"] {
        let props = &mut schemas[name]["properties"];
        if props.is_object() {
            props["ttl"] = json!({
                "type": ["integer", "null"], "minimum": 1, "maximum": max_ttl,
                "description": "Seconds until the event is no longer served (at most limits.max_ttl)"
            });
            props["ephemeral"] = json!({"type": ["boolean", "null"], "enum": [false, null]});
            props["payload"]["maxLength"] = json!(max_payload_len);
        }
    }
    let props = &mut schemas["EphemeralPublish"]["properties"];
    if props.is_object() {
        props["ephemeral"] = json!({"type": "boolean", "const": true});
        props["payload"]["maxLength"] = json!(max_payload_len);
    }
    // The server reads every variant from one flat body in which `null` means
    // absent: say so, so each variant accepts the other variants' fields as null.
    let null = json!({"type": "null"});
    for (variant, fields) in [
        ("DurablePublish", &["key", "base", "to"][..]),
        ("KeyedPublish", &["to"][..]),
        ("EphemeralPublish", &["key", "base", "ttl"][..]),
    ] {
        let props = &mut schemas[variant]["properties"];
        if props.is_object() {
            for f in fields {
                props[*f] = null.clone();
            }
        }
    }
    serde_json::to_string(&v).expect("JSON serializes")
}

/// Adds the error responses an operation can give but its annotation does not list.
fn complete_operation(op: &mut Value, listener: Listener) {
    let secured = op.get("security").is_some();
    let has_body = op.get("requestBody").is_some();
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |code: &str, description: &str| {
        responses
            .entry(code)
            .or_insert_with(|| error_response(description));
    };
    add("400", "Malformed request");
    if secured {
        add(
            "401",
            "Missing or invalid credentials (`WWW-Authenticate` says which scheme)",
        );
        if listener == Listener::Admin {
            add("403", "The admin key lacks the scope");
        }
    }
    if has_body {
        add("413", "Body larger than 1 MiB");
        add("415", "Body not `application/json`");
    }
    add(
        "429",
        "Rate limited: see `Retry-After` and `RateLimit-*` headers",
    );
    add("500", "Internal error");
    add(
        "503",
        "Storage unavailable or request timed out; retry later",
    );
}
