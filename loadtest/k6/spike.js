// spike.js: a sudden surge of connections. A few devices stay connected, then within
// SPIKE_RAMP the number of connected devices jumps to PEAK, holds, and drops. Each VU
// is one device that repeatedly connects, holds its session for HOLD (pinging every
// second), and closes — so the surge also means a burst of handshakes.
//
//   k6 run -e FERRY_KEYS=/abs/keys.json -e FERRY_SERVER_KEY=<b64u> spike.js
//
// VU i is device i-1 of the key file, so PEAK must not exceed the number of devices
// (`ferry-load keys --users 10 --devices 5` gives 50).
//
// Env: FERRY_URL, FERRY_KEYS, FERRY_SERVER_KEY, PEAK (all devices, at most 50), BASE
// (PEAK/10, at least 1), BEFORE (5s), SPIKE_RAMP (2s), AT_PEAK (10s), HOLD session
// length (5s), P95_MS bound on handshake time (2000), PONG_P95_MS (500).
import {
  durationMs,
  env,
  envNum,
  handshakeMetrics,
  loadDevices,
  openSession,
  sleepMs,
  warmUpVu,
} from './lib/common.js';
import { Trend } from 'k6/metrics';

const devices = loadDevices();
const PEAK = envNum('PEAK', Math.min(devices.length, 50));
const BASE = envNum('BASE', Math.max(1, Math.floor(PEAK / 10)));
const HOLD = durationMs(env('HOLD', '5s'));
if (PEAK > devices.length) {
  throw new Error(`PEAK=${PEAK} but the key file has ${devices.length} devices; one VU per device`);
}
warmUpVu();

const hm = handshakeMetrics();
const pong = new Trend('ferry_pong_ms', true);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: BASE,
      stages: [
        { duration: env('BEFORE', '5s'), target: BASE },
        { duration: env('SPIKE_RAMP', '2s'), target: PEAK },
        { duration: env('AT_PEAK', '10s'), target: PEAK },
        { duration: '2s', target: 0 },
      ],
      gracefulRampDown: `${Math.ceil(HOLD / 1000) + 15}s`,
    },
  },
  thresholds: {
    ferry_handshake_ok: ['rate>0.99'],
    ferry_handshake_ms: [`p(95)<${envNum('P95_MS', 2000)}`],
    ferry_pong_ms: [`p(95)<${envNum('PONG_P95_MS', 500)}`],
    ferry_unexpected_closes: ['count<1'],
    ferry_errors: ['count<1'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default async function () {
  const session = await openSession(devices[__VU - 1], hm, {
    onPong: (_msg, sentAt) => {
      if (sentAt !== undefined) pong.add(Date.now() - sentAt);
    },
  });
  if (!session) {
    await sleepMs(1000); // don't hammer a refusing server from a failed VU
    return;
  }
  const end = Date.now() + HOLD;
  while (session.isOpen && Date.now() < end) {
    session.ping();
    await sleepMs(Math.min(1000, end - Date.now()));
  }
  // Let the last pong arrive before leaving.
  const drainEnd = Date.now() + 2000;
  while (session.isOpen && session.outstanding > 0 && Date.now() < drainEnd) await sleepMs(20);
  session.close(1000);
}
