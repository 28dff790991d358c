// Shared pieces of the k6 scripts: settings from __ENV, the key file, metrics, and the
// publish/relay driver used by relay.js and soak.js.

import { check } from 'k6';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter, Rate, Trend } from 'k6/metrics';
import { b64uDecode, FerrySession, identityOf, parseKeys, randomBytes, u64be, warmUpCrypto } from './ferry.js';

/** `__ENV[name]` or `def`. */
export function env(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

/** `__ENV[name]` as a number, or `def`; throws on garbage so typos don't go unnoticed. */
export function envNum(name, def) {
  const v = env(name, undefined);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

/** Parses a k6-style duration ("500ms", "10s", "2m", "1h", or plain seconds) into ms. */
export function durationMs(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(text).trim());
  if (!m) throw new Error(`bad duration ${text}`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] || 's'];
  return Math.round(n * unit);
}

/** The relay's WebSocket URL. */
export const URL = env('FERRY_URL', 'ws://127.0.0.1:8080/v1/ws');

/**
 * The devices of the key file named by FERRY_KEYS (default `keys.json`), flattened in
 * file order (user 0's devices, then user 1's, …). Call from the init context only.
 * A relative path is resolved by k6 against the script's directory; pass an absolute
 * path to be sure.
 */
export function loadDevices() {
  const path = env('FERRY_KEYS', 'keys.json');
  return new SharedArray('ferry devices', () => parseKeys(open(path)));
}

/** How many devices each user in the list has. */
export function devicesPerUser(devices) {
  const n = new Map();
  for (let i = 0; i < devices.length; i++) n.set(devices[i].userIndex, (n.get(devices[i].userIndex) || 0) + 1);
  return n;
}

/**
 * Call in a script's init context: builds @noble's tables once per VU (≈1 s of JS) before
 * the test starts, so no measured handshake pays for it. VU 0 (k6 reading the options)
 * skips it.
 */
export function warmUpVu() {
  if (__VU > 0) warmUpCrypto();
}

