// Figures for one Node client against a running relay:
//   - handshake time: socket open to auth_ok, one connection at a time;
//   - publish→ack throughput: one client with `--window` publishes in flight.
//
//   node build/bench/node-bench.js --url ws://127.0.0.1:PORT/v1/ws --server-key B64U \
//        [--events 20000] [--window 64] [--payload 256] [--handshakes 50] [--aead auto|noble|node-crypto]
//
// Prints one JSON object. bench/compare.sh runs it next to the Rust SDK's.
import { createCipheriv, createDecipheriv } from 'node:crypto';

import WebSocket from 'ws';

import {
  type AeadBackend,
  Client,
  Connection,
  DeviceKey,
  UserKey,
  type WebSocketConstructor,
  b64uDecode,
  pinKey,
} from '../src/index.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

const url = arg('url', '');
const serverKey = arg('server-key', '');
if (!url || !serverKey) {
  console.error('usage: node-bench --url ws://HOST:PORT/v1/ws --server-key B64U [--events N] [--window W] [--payload B] [--handshakes N] [--aead auto|noble|node-crypto]');
  process.exit(2);
}
const events = Number(arg('events', '20000'));
const window = Number(arg('window', '64'));
const payloadSize = Number(arg('payload', '256'));
const handshakes = Number(arg('handshakes', '50'));
const aeadName = arg('aead', 'auto');
// `node-crypto`: an application-supplied AES-GCM over node:crypto (synchronous),
// to show what the per-frame cost of Node's WebCrypto is.
const nodeCryptoAead: AeadBackend = (key) => ({
  name: 'node-crypto',
  seal(nonce, plaintext) {
    const c = createCipheriv('aes-256-gcm', key, nonce);
    const out = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
    return Promise.resolve(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  },
  open(nonce, frame) {
    if (frame.length < 16) return Promise.resolve(null);
    try {
      const d = createDecipheriv('aes-256-gcm', key, nonce);
      d.setAuthTag(frame.subarray(frame.length - 16));
      const out = Buffer.concat([d.update(frame.subarray(0, frame.length - 16)), d.final()]);
      return Promise.resolve(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    } catch {
      return Promise.resolve(null);
    }
  },
});
const aead: AeadBackend = aeadName === 'node-crypto' ? nodeCryptoAead : (aeadName as AeadBackend);
const WS = WebSocket as unknown as WebSocketConstructor;
const pin = pinKey(b64uDecode(serverKey, 32));

const user = UserKey.generate();
const device = DeviceKey.generate();
const credentials = device.credentials(user.public(), user.certify(device.public(), Math.floor(Date.now() / 1000) - 60, 0));

// Handshakes (the first five warm up the JIT and @noble's tables).
const times: number[] = [];
const protocol: number[] = [];
for (let i = 0; i < handshakes + 5; i++) {
  const { connection } = await Connection.connect(url, credentials, pin, { WebSocket: WS, aead });
  const t = connection.timings;
  if (i >= 5) {
    times.push(t.authOk! - t.started);
    protocol.push(t.authOk! - t.opened!);
  }
  await connection.close();
}
times.sort((a, b) => a - b);
protocol.sort((a, b) => a - b);

// Publish → ack with `window` in flight.
const client = await Client.connect({ url, credentials, pin, WebSocket: WS, aead });
const payload = new Uint8Array(payloadSize).fill(0x5a);
const latencies: number[] = [];
let next = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: window }, async () => {
    while (next < events) {
      next++;
      const s = performance.now();
      await client.publish(payload);
      latencies.push(performance.now() - s);
    }
  }),
);
const secs = (performance.now() - t0) / 1000;
latencies.sort((a, b) => a - b);
const backend = client.aeadBackend;
await client.close();

console.log(
  JSON.stringify({
    client: 'typescript',
    node: process.version,
    aead: backend,
    // Connect: new WebSocket to auth_ok. Handshake: socket open to auth_ok.
    handshake_ms: { median: pct(times, 0.5), p90: pct(times, 0.9), samples: times.length },
    handshake_after_open_ms: { median: pct(protocol, 0.5), p90: pct(protocol, 0.9) },
    publish: {
      events,
      window,
      payload: payloadSize,
      secs,
      events_per_sec: events / secs,
      ack_ms: { p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), max: latencies[latencies.length - 1] },
    },
  }),
);
