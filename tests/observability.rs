//! The alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/ferry.json`) against the code, so that they cannot drift from
//! it:
//!
//! - every metric name their expressions use is exported by a real server (SQLite,
//!   with a Redis server of the test's own, exercised so that labelled series
//!   exist; a second server with `[tls]` for the certificate's expiry);
//! - every expression parses: `promtool check rules` on the rules, and on a rules
//!   file made of the dashboard's expressions, and `promtool test rules` on the
//!   rules' unit tests.
//!
//! Needs `redis-server` and `promtool` (Debian's `prometheus` package,
//! `deploy/prometheus/check` installs it); with `CI` set, either missing fails the
//! suite, otherwise what needs it is skipped with a note.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{Closed, TestUser, connect, expect_close, new_event_id, publish_json};
use common::http::{Api, admin_keys_env, login};
use common::redis::RedisServer;
use common::server::{TestServer, http_get};
use ferry_proto::message::ServerMessage;
use futures_util::SinkExt as _;
use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::Message;

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts_test.yml";
const DASHBOARD: &str = "deploy/grafana/ferry.json";

/// Metrics that exist only with Redis configured (and, for the transitions, after
/// its breaker moved): not checked when `redis-server` is missing outside CI.
const NEEDS_REDIS: &[&str] = &[
    "ferry_rate_limit_decisions_total",
    "ferry_breaker_transitions_total",
];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

// ---------------------------------------------------------------------------
// Extraction: expressions from the files, metric names from expressions, and the
// names a scrape exports.
// ---------------------------------------------------------------------------

/// The `expr` of every rule of a Prometheus rules file: a plain or quoted scalar
/// on the key's line, or a block scalar (`|`, `|-`, `>`, `>-`) indented below it.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        i += 1;
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let key_indent = line.len() - trimmed.len();
            let mut block = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let indent = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && indent <= key_indent {
                    break;
                }
                block.push(l.trim());
                i += 1;
            }
            out.push(block.join("\n").trim().to_string());
        } else {
            out.push(unquote(value));
        }
    }
    out
}

fn unquote(value: &str) -> String {
    match value.as_bytes().first() {
        Some(b'"') => serde_json::from_str(value).expect("a double-quoted expr is JSON-like"),
        Some(b'\'') => value.trim_matches('\'').replace("''", "'").to_string(),
        _ => value.to_string(),
    }
}

/// The PromQL of a dashboard: every `expr` of every panel target (nested rows
/// included), and the template variables' queries (Grafana functions such as
/// `label_values(...)`, checked for names only).
fn dashboard_queries(dashboard: &Value) -> (Vec<String>, Vec<String>) {
    fn walk(v: &Value, exprs: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => exprs.push(s.clone()),
                        _ => walk(v, exprs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| var["definition"].as_str().map(str::to_string))
        .collect();
    (exprs, variables)
}

/// The metric names an expression uses: identifiers that start with `ferry_`, and
/// any `process_…` (this exporter prefixes the process collector's metrics with
/// `ferry_`, so a bare one would never match). Quoted strings (label values,
/// regular expressions) are skipped; `up` and other Prometheus-made series are
/// not Ferry's and not checked.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut token = String::new();
    let mut flush = |token: &mut String| {
        if token.starts_with("ferry_") || token.starts_with("process_") {
            names.insert(std::mem::take(token));
        } else {
            token.clear();
        }
    };
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            flush(&mut token);
            let quote = c;
            while let Some(q) = chars.next() {
                if q == '\\' {
                    chars.next();
                } else if q == quote {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            flush(&mut token);
        }
    }
    flush(&mut token);
    names
}

/// The series names a scrape can have: counters and gauges by name, histograms as
/// `_bucket`, `_sum` and `_count` (the bare name of a histogram is no series),
/// summaries by name, `_sum` and `_count`.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                "summary" => {
                    for suffix in ["", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line
                .split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap_or_default();
            if !name.is_empty() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every name used (with where) that the scrape does not export.
fn missing_names(
    used: &BTreeMap<String, BTreeSet<&'static str>>,
    exported: &BTreeSet<String>,
) -> Vec<String> {
    used.iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, files)| {
            let files: Vec<&str> = files.iter().copied().collect();
            format!("{name} (used in {})", files.join(", "))
        })
        .collect()
}

/// Names used by the rules and the dashboard, each with the files using it.
fn used_names(
    alerts: &[String],
    dashboard: &[String],
    variables: &[String],
) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut used: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for (file, exprs) in [
        (ALERTS, alerts),
        (DASHBOARD, dashboard),
        (DASHBOARD, variables),
    ] {
        for expr in exprs {
            for name in metric_names(expr) {
                used.entry(name).or_default().insert(file);
            }
        }
    }
    used
}

