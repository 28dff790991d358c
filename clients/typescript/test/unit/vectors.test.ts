// Reproduces the project's protocol vectors (test/data/protocol-vectors.json, a copy
// of ferry-proto/tests/data/protocol-vectors.json) byte for byte: from the
// primitives, and by running the client and server state machines against each
// other with the vectors' fixed inputs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  ClientHandshake,
  DeviceKey,
  Opener,
  Sealer,
  ServerHandshake,
  UserKey,
  b64uDecode,
  b64uEncode,
  certMessage,
  clientMacMessage,
  clientSigMessage,
  ed25519PublicKey,
  ed25519Sign,
  ed25519VerifyStrict,
  encodeRequest,
  fromUtf8,
  frameNonce,
  handshakeSecret,
  hmacSha256,
  openFrame,
  pinKey,
  revocationMessage,
  restLoginMessage,
  sealFrame,
  serverSigMessage,
  sessionKeys,
  toHex,
  transcript1,
  transcript2,
  utf8,
  verifyCertificate,
  x25519PublicKey,
  x25519SharedSecret,
} from '../../src/core/index.js';

interface Vectors {
  inputs: Record<string, string | number>;
  keys: Record<string, string>;
  cert: { message: string; issued_at: number; expires_at: number; sig: string };
  handshake: Record<string, string>;
  sealed: Record<'c2s' | 's2c', { counter: number; nonce: string; plaintext: string; frame: string }[]>;
  revoke: { device_key: string; ts: number; sig: string };
  rest: { challenge: string; sig: string };
}

const V = JSON.parse(readFileSync(new URL('../../../test/data/protocol-vectors.json', import.meta.url), 'utf8')) as Vectors;
const d = (s: string | number): Uint8Array => b64uDecode(s as string);
const I = V.inputs;
const K = V.keys;
const H = V.handshake;

/** Asserts `got` equals the b64u vector `want`, reporting both as b64u and hex. */
function eqBytes(got: Uint8Array | null, want: string, what: string): void {
  assert.ok(got, `${what}: missing`);
  assert.equal(b64uEncode(got), want, `${what}: got ${toHex(got)}, want ${toHex(d(want))}`);
}

const serverSeed = d(I.server_seed!);
const userKey = UserKey.fromSeed(d(I.user_seed!));
const deviceKey = DeviceKey.fromSeed(d(I.device_seed!));
const cert = { issuedAt: V.cert.issued_at, expiresAt: V.cert.expires_at, sig: d(V.cert.sig) };

test('keys from the seeds', () => {
  eqBytes(ed25519PublicKey(serverSeed), K.server_key!, 'server_key');
  eqBytes(userKey.public(), K.user_key!, 'user_key');
  eqBytes(deviceKey.public(), K.device_key!, 'device_key');
  assert.equal(userKey.publicB64u(), K.user_key);
  eqBytes(x25519PublicKey(d(I.client_eph_secret!)), K.client_eph!, 'client_eph');
  eqBytes(x25519PublicKey(d(I.server_eph_secret!)), K.server_eph!, 'server_eph');
});

test('device certificate', () => {
  const msg = certMessage(userKey.public(), deviceKey.public(), I.cert_issued_at as number, I.cert_expires_at as number);
  assert.equal(msg.length, 101);
  eqBytes(msg, V.cert.message, 'cert_msg');
  const issued = userKey.certify(deviceKey.public(), V.cert.issued_at, V.cert.expires_at);
  eqBytes(issued.sig, V.cert.sig, 'cert.sig');
  assert.ok(verifyCertificate(userKey.public(), deviceKey.public(), cert));
  assert.ok(!verifyCertificate(deviceKey.public(), userKey.public(), cert), 'keys swapped');
  assert.ok(!verifyCertificate(userKey.public(), deviceKey.public(), { ...cert, expiresAt: 1 }), 'other expiry');
});

test('handshake values from the primitives', () => {
  const ephC = d(K.client_eph!);
  const ephS = d(K.server_eph!);
  const dh = x25519SharedSecret(d(I.client_eph_secret!), ephS);
  eqBytes(dh, H.dh!, 'dh (client side)');
  eqBytes(x25519SharedSecret(d(I.server_eph_secret!), ephC), H.dh!, 'dh (server side)');
  const th1 = transcript1(ephC, d(I.client_nonce!), ephS, d(I.server_nonce!), d(K.server_key!));
  eqBytes(th1, H.th1!, 'TH1');
  const sigMsg = serverSigMessage(th1);
  assert.equal(sigMsg.length, 51);
  eqBytes(ed25519Sign(serverSeed, sigMsg), H.server_sig!, 'server sig');
  assert.ok(ed25519VerifyStrict(d(K.server_key!), sigMsg, d(H.server_sig!)));
  const { prk, kHs } = handshakeSecret(th1, d(H.dh!));
  eqBytes(prk, H.prk!, 'PRK');
  eqBytes(kHs, H.k_hs!, 'K_hs');
  const th2 = transcript2(th1, userKey.public(), deviceKey.public(), cert);
  eqBytes(th2, H.th2!, 'TH2');
  assert.equal(clientSigMessage(th2).length, 51);
  assert.equal(clientMacMessage(th2).length, 55);
  eqBytes(deviceKey.sign(clientSigMessage(th2)), H.client_sig!, 'client sig');
  eqBytes(hmacSha256(kHs, clientMacMessage(th2)), H.client_mac!, 'client mac');
  const keys = sessionKeys(prk, th2);
  eqBytes(keys.kC2s, H.k_c2s!, 'K_c2s');
  eqBytes(keys.kS2c, H.k_s2c!, 'K_s2c');
  assert.equal(keys.sessionId, H.session_id);
});