/** Sleeps `ms` inside an async function. */
export function sleepMs(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

// ---------------------------------------------------------------------------
// Relay traffic (relay.js, soak.js)

/** Metrics of the relay driver; create once in the init context of a script. */
export function relayMetrics() {
  return {
    delivery: new Trend('ferry_delivery_ms', true),
    ack: new Trend('ferry_ack_ms', true),
    handshake: new Trend('ferry_handshake_ms', true),
    errors: new Counter('ferry_errors'),
    published: new Counter('ferry_published'),
    acked: new Counter('ferry_acked'),
    delivered: new Counter('ferry_delivered'),
  };
}

/** Payload: u64be(send time, ms) || u64be(publisher index) || random filler. */
export function makePayload(size, publisher) {
  const p = randomBytes(Math.max(16, size));
  p.set(u64be(Date.now()), 0);
  p.set(u64be(publisher), 8);
  return p;
}

/** The send time written by `makePayload`, or NaN if the payload is too short. */
export function payloadSentAt(payload) {
  if (payload.length < 16) return NaN;
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return v.getUint32(0) * 0x100000000 + v.getUint32(4);
}

/**
 * One VU's share of the relay test: device `index` of `devices` connects, waits for
 * the common start (scenario start + warmupMs, so every device is online), publishes
 * `rate` payloads per second for `runMs`, waits up to `drainMs` for outstanding acks,
 * and closes. Every ack feeds ferry_ack_ms; every event from a sibling device feeds
 * ferry_delivery_ms; anything unexpected feeds ferry_errors{kind}.
 *
 * It also checks the user's log as this device sees it: events arrive in strictly
 * ascending seq (else `out_of_order`), and the seqs of its own acks together with
 * the events it received leave no hole (else `gap`, one per missing seq), since
 * every event of the user is either its own or relayed to it.
 */
export async function driveRelay({ devices, index, m, rate, runMs, warmupMs, drainMs, payloadSize }) {
  const entry = devices[index];
  const identity = identityOf(entry);
  const errors = (kind) => m.errors.add(1, { kind });
  m.errors.add(0); // so the threshold has a sample even when nothing goes wrong
  m.delivered.add(0);
  const seqs = new Set(); // own acked seqs and received event seqs
  let lastEventSeq = 0;
  const session = new FerrySession(URL, identity, {
    onAck: (msg, sentAt) => {
      const ok = check(msg, { 'publish acked with a seq': (a) => typeof a.seq === 'number' && a.seq > 0 });
      if (ok) {
        m.acked.add(1);
        seqs.add(msg.seq);
      }
      if (sentAt !== undefined) m.ack.add(Date.now() - sentAt);
    },
    onEvent: (ev) => {
      const now = Date.now();
      let payload;
      try {
        payload = b64uDecode(ev.payload);
      } catch (_) {
        errors('bad_event_payload');
        return;
      }
      const sentAt = payloadSentAt(payload);
      check(ev, { 'event comes from a sibling device': (e) => e.device !== entry.device && typeof e.seq === 'number' });
      if (Number.isFinite(sentAt)) m.delivery.add(now - sentAt);
      m.delivered.add(1);
      if (typeof ev.seq === 'number') {
        if (ev.seq <= lastEventSeq) errors('out_of_order');
        lastEventSeq = Math.max(lastEventSeq, ev.seq);
        seqs.add(ev.seq);
      }
    },
    onConflict: () => errors('conflict'),
    onError: (msg) => errors(msg.code || 'error'),
    onFailure: (kind) => errors(kind),
    onClose: ({ code, expected }) => {
      if (!expected) errors(`close_${code}`);
    },
  });

  const t0 = Date.now();
  try {
    await session.connect();
  } catch (e) {
    check(null, { 'handshake ok': () => false });
    errors(`handshake_${e.code || 'error'}`);
    return;
  }
  check(null, { 'handshake ok': () => true });
  m.handshake.add(Date.now() - t0);

  // Everyone starts publishing together, after every VU had time to connect.
  const start = Math.max(Date.now(), exec.scenario.startTime + warmupMs);
  const end = start + runMs;
  const period = 1000 / rate;
  await sleepMs(start - Date.now() + Math.random() * period);

  await new Promise((resolve) => {
    const timer = setInterval(() => {
      if (Date.now() >= end || !session.isOpen) {
        clearInterval(timer);
        resolve();
        return;
      }
      session.publish(makePayload(payloadSize, index));
      m.published.add(1);
    }, period);
  });

  // Drain: replies still on the way, and events other devices published late.
  const drainEnd = Date.now() + drainMs;
  while (session.isOpen && session.outstanding > 0 && Date.now() < drainEnd) await sleepMs(50);
  if (session.isOpen && session.outstanding > 0) {
    m.errors.add(session.outstanding, { kind: 'no_reply' });
  }
  // Give siblings' last events a moment before leaving (their delivery is measured here).
  await sleepMs(Math.min(500, Math.max(0, drainEnd - Date.now())));
  session.close(1000);
  if (seqs.size > 0) {
    let lo = Infinity;
    let hi = 0;
    for (const s of seqs) {
      lo = Math.min(lo, s);
      hi = Math.max(hi, s);
    }
    const missing = hi - lo + 1 - seqs.size;
    if (missing > 0) m.errors.add(missing, { kind: 'gap' });
  }
}

// ---------------------------------------------------------------------------
// Handshakes (handshake.js, spike.js)

/** Metrics of session set-up; create once in the init context of a script. */
export function handshakeMetrics() {
  return {
    handshake: new Trend('ferry_handshake_ms', true), // new WebSocket → auth_ok
    connect: new Trend('ferry_ws_connect_ms', true), // new WebSocket → open (TCP + upgrade)
    ok: new Rate('ferry_handshake_ok'),
    failures: new Counter('ferry_handshake_failures'), // tag reason: close_4002, timeout, …
    closes: new Counter('ferry_unexpected_closes'), // after auth_ok, not by us; tag code
    errors: new Counter('ferry_errors'),
  };
}

/**
 * Opens an authenticated session for `entry`, recording ferry_handshake_ms and, on
 * failure, ferry_handshake_failures{reason}. Resolves to the session or null. `opts`
 * go to FerrySession (onPong, …).
 */
export async function openSession(entry, hm, opts = {}) {
  hm.failures.add(0);
  hm.closes.add(0);
  hm.errors.add(0);
  const session = new FerrySession(URL, identityOf(entry), {
    onError: (msg) => hm.errors.add(1, { kind: msg.code || 'error' }),
    onFailure: (kind) => hm.errors.add(1, { kind }),
    ...opts,
    onClose: (info) => {
      if (info.authenticated && !info.expected) hm.closes.add(1, { code: String(info.code) });
      if (opts.onClose) opts.onClose(info);
    },
  });
  const t0 = Date.now();
  try {
    await session.connect();
  } catch (e) {
    hm.ok.add(false);
    hm.failures.add(1, { reason: e.code || 'error' });
    check(null, { 'handshake ok': () => false });
    return null;
  }
  hm.ok.add(true);
  hm.handshake.add(Date.now() - t0);
  if (session.timings.open) hm.connect.add(session.timings.open - t0);
  check(null, { 'handshake ok': () => true });
  return session;
}
