// soak.js: long, low-rate publishing between devices (as relay.js, slower), while a
// second scenario scrapes the relay's Prometheus endpoint to watch its footprint over
// time: process_resident_memory_bytes when exported, else ferry_sessions_live.
//
//   k6 run -e FERRY_KEYS=/abs/keys.json -e FERRY_SERVER_KEY=<b64u> -e DURATION=30m soak.js
//
// Env: FERRY_URL, FERRY_KEYS, FERRY_SERVER_KEY, FERRY_METRICS_URL
// (http://127.0.0.1:9090/metrics), VUS (6), RATE publishes/s per VU (1), DURATION
// (30m), SCRAPE_EVERY seconds (10), P99_MS (250), MAX_RSS_GROWTH_MB (unset: no bound;
// only meaningful when the relay exports process_resident_memory_bytes).
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  devicesPerUser,
  driveRelay,
  durationMs,
  env,
  envNum,
  loadDevices,
  relayMetrics,
  warmUpVu,
} from './lib/common.js';

const devices = loadDevices();
const VUS = envNum('VUS', 6);
const RATE = envNum('RATE', 1);
const DURATION = durationMs(env('DURATION', '30m'));
const WARMUP = durationMs(env('WARMUP', '3s'));
const DRAIN = durationMs(env('DRAIN', '3s'));
const METRICS_URL = env('FERRY_METRICS_URL', 'http://127.0.0.1:9090/metrics');
const SCRAPE_EVERY = envNum('SCRAPE_EVERY', 10);
const P99 = envNum('P99_MS', 250);
const MAX_GROWTH_MB = env('MAX_RSS_GROWTH_MB', undefined);

if (VUS > devices.length) {
  throw new Error(`VUS=${VUS} but the key file has ${devices.length} devices; one VU per device`);
}
if (![...devicesPerUser(devices).values()].some((n) => n > 1)) {
  throw new Error('every user has one device: nothing would be relayed');
}
warmUpVu();

const m = relayMetrics();
const rss = new Trend('ferry_server_rss_bytes');
const rssGrowth = new Trend('ferry_server_rss_growth_bytes');
const sessionsLive = new Trend('ferry_server_sessions_live');
const scrapeFailures = new Counter('ferry_scrape_failures');

const thresholds = {
  ferry_delivery_ms: [`p(99)<${P99}`],
  ferry_ack_ms: [`p(99)<${P99}`],
  ferry_errors: ['count<1'],
  ferry_delivered: ['count>0'],
  ferry_scrape_failures: ['count<1'],
  checks: ['rate>0.99'],
};
if (MAX_GROWTH_MB !== undefined) thresholds.ferry_server_rss_growth_bytes = [`max<${Number(MAX_GROWTH_MB) * 1048576}`];

export const options = {
  scenarios: {
    relay: {
      executor: 'per-vu-iterations',
      exec: 'relay',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil((WARMUP + DURATION + DRAIN) / 1000) + 30}s`,
    },
    scrape: {
      executor: 'constant-arrival-rate',
      exec: 'scrape',
      rate: 1,
      timeUnit: `${SCRAPE_EVERY}s`,
      duration: `${Math.ceil((WARMUP + DURATION) / 1000)}s`,
      preAllocatedVUs: 1,
      maxVUs: 1,
    },
  },
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
};

export async function relay() {
  await driveRelay({
    devices,
    index: __VU - 1,
    m,
    rate: RATE,
    runMs: DURATION,
    warmupMs: WARMUP,
    drainMs: DRAIN,
    payloadSize: envNum('PAYLOAD', 256),
  });
}

/** The value of an unlabelled (or first labelled) sample of `name` in Prometheus text, or undefined. */
export function promValue(text, name) {
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const value = Number(rest.replace(/^\{[^}]*\}/, '').trim().split(/\s+/)[0]);
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

let firstRss;

export function scrape() {
  const res = http.get(METRICS_URL, { tags: { name: 'metrics' }, timeout: '5s' });
  const ok = check(res, { 'metrics endpoint answers 200': (r) => r.status === 200 });
  if (!ok) {
    scrapeFailures.add(1);
    return;
  }
  scrapeFailures.add(0);
  const body = String(res.body);
  const mem = promValue(body, 'process_resident_memory_bytes');
  if (mem !== undefined) {
    rss.add(mem);
    if (firstRss === undefined) firstRss = mem;
    rssGrowth.add(mem - firstRss);
    return;
  }
  const live = promValue(body, 'ferry_sessions_live');
  const found = check(live, { 'metrics expose process_resident_memory_bytes or ferry_sessions_live': (v) => v !== undefined });
  if (found) sessionsLive.add(live);
}
