// The client's side of protocol violations and dead connections, against an
// in-process server made of the core's ServerHandshake over the `ws` package (the
// real relay never misbehaves this way, so these cases need a fake one).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { WebSocketServer, type WebSocket as ServerSocket } from 'ws';

import {
  ClosedError,
  Connection,
  DeviceKey,
  type Established,
  FIRST_USE,
  HandshakeError,
  ProtocolError,
  ServerHandshake,
  TransportError,
  UserKey,
  authOkMessage,
  fromUtf8,
  pinKey,
  randomEphemeral,
} from '../../src/index.js';
import { NodeWebSocket } from '../integration/harness.js';

type Behaviour = 'normal' | 'tamper' | 'text-after' | 'silent' | 'wrong-auth-ok' | 'refuse-version' | 'wrong-key';

const SEED = new Uint8Array(32).fill(7);
const LIMITS = { max_payload: 65536, max_ttl: 2592000, events_per_sec: 200, burst: 400 };
let wss: WebSocketServer;
let url: string;
let behaviour: Behaviour = 'normal';
const seen: { pings: number; closeCode: number | null } = { pings: 0, closeCode: null };

function serve(ws: ServerSocket): void {
  const hs = new ServerHandshake(behaviour === 'wrong-key' ? new Uint8Array(32).fill(8) : SEED, randomEphemeral(), 'noble');
  let session: Established | null = null;
  const mode = behaviour;
  ws.on('close', (code) => {
    seen.closeCode = code;
  });
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const text = (data as Buffer).toString('utf8');
      if (hs.state === 'awaitHello') {
        if (mode === 'refuse-version') {
          ws.send(JSON.stringify({ type: 'error', code: 'unsupported_version', message: 'no', supported: [1] }));
          ws.close(4001);
          return;
        }
        ws.send(hs.handleClientHello(text));
        return;
      }
      hs.handleClientAuth(text, Math.floor(Date.now() / 1000));
      session = hs.handleDeviceCheck(false);
      if (mode === 'wrong-auth-ok') {
        const msg = JSON.parse(authOkMessage(session, 0, Date.now(), LIMITS)) as Record<string, unknown>;
        ws.send(session.sealer.sealSync(JSON.stringify({ ...msg, session: 'AAAAAAAAAAAAAAAAAAAAAA' })));
        return;
      }
      ws.send(session.sealer.sealSync(authOkMessage(session, 0, Date.now(), LIMITS)));
      if (mode === 'tamper') {
        const frame = session.sealer.sealSync('{"type":"presence","device":"x","online":true,"ts":1}');
        frame[0] = frame[0]! ^ 1;
        ws.send(frame);
      }
      if (mode === 'text-after') ws.send('{"type":"pong"}');
      return;
    }
    if (!session) return;
    const msg = JSON.parse(fromUtf8(session.opener.openSync(new Uint8Array(data as Buffer)))) as { type: string; rid?: unknown };
    if (msg.type === 'ping') {
      seen.pings++;
      if (mode !== 'silent') ws.send(session.sealer.sealSync(JSON.stringify({ type: 'pong', rid: msg.rid, server_time: Date.now() })));
    }
  });
}

before(async () => {
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  wss.on('connection', serve);
  await new Promise((r) => wss.once('listening', r));
  const addr = wss.address();
  url = `ws://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/v1/ws`;
});

after(async () => {
  for (const c of wss.clients) c.terminate();
  await new Promise((r) => wss.close(r));
});

function creds() {
  const user = UserKey.generate();
  const device = DeviceKey.generate();
  return device.credentials(user.public(), user.certify(device.public(), Math.floor(Date.now() / 1000) - 60, 0));
}

const connect = (opts: { keepaliveMs?: number } = {}) =>
  Connection.connect(url, creds(), pinKey(DeviceKey.fromSeed(SEED).public()), { WebSocket: NodeWebSocket, ...opts });

test('a normal session against the state-machine server', async () => {
  behaviour = 'normal';
  const { connection, authOk } = await connect();
  assert.equal(authOk.head, 0);
  const pong = await connection.request({ type: 'ping' });
  assert.equal(pong.type, 'pong');
  await connection.close();
  assert.equal(connection.closeReason?.kind, 'shutdown');
});

test('a frame that does not open ends the session with 4010', async () => {
  behaviour = 'tamper';
  seen.closeCode = null;
  const { connection } = await connect();
  const why = await connection.closed;
  assert.ok(why instanceof ProtocolError, String(why));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(seen.closeCode, 4010);
});

test('a text frame after the handshake ends the session with 4010', async () => {
  behaviour = 'text-after';
  seen.closeCode = null;
  const { connection } = await connect();
  const why = await connection.closed;
  assert.ok(why instanceof ProtocolError && /text frame/.test(why.message));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(seen.closeCode, 4010);
});

test('a silent server is pinged, then given up', async () => {
  behaviour = 'silent';
  seen.pings = 0;
  const { connection } = await connect({ keepaliveMs: 150 });
  const why = await connection.closed;
  assert.ok(why instanceof TransportError && /no frame from the server/.test(why.message));
  assert.equal(seen.pings, 1, 'one application ping before giving up');
});

test('an auth_ok for another session is refused', async () => {
  behaviour = 'wrong-auth-ok';
  await assert.rejects(connect(), (e: unknown) => e instanceof HandshakeError && e.failure === 'auth_ok_mismatch');
});

test('a refused version is final; a wrong server key is final', async () => {
  behaviour = 'refuse-version';
  await assert.rejects(connect(), (e: unknown) => e instanceof HandshakeError && e.refusedCode === 'unsupported_version' && e.isFinal());
  behaviour = 'wrong-key';
  await assert.rejects(connect(), (e: unknown) => e instanceof HandshakeError && e.failure === 'server_key_mismatch' && e.isFinal());
  // Trust on first use accepts the other key.
  const { connection, authOk } = await Connection.connect(url, creds(), FIRST_USE, { WebSocket: NodeWebSocket });
  assert.deepEqual(authOk.serverKey, DeviceKey.fromSeed(new Uint8Array(32).fill(8)).public());
  await connection.close();
  assert.ok(!(connection.closeReason instanceof ClosedError));
});
