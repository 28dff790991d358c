//! `ferry-sdk-publish-bench --url URL --server-key B64U [--events N] [--window W]
//! [--payload B] [--handshakes N]`: handshake time (socket open to `auth_ok`, one
//! connection at a time) and publish→ack throughput of one Rust SDK client with `W`
//! publishes in flight. Prints one JSON object, like `bench/node-bench.ts`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_client::{
    Client, ClientOptions, Connection, DeviceKey, PublishOptions, ServerPin, UserKey,
};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn b64u_decode32(text: &str) -> [u8; 32] {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::with_capacity(32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).expect("b64u") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out.try_into().expect("32 bytes")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let url = arg("url", "");
    let server_key = b64u_decode32(&arg("server-key", ""));
    let events: u64 = arg("events", "20000").parse().expect("--events");
    let window: u64 = arg("window", "64").parse().expect("--window");
    let payload_size: usize = arg("payload", "256").parse().expect("--payload");
    let handshakes: usize = arg("handshakes", "50").parse().expect("--handshakes");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let user = UserKey::generate();
    let device = DeviceKey::generate();
    let creds = device.credentials(user.public(), user.certify(&device.public(), now - 60, 0));
    let pin = ServerPin::Key(server_key);

    let mut times = Vec::new();
    for i in 0..handshakes + 5 {
        let t0 = Instant::now();
        let (conn, _) = Connection::connect(&url, creds.clone(), pin, None)
            .await
            .expect("handshake");
        let dt = t0.elapsed().as_secs_f64() * 1000.0;
        if i >= 5 {
            times.push(dt);
        }
        conn.close().await;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());

    let client = Client::connect(ClientOptions::new(url.clone(), creds, pin))
        .await
        .expect("connect");
    let next = Arc::new(AtomicU64::new(0));
    let payload = vec![0x5au8; payload_size];
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..window {
        let (client, next, payload) = (client.clone(), next.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < events {
                let s = Instant::now();
                client
                    .publish(payload.clone(), PublishOptions::default())
                    .await
                    .expect("publish");
                lat.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let secs = t0.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    client.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!(
        "{{\"client\":\"rust\",\"handshake_ms\":{{\"median\":{:.3},\"p90\":{:.3},\"samples\":{}}},\
         \"publish\":{{\"events\":{events},\"window\":{window},\"payload\":{payload_size},\"secs\":{secs:.3},\
         \"events_per_sec\":{:.1},\"ack_ms\":{{\"p50\":{:.3},\"p99\":{:.3},\"max\":{:.3}}}}}}}",
        pct(&times, 0.5),
        pct(&times, 0.9),
        times.len(),
        events as f64 / secs,
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
}