test('the two state machines against each other reproduce every wire value', () => {
  const client = new ClientHandshake(deviceKey.credentials(userKey.public(), cert), pinKey(d(K.server_key!)), {
    secret: d(I.client_eph_secret!),
    nonce: d(I.client_nonce!),
  });
  const server = new ServerHandshake(serverSeed, { secret: d(I.server_eph_secret!), nonce: d(I.server_nonce!) });

  const hello = client.clientHello();
  // The exact text of protocol.md §13.4.
  assert.equal(
    hello,
    `{"type":"client_hello","v":1,"eph":"${K.client_eph}","nonce":"${I.client_nonce}"}`,
  );
  const serverHello = server.handleClientHello(hello);
  assert.deepEqual(JSON.parse(serverHello), {
    type: 'server_hello',
    v: 1,
    eph: K.server_eph,
    nonce: I.server_nonce,
    server_key: K.server_key,
    sig: H.server_sig,
  });
  assert.equal(server.state, 'awaitAuth');

  const auth = client.handleServerHello(serverHello);
  assert.equal(client.state, 'awaitAuthOk');
  eqBytes(client.serverKey, K.server_key!, 'accepted server key');
  assert.deepEqual(JSON.parse(auth), {
    type: 'client_auth',
    user: K.user_key,
    device: K.device_key,
    cert: { issued_at: V.cert.issued_at, expires_at: V.cert.expires_at, sig: V.cert.sig },
    sig: H.client_sig,
    mac: H.client_mac,
  });

  const who = server.handleClientAuth(auth, V.cert.issued_at + 1);
  eqBytes(who.user, K.user_key!, 'authenticated user');
  eqBytes(who.device, K.device_key!, 'authenticated device');
  const srv = server.handleDeviceCheck(false);
  const cli = client.established();
  assert.equal(cli.sessionId, H.session_id);
  assert.equal(srv.sessionId, H.session_id);
  eqBytes(cli.keys.kC2s, H.k_c2s!, 'client K_c2s');
  eqBytes(srv.keys.kS2c, H.k_s2c!, 'server K_s2c');

  // Sealed frames through the sessions' own sealers and openers.
  for (const f of V.sealed.c2s) {
    assert.equal(cli.sealer.counter, f.counter);
    const frame = cli.sealer.sealSync(f.plaintext);
    eqBytes(frame, f.frame, `c2s[${f.counter}] frame`);
    assert.equal(fromUtf8(srv.opener.openSync(frame)), f.plaintext);
  }
  for (const f of V.sealed.s2c) {
    const frame = srv.sealer.sealSync(f.plaintext);
    eqBytes(frame, f.frame, `s2c[${f.counter}] frame`);
    assert.equal(fromUtf8(cli.opener.openSync(frame)), f.plaintext);
  }
});

test('sealed frames from the primitives (sync @noble and async WebCrypto)', async () => {
  const kC2s = d(H.k_c2s!);
  const kS2c = d(H.k_s2c!);
  for (const [dir, key] of [['c2s', kC2s], ['s2c', kS2c]] as const) {
    for (const f of V.sealed[dir]) {
      eqBytes(frameNonce(f.counter), f.nonce, `${dir}[${f.counter}] nonce`);
      const frame = sealFrame(key, f.counter, utf8(f.plaintext));
      eqBytes(frame, f.frame, `${dir}[${f.counter}] frame`);
      assert.equal(frame.length, utf8(f.plaintext).length + 16);
      assert.equal(fromUtf8(openFrame(key, f.counter, d(f.frame))!), f.plaintext);
    }
  }
  for (const backend of ['webcrypto', 'noble'] as const) {
    const sealer = new Sealer(kC2s, backend);
    assert.equal(sealer.backend, backend);
    // Both seals are started before either settles: the counter is taken at the call.
    const frames = await Promise.all(V.sealed.c2s.map((f) => sealer.seal(f.plaintext)));
    V.sealed.c2s.forEach((f, i) => eqBytes(frames[i]!, f.frame, `${backend} c2s[${f.counter}]`));
    const opener = new Opener(kS2c, backend);
    for (const f of V.sealed.s2c) assert.equal(fromUtf8(await opener.open(d(f.frame))), f.plaintext);
  }
});

test('the request encoder writes the vectors\' plaintexts', () => {
  assert.equal(encodeRequest({ type: 'ping' }, 1), V.sealed.c2s[0]!.plaintext);
  assert.equal(encodeRequest({ type: 'sync', after: 0 }, 'b'), V.sealed.c2s[1]!.plaintext);
});

test('revocation and REST login signatures', () => {
  const msg = revocationMessage(userKey.public(), d(V.revoke.device_key), V.revoke.ts);
  assert.equal(msg.length, 88);
  assert.equal(toHex(msg.subarray(80)), '0000019b76daa87b');
  eqBytes(userKey.signRevocation(d(V.revoke.device_key), V.revoke.ts), V.revoke.sig, 'revoke sig');
  const revoke = encodeRequest(
    { type: 'revoke', device: d(V.revoke.device_key), ts: V.revoke.ts, sig: d(V.revoke.sig) },
    'r1',
  );
  assert.deepEqual(JSON.parse(revoke), {
    type: 'revoke',
    rid: 'r1',
    device: V.revoke.device_key,
    ts: V.revoke.ts,
    sig: V.revoke.sig,
  });
  const rest = restLoginMessage(d(V.rest.challenge), d(K.server_key!));
  assert.equal(rest.length, 78);
  eqBytes(deviceKey.signRestChallenge(d(V.rest.challenge), d(K.server_key!)), V.rest.sig, 'rest sig');
});
