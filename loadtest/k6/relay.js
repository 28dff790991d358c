// relay.js: steady publishing between devices of the same users; measures publish→ack
// and publish→delivery latency at the other devices.
//
//   k6 run -e FERRY_KEYS=/abs/keys.json -e FERRY_SERVER_KEY=<b64u> relay.js
//
// VU i (1-based) is device i-1 of the key file (flattened: user 0's devices first), so
// VUS must not exceed the number of devices; with several devices per user every
// publish is relayed to the user's other online devices.
//
// Env: FERRY_URL, FERRY_KEYS, FERRY_SERVER_KEY (unset: trust on first use), VUS (6),
// RATE publishes/s per VU (5), DURATION (10s), WARMUP (3s), DRAIN (3s), PAYLOAD bytes
// (256), P99_MS latency bound for both thresholds (250).
import { devicesPerUser, driveRelay, durationMs, env, envNum, loadDevices, warmUpVu, relayMetrics } from './lib/common.js';

const devices = loadDevices();
warmUpVu();
const VUS = envNum('VUS', 6);
const RATE = envNum('RATE', 5);
const DURATION = durationMs(env('DURATION', '10s'));
const WARMUP = durationMs(env('WARMUP', '3s'));
const DRAIN = durationMs(env('DRAIN', '3s'));
const PAYLOAD = envNum('PAYLOAD', 256);
const P99 = envNum('P99_MS', 250);

if (VUS > devices.length) {
  throw new Error(`VUS=${VUS} but the key file has ${devices.length} devices; one VU per device`);
}
if (RATE <= 0) throw new Error('RATE must be positive');
if (![...devicesPerUser(devices).values()].some((n) => n > 1)) {
  throw new Error('every user has one device: nothing would be relayed (use ferry-load keys --devices 2 or more)');
}

const m = relayMetrics();

export const options = {
  scenarios: {
    relay: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil((WARMUP + DURATION + DRAIN) / 1000) + 30}s`,
    },
  },
  thresholds: {
    ferry_delivery_ms: [`p(99)<${P99}`],
    ferry_ack_ms: [`p(99)<${P99}`],
    ferry_errors: ['count<1'],
    ferry_delivered: ['count>0'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default async function () {
  await driveRelay({
    devices,
    index: __VU - 1,
    m,
    rate: RATE,
    runMs: DURATION,
    warmupMs: WARMUP,
    drainMs: DRAIN,
    payloadSize: PAYLOAD,
  });
}