#[test]
fn extraction_finds_names_and_catches_a_misspelt_one() {
    let rules = r#"
groups:
  - name: g
    rules:
      - alert: A
        expr: |
          histogram_quantile(0.99, sum by (le) (rate(ferry_publish_ack_second_bucket[5m]))) > 0.25
          and on (instance) up{job="ferry"} == 1
        for: 1m
      - alert: B
        expr: 'ferry_breaker_state{breaker="ferry_not_a_metric"} == 2'
      - alert: C
        expr: process_open_fds / ferry_process_max_fds > 0.8
"#;
    let exprs = rule_expressions(rules);
    assert_eq!(exprs.len(), 3, "{exprs:?}");
    assert!(exprs[0].contains("and on (instance)"), "{}", exprs[0]);
    let scrape = "# HELP ferry_publish_ack_seconds From a publish to its durable ack\n\
                  # TYPE ferry_publish_ack_seconds histogram\n\
                  ferry_publish_ack_seconds_bucket{le=\"0.25\"} 1\n\
                  ferry_publish_ack_seconds_sum 0.1\n\
                  ferry_publish_ack_seconds_count 1\n\
                  # TYPE ferry_breaker_state gauge\n\
                  ferry_breaker_state{breaker=\"database\"} 0\n\
                  # TYPE ferry_process_max_fds gauge\n\
                  ferry_process_max_fds 1024\n\
                  # TYPE ferry_process_open_fds gauge\n\
                  ferry_process_open_fds 10\n";
    let exported = exported_names(scrape);
    let used = used_names(&exprs, &[], &[]);
    let missing = missing_names(&used, &exported);
    // The misspelt histogram, and the process metric without the registry's
    // prefix; not the label value that looks like a metric, nor `up`.
    assert_eq!(
        missing,
        vec![
            format!("ferry_publish_ack_second_bucket (used in {ALERTS})"),
            format!("process_open_fds (used in {ALERTS})"),
        ]
    );
    // Spelt right, it is found; the bare histogram name is no series.
    let fixed = used_names(
        &["rate(ferry_publish_ack_seconds_bucket[5m]) + ferry_publish_ack_seconds".into()],
        &[],
        &[],
    );
    assert_eq!(
        missing_names(&fixed, &exported),
        vec![format!("ferry_publish_ack_seconds (used in {ALERTS})")]
    );
}

// ---------------------------------------------------------------------------
// The drift test against real servers.
// ---------------------------------------------------------------------------

fn metric_value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

