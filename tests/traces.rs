//! Traces over OTLP from real `ferry serve` processes into an OTLP/HTTP receiver in
//! the test. Two instances on one PostgreSQL database and Redis: a publish on one
//! and its delivery on the other form one trace (and a trace not sampled where it
//! began is recorded nowhere); handshakes, syncs and REST requests have their spans;
//! no span carries a payload, a key, a token or an id. One instance on SQLite: the
//! last spans go out at shutdown.
//!
//! The tests with two instances need `FERRY_TEST_POSTGRES_URL` and
//! `FERRY_TEST_REDIS_URL`; with `CI` set, either missing or unreachable fails them.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use common::client::{TestClient, TestUser, connect};
use common::http::{Api, login};
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One span as the receiver got it.
#[derive(Clone, Debug)]
struct Got {
    /// The `service.instance.id` of the process that sent it.
    instance: String,
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
    /// Span events (log lines never become any).
    events: usize,
    /// Every attribute value of the span and its resource, for the secret check.
    values: Vec<String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(f)) => f.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// `POST /v1/traces`: decodes the protobuf export request and keeps its spans.
async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in rs.scope_spans {
            for s in scope.spans {
                let attributes = attributes(&s.attributes);
                let values = attributes
                    .values()
                    .chain(resource.values())
                    .cloned()
                    .collect();
                got.push(Got {
                    instance: resource["service.instance.id"].clone(),
                    service: resource["service.name"].clone(),
                    name: s.name,
                    kind: s.kind,
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_span_id: s.parent_span_id,
                    attributes,
                    events: s.events.len(),
                    values,
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    ""
}

/// Starts the receiver on a free port.
async fn receiver() -> (SocketAddr, Spans) {
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

/// A `ferry serve` child process, killed on drop.
struct Instance {
    child: Child,
    /// Its public listener.
    addr: SocketAddr,
    /// Its `service.instance.id`, from its log.
    id: String,
    _dir: tempfile::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ferry serve` on port 0 with no inherited `FERRY_*` variables, plus `env`,
/// until it logs where it listens.
fn serve(env: &[(&str, &str)]) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::child::ferry_serve(dir.path())
        .env(
            "FERRY_SERVER_KEY",
            b64u::encode(&common::server::SERVER_SEED),
        )
        .env("FERRY_SERVER_LISTEN", "127.0.0.1:0")
        .env("FERRY_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC", "10000")
        .env("FERRY_LOG", "info")
        .env("FERRY_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .spawn()
        .expect("start the ferry binary");
    let rx = common::child::stderr_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut addr, mut id, mut log) = (None, None, String::new());
    while addr.is_none() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        log.push_str(&line);
        log.push('\n');
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["message"].as_str() {
            Some("exporting traces over OTLP") => id = v["instance"].as_str().map(str::to_owned),
            Some("ferry listening") => addr = v["addr"].as_str().and_then(|a| a.parse().ok()),
            _ => {}
        }
    }
    let (Some(addr), Some(id)) = (addr, id) else {
        let _ = child.kill();
        panic!("ferry serve did not start with traces:\n{log}");
    };
    Instance {
        child,
        addr,
        id,
        _dir: dir,
    }
}

fn api(instance: &Instance) -> Api {
    Api {
        client: reqwest::Client::new(),
        base: format!("http://{}", instance.addr),
        admin: String::new(),
    }
}

/// Waits until `done` holds for the spans received, or fails after 30 s with them.
async fn spans_until(spans: &Spans, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = spans.lock().unwrap().clone();
        if done(&got) {
            return got;
        }
        if Instant::now() > deadline {
            let names: Vec<_> = got.iter().map(|s| (&s.name, &s.instance)).collect();
            panic!("the expected spans did not arrive; got {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_id<'a>(spans: &'a [Got], span_id: &[u8]) -> Option<&'a Got> {
    spans.iter().find(|s| s.span_id == span_id)
}

/// PostgreSQL and Redis for two instances, or `None` (outside CI) without them.
async fn services() -> Option<(common::db::PgTestDb, String)> {
    let redis = common::redis::url_from_env().await?;
    let db = common::db::postgres().await?;
    Some((db, redis))
}

/// Two instances on `db` and `redis`, exporting to `endpoint` every 200 ms, with
/// `extra` settings for each.
fn pair(
    db: &common::db::PgTestDb,
    redis: &str,
    endpoint: &str,
    extra: [&[(&str, &str)]; 2],
) -> (Instance, Instance) {
    let env = [
        ("FERRY_DATABASE_URL", db.url()),
        ("FERRY_REDIS_URL", redis),
        ("FERRY_TELEMETRY_OTLP_ENDPOINT", endpoint),
        ("FERRY_TELEMETRY_EXPORT_INTERVAL", "200ms"),
    ];
    // One after the other: the first applies the migrations.
    let [a, b] = extra.map(|extra| serve(&[&env[..], extra].concat()));
    assert_ne!(a.id, b.id);
    (a, b)
}

/// Publishes `payload` from `a` (stored, or ephemeral) and waits until `b` has it.
async fn relay(a: &mut TestClient, b: &mut TestClient, payload: &str, ephemeral: bool) {
    let id = common::client::new_event_id();
    let req = format!(
        r#"{{"type":"publish","id":"{id}","payload":"{}","ephemeral":{ephemeral}}}"#,
        b64u::encode(payload.as_bytes())
    );
    match a.request(&req).await {
        ServerMessage::Ack { seq, .. } => assert_eq!(seq.is_none(), ephemeral),
        other => panic!("{other:?}"),
    }
    loop {
        match b.recv().await {
            ServerMessage::Event(e) => {
                assert_eq!(e.payload, b64u::encode(payload.as_bytes()));
                return;
            }
            ServerMessage::Presence { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_and_its_delivery_on_another_instance_form_one_trace() {
    let Some((db, redis)) = services().await else {
        return;
    };
    let (otlp, spans) = receiver().await;
    let endpoint = format!("http://{otlp}");
    let named: &[(&str, &str)] = &[("FERRY_TELEMETRY_SERVICE_NAME", "ferry-test")];
    let (one, two) = pair(&db, &redis, &endpoint, [named, named]);

    let user = TestUser::random();
    let (a_creds, b_creds) = (user.device(), user.device());
    let a_dev = b64u::encode(a_creds.device_key.verifying_key().as_bytes());
    let b_dev = b64u::encode(b_creds.device_key.verifying_key().as_bytes());
    let mut a = connect(&format!("ws://{}/v1/ws", one.addr), a_creds.clone()).await;
    let mut b = connect(&format!("ws://{}/v1/ws", two.addr), b_creds).await;

    // A publish on one, received live on two; then an ephemeral one.
    let payload = format!("secret payload {:016x}", rand::random::<u64>());
    relay(&mut a, &mut b, &payload, false).await;
    let ephemeral = format!("ephemeral payload {:016x}", rand::random::<u64>());
    relay(&mut a, &mut b, &ephemeral, true).await;
    // A sync on two, and REST on one: a login and a page of events.
    assert!(matches!(
        b.request(r#"{"type":"sync","after":0}"#).await,
        ServerMessage::Events { .. }
    ));
    let tokens = login(&api(&one), &a_creds).await;
    let page = api(&one)
        .get("/v1/events?after=0", Some(&tokens.access))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);

    let got = spans_until(&spans, |got| {
        let count = |name: &str, instance: &str| {
            got.iter()
                .filter(|s| s.name == name && s.instance == instance)
                .count()
        };
        count("handshake", &one.id) >= 1
            && count("handshake", &two.id) >= 1
            && count("deliver", &two.id) >= 2
            && count("sync", &two.id) >= 1
            && count("GET /v1/events", &one.id) >= 1
            && count("sync", &one.id) >= 1
    })
    .await;
    assert!(got.iter().all(|s| s.service == "ferry-test"));
    assert!(got.iter().all(|s| s.events == 0), "no log line in a span");

    // Handshakes on both instances, as `ferry_handshakes_total` labels them.
    let handshakes: BTreeSet<&str> = got
        .iter()
        .filter(|s| s.name == "handshake" && s.attr("outcome") == Some("ok"))
        .map(|s| s.instance.as_str())
        .collect();
    assert_eq!(
        handshakes,
        BTreeSet::from([one.id.as_str(), two.id.as_str()])
    );

    // On one: publish → append → fanout, in one trace.
    let publish = got
        .iter()
        .find(|s| s.name == "publish" && s.attr("outcome") == Some("stored"))
        .expect("the stored publish's span");
    assert_eq!(publish.instance, one.id);
    assert_eq!(publish.attr("seq"), Some("1"));
    let append = got
        .iter()
        .find(|s| s.name == "append" && s.parent_span_id == publish.span_id)
        .expect("an append span under the publish");
    assert_eq!(append.attr("outcome"), Some("stored"));
    let fanout = got
        .iter()
        .find(|s| s.name == "fanout" && s.parent_span_id == append.span_id)
        .expect("a fanout span under the append");
    assert_eq!(fanout.instance, one.id);
    assert_eq!(fanout.trace_id, publish.trace_id);

    // On two: the delivery continues that trace, under the fan-out that sent it.
    let deliver = got
        .iter()
        .find(|s| s.name == "deliver" && s.trace_id == publish.trace_id)
        .expect("a deliver span in the publish's trace");
    assert_eq!(deliver.instance, two.id);
    assert_eq!(deliver.parent_span_id, fanout.span_id);
    assert_eq!(deliver.attr("delivered"), Some("1"));
    let mut up = deliver;
    while up.span_id != publish.span_id {
        up = by_id(&got, &up.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no parent in the trace", up.name));
    }
    // An ephemeral event is relayed by the publish itself.
    let publish = got
        .iter()
        .find(|s| s.name == "publish" && s.attr("outcome") == Some("ephemeral"))
        .expect("the ephemeral publish's span");
    let deliver = got
        .iter()
        .find(|s| s.name == "deliver" && s.parent_span_id == publish.span_id)
        .expect("its delivery under it");
    assert_eq!(
        (deliver.instance.as_str(), &deliver.trace_id),
        (two.id.as_str(), &publish.trace_id)
    );

    // The sync of two's session, and REST on one: the request span (a server span
    // named after its route template) holds the sync it made.
    let ws_sync = got
        .iter()
        .find(|s| s.name == "sync" && s.instance == two.id)
        .unwrap();
    assert_eq!(ws_sync.attr("events"), Some("1"));
    let rest = got
        .iter()
        .find(|s| s.name == "GET /v1/events" && s.instance == one.id)
        .unwrap();
    assert_eq!(rest.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(rest.attr("http.request.method"), Some("GET"));
    assert_eq!(rest.attr("http.route"), Some("/v1/events"));
    assert_eq!(rest.attr("http.response.status_code"), Some("200"));
    let rest_sync = got
        .iter()
        .find(|s| s.name == "sync" && s.parent_span_id == rest.span_id)
        .expect("a sync span under the REST request");
    assert_eq!(rest_sync.trace_id, rest.trace_id);
    assert!(
        got.iter()
            .any(|s| s.name == "POST /v1/auth/token" && s.instance == one.id)
    );

    // No payload, key, token or id in any attribute.
    let secrets = [
        payload.clone(),
        b64u::encode(payload.as_bytes()),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &payload),
        ephemeral.clone(),
        b64u::encode(ephemeral.as_bytes()),
        b64u::encode(&common::server::SERVER_SEED),
        b64u::encode(&a_creds.user),
        a_dev,
        b_dev,
        tokens.access.clone(),
        tokens.refresh.clone(),
    ];
    for s in &got {
        for v in &s.values {
            for secret in &secrets {
                assert!(!v.contains(secret.as_str()), "{} carries {v:?}", s.name);
            }
        }
    }

    drop((a, b, one, two));
    db.drop_db().await;
    common::db::ran_on_postgres("one_publish_and_its_delivery_on_another_instance_form_one_trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_not_sampled_where_it_began_is_not_recorded_elsewhere() {
    let Some((db, redis)) = services().await else {
        return;
    };
    let (otlp, spans) = receiver().await;
    let endpoint = format!("http://{otlp}");
    // One records no trace it begins; two records every trace it begins.
    let none: &[(&str, &str)] = &[("FERRY_TELEMETRY_SAMPLE_RATIO", "0")];
    let (one, two) = pair(&db, &redis, &endpoint, [none, &[]]);
    let user = TestUser::random();
    let mut a = connect(&format!("ws://{}/v1/ws", one.addr), user.device()).await;
    let mut b = connect(&format!("ws://{}/v1/ws", two.addr), user.device()).await;
    relay(&mut a, &mut b, "not sampled", false).await;
    // A sync on two after the delivery: once its span is in, the delivery's would
    // be too (it ended first, on the same instance).
    assert!(matches!(
        b.request(r#"{"type":"sync","after":0}"#).await,
        ServerMessage::Events { .. }
    ));
    let got = spans_until(&spans, |got| {
        got.iter().any(|s| s.name == "sync" && s.instance == two.id)
    })
    .await;
    assert!(
        got.iter().all(|s| s.instance == two.id),
        "one records nothing"
    );
    assert!(got.iter().any(|s| s.name == "handshake"));
    assert!(
        !got.iter().any(|s| s.name == "deliver"),
        "the delivery followed the publish's decision"
    );
    drop((a, b, one, two));
    db.drop_db().await;
    common::db::ran_on_postgres("a_trace_not_sampled_where_it_began_is_not_recorded_elsewhere");
}

#[tokio::test]
async fn the_last_spans_are_sent_at_shutdown() {
    let (otlp, spans) = receiver().await;
    let endpoint = format!("http://{otlp}");
    // Nothing would be sent for a minute: only the shutdown sends it.
    let mut one = serve(&[
        ("FERRY_TELEMETRY_OTLP_ENDPOINT", endpoint.as_str()),
        ("FERRY_TELEMETRY_EXPORT_INTERVAL", "1m"),
    ]);
    let doc = api(&one).get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    // Probes are not traced.
    let live = api(&one).get("/health/live", None).await;
    assert_eq!(live.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spans.lock().unwrap().is_empty(), "sent before the interval");
    let pid = one.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = one.child.wait();
        (one, status)
    })
    .await
    .unwrap()
    .1
    .unwrap();
    assert!(status.success(), "{status}");
    let got = spans.lock().unwrap().clone();
    let request = got
        .iter()
        .find(|s| s.name == "GET /openapi.json")
        .unwrap_or_else(|| panic!("not sent at shutdown: {got:?}"));
    assert!(
        !got.iter().any(|s| s.name.contains("/health/")),
        "a probe was traced: {got:?}"
    );
    assert_eq!(request.service, "ferry");
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
}
