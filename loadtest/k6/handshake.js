// handshake.js: new sessions at a fixed arrival rate; each does the full handshake
// (client_hello … auth_ok) and closes. Measures handshake latency and counts failures
// by reason (close code or local check).
//
//   k6 run -e FERRY_KEYS=/abs/keys.json -e FERRY_SERVER_KEY=<b64u> handshake.js
//
// Iteration n uses device n mod (number of devices). A device has one session at a
// time (a newer one closes the older with 4011), so give the key file at least
// RATE × (handshake time) devices — e.g. `ferry-load keys --users 10 --devices 5`.
//
// Env: FERRY_URL, FERRY_KEYS, FERRY_SERVER_KEY, RATE handshakes/s (10), DURATION (10s),
// PRE_VUS (5), MAX_VUS (10), P95_MS bound on handshake time (1000).
// Each handshake costs the k6 side ≈100 ms of JS crypto, so one k6 core drives ≈10/s.
import exec from 'k6/execution';
import { durationMs, env, envNum, handshakeMetrics, loadDevices, warmUpVu, openSession } from './lib/common.js';

const devices = loadDevices();
warmUpVu();
const RATE = envNum('RATE', 10);
const DURATION = env('DURATION', '10s');
const P95 = envNum('P95_MS', 1000);
durationMs(DURATION); // validate early

const hm = handshakeMetrics();

export const options = {
  scenarios: {
    handshakes: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: envNum('PRE_VUS', 5),
      maxVUs: envNum('MAX_VUS', 10),
      gracefulStop: '15s',
    },
  },
  thresholds: {
    ferry_handshake_ok: ['rate>0.99'],
    // Listed so the summary breaks failures down by close code / local reason.
    'ferry_handshake_failures{reason:close_4001}': ['count<1'],
    'ferry_handshake_failures{reason:close_4002}': ['count<1'],
    'ferry_handshake_failures{reason:close_4008}': ['count<1'],
    'ferry_handshake_failures{reason:close_1006}': ['count<1'],
    'ferry_handshake_failures{reason:timeout}': ['count<1'],
    ferry_handshake_ms: [`p(95)<${P95}`],
    ferry_errors: ['count<1'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default async function () {
  const entry = devices[exec.scenario.iterationInTest % devices.length];
  const session = await openSession(entry, hm);
  if (session) session.close(1000);
}