async fn scrape(srv: &TestServer) -> String {
    let response = http_get(srv.admin, "/metrics").await.expect("scrape");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Scrapes until `done` holds (or panics after `within`).
async fn scrape_until(srv: &TestServer, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(srv).await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server on SQLite (with `redis` when given), driven through a handshake, a
/// publish and its delivery, a bad request, a protocol violation (close 4010),
/// REST logins and requests, a refused admin key and, with Redis, an outage of
/// Redis (limits fall back, the breaker opens). Returns its scrape.
async fn exercised_server(mut redis: Option<RedisServer>) -> String {
    let db = common::db::TestDb::sqlite().await;
    let redis_url = redis.as_ref().map(RedisServer::url);
    let admin_keys = admin_keys_env("observability-read", "observability-write");
    let mut env = vec![
        ("FERRY_LIMITS_MAX_CONNECTIONS", "12345"),
        ("FERRY_ADMIN_KEYS", admin_keys.as_str()),
    ];
    if let Some(url) = &redis_url {
        env.push(("FERRY_REDIS_URL", url.as_str()));
    }
    let srv = TestServer::start(db.url(), &env).await;
    let api = Api::new(&srv);

    // Two devices of one user: a publish, its ack, its delivery to the other.
    let user = TestUser::random();
    let mut a = connect(&srv.ws_url(), user.device()).await;
    let mut b = connect(&srv.ws_url(), user.device()).await;
    let id = new_event_id();
    match a.request(&publish_json(&id, b"observed")).await {
        ServerMessage::Ack { seq: Some(_), .. } => {}
        other => panic!("expected an ack, got {other:?}"),
    }
    loop {
        match b.recv().await {
            ServerMessage::Event(e) if e.id == id => break,
            _ => continue,
        }
    }
    // A bad request (an `error` reply), then a protocol violation (close 4010).
    match a
        .request(r#"{"type":"publish","id":"not-a-uuid","payload":"eA"}"#)
        .await
    {
        ServerMessage::Error { .. } => {}
        other => panic!("expected an error, got {other:?}"),
    }
    b.ws.send(Message::text("not sealed")).await.unwrap();
    assert_eq!(expect_close(&mut b.ws).await, Closed::Code(4010));

    // REST: a login, an authenticated request, a refused admin key, an admin
    // request with a good one.
    let tokens = login(&api, &user.device()).await;
    api.get("/v1/me", Some(&tokens.access)).await.ok();
    let refused = api
        .admin(Method::GET, "/admin/v1/stats", Some("not-a-key"))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    api.admin(Method::GET, "/admin/v1/stats", Some("observability-read"))
        .await
        .ok();

    // Redis goes away: REST requests' per-IP limits fall back to local decisions
    // and the redis breaker opens.
    if let Some(r) = redis.as_mut() {
        scrape_until(&srv, Duration::from_secs(10), |m| {
            m.contains("ferry_rate_limit_decisions_total{source=\"shared\"}")
        })
        .await;
        r.stop().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            api.get("/.well-known/ferry", None).await;
            let m = scrape(&srv).await;
            if m.contains("ferry_breaker_transitions_total{breaker=\"redis\",to=\"open\"}") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the redis breaker never opened:\n{m}"
            );
        }
    }
    let text = scrape(&srv).await;
    assert_eq!(
        metric_value(&text, "ferry_limits_max_connections"),
        Some(12345.0),
        "{text}"
    );
    drop(a);
    if let Some(r) = redis.as_mut() {
        r.resume().await;
    }
    srv.stop().await;
    db.finish("observability").await;
    text
}

/// A server that terminates TLS itself, and a client that speaks no TLS to it
/// (a refused connection). Returns its scrape.
async fn tls_server() -> String {
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let db = common::db::TestDb::sqlite().await;
    let (cert, key) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let srv = TestServer::start(
        db.url(),
        &[("FERRY_TLS_CERT", &cert), ("FERRY_TLS_KEY", &key)],
    )
    .await;
    let mut plain = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    plain
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = scrape_until(&srv, Duration::from_secs(10), |m| {
        m.contains("ferry_connections_refused_total{reason=\"tls\"}")
    })
    .await;
    drop(plain);
    srv.stop().await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_use_only_exported_metrics() {
    let alerts = read(ALERTS);
    let alert_exprs = rule_expressions(&alerts);
    let rules = alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(alert_exprs.len(), rules, "one expr per alert rule");
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let (dashboard_exprs, variables) = dashboard_queries(&dashboard);
    assert!(dashboard_exprs.len() > 20, "{dashboard_exprs:?}");
    let used = used_names(&alert_exprs, &dashboard_exprs, &variables);

    let redis = RedisServer::start().await;
    let with_redis = redis.is_some();
    let main = exercised_server(redis).await;
    let tls = tls_server().await;
    let exported = exported_names(&format!("{main}\n{tls}"));

    let mut missing = missing_names(&used, &exported);
    let mut unchecked = 0;
    if !with_redis {
        let before = missing.len();
        missing.retain(|m| !NEEDS_REDIS.iter().any(|n| m.starts_with(&format!("{n} "))));
        unchecked = before - missing.len();
        eprintln!("redis-server not installed: not checked: {NEEDS_REDIS:?}");
    }
    assert!(
        missing.is_empty(),
        "metric names used by the rules or the dashboard that the server does not export:\n  {}",
        missing.join("\n  ")
    );
    eprintln!(
        "{} metric names used by {ALERTS} and {DASHBOARD}: {} exported, {unchecked} not checked",
        used.len(),
        used.len() - unchecked
    );
}

// ---------------------------------------------------------------------------
// promtool: the rules, their tests, and the dashboard's expressions parse.
// ---------------------------------------------------------------------------

/// Whether `promtool` is installed; with `CI` set, its absence fails the test.
fn promtool_available() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed: deploy/prometheus/check installs it (Debian's prometheus package)"
        );
        eprintln!("promtool not installed: skipping the promtool checks");
    }
    found
}

fn promtool(args: &[&str], dir: &Path) -> Result<String, String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The dashboard's expressions as PromQL: Grafana's interval variables become a
/// duration and `$instance` a regular expression.
fn dashboard_promql(expr: &str) -> String {
    let promql = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*");
    assert!(
        !promql.contains('$'),
        "unknown template variable in a dashboard expression: {expr}"
    );
    promql
}

/// A rules file with one recording rule per expression, for `promtool check rules`.
fn recording_rules(exprs: &[String]) -> String {
    let mut out = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        out.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    out
}

#[test]
fn rules_tests_and_dashboard_expressions_parse() {
    if !promtool_available() {
        return;
    }
    let root = repo_path(".");
    promtool(&["check", "rules", ALERTS], &root).unwrap_or_else(|e| panic!("{ALERTS}:\n{e}"));
    promtool(&["test", "rules", ALERT_TESTS], &root)
        .unwrap_or_else(|e| panic!("{ALERT_TESTS}:\n{e}"));

    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let (exprs, _) = dashboard_queries(&dashboard);
    let promql: Vec<String> = exprs.iter().map(|e| dashboard_promql(e)).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), recording_rules(&promql)).unwrap();
    let out = promtool(&["check", "rules", "dashboard.yml"], dir.path())
        .unwrap_or_else(|e| panic!("{DASHBOARD}: an expression does not parse:\n{e}"));
    assert!(
        out.contains(&format!("{} rules found", promql.len())),
        "{out}"
    );

    // The check fails on an expression that does not parse.
    std::fs::write(
        dir.path().join("broken.yml"),
        recording_rules(&["sum by (le (rate(ferry_publish_ack_seconds_bucket[5m]))".into()]),
    )
    .unwrap();
    assert!(promtool(&["check", "rules", "broken.yml"], dir.path()).is_err());
}
