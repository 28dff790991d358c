// The sans-IO core beyond the vectors: strict encodings, strict signatures, the
// refusals of both handshake state machines, tampered frames, message decoding.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ed25519 } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';

import {
  Backoff,
  ClientHandshake,
  DeviceKey,
  FIRST_USE,
  HandshakeError,
  InvalidError,
  LinkGrant,
  Opener,
  ProtocolError,
  SealError,
  Sealer,
  ServerHandshake,
  ServerHandshakeError,
  UserKey,
  Uuidv7Generator,
  authOkMessage,
  b64uDecode,
  b64uEncode,
  concat,
  decodeServerMessage,
  ed25519Sign,
  ed25519VerifyStrict,
  encodeRequest,
  fromUtf8,
  isCanonicalUuid,
  isFinalCloseCode,
  isValidIdentityKey,
  pinKey,
  randomEphemeral,
  serverSigMessage,
  transcript1,
  u64be,
  utf8,
  uuidv7,
  validateRequest,
  x25519PublicKey,
  x25519SharedSecret,
} from '../../src/core/index.js';
import { Profile } from '../../src/index.js';

const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

function le(n: bigint, len = 32): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    out[i] = Number(n & 255n);
    n >>= 8n;
  }
  return out;
}
function numLE(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

test('b64u is strict', () => {
  assert.equal(b64uEncode(new Uint8Array(0)), '');
  assert.equal(b64uEncode(utf8('f')), 'Zg');
  assert.equal(b64uEncode(utf8('fo')), 'Zm8');
  assert.equal(b64uEncode(utf8('foo')), 'Zm9v');
  assert.equal(b64uEncode(new Uint8Array([0xfb, 0xff, 0xbf])), '-_-_');
  assert.equal(fromUtf8(b64uDecode('Zm9vYmFy')), 'foobar');
  for (const bad of ['Zg==', '+/+/', 'Zh', 'Zm9vY', 'Zm9v ', 'Zm9v\n', 'Zé']) {
    assert.throws(() => b64uDecode(bad), `${JSON.stringify(bad)} must be refused`);
  }
  assert.throws(() => b64uDecode('AAAA', 4));
  assert.equal(b64uDecode('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 32).length, 32);
  for (let n = 0; n < 40; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 255);
    assert.deepEqual(b64uDecode(b64uEncode(bytes)), bytes);
  }
});

test('u64be', () => {
  assert.deepEqual(u64be(0x0102030405), new Uint8Array([0, 0, 0, 1, 2, 3, 4, 5]));
  assert.deepEqual(u64be(2n ** 64n - 1n), new Uint8Array(8).fill(255));
  assert.throws(() => u64be(-1));
  assert.throws(() => u64be(1.5));
  assert.throws(() => u64be(2 ** 53));
});

test('Ed25519 is verified strictly (verify_strict rules)', () => {
  const seed = new Uint8Array(32).fill(9);
  const key = UserKey.fromSeed(seed);
  const pk = key.public();
  const msg = utf8('strict');
  const sig = key.sign(msg);
  assert.ok(ed25519VerifyStrict(pk, msg, sig));
  assert.ok(!ed25519VerifyStrict(pk, utf8('other'), sig), 'other message');

  // S + L: the same signature with a non-canonical scalar.
  const s = numLE(sig.subarray(32));
  const malleable = concat(sig.subarray(0, 32), le(s + L));
  assert.ok(!ed25519VerifyStrict(pk, msg, malleable), 'S >= L');

  // A small-order public key (the identity) with R = identity, S = 0: the cofactored
  // equation holds for every message; strict verification refuses it.
  const identity = le(1n);
  const forged = concat(identity, new Uint8Array(32));
  assert.ok(!ed25519VerifyStrict(identity, msg, forged), 'small-order A');
  assert.ok(!isValidIdentityKey(identity), 'the identity is a weak key');
  assert.ok(!isValidIdentityKey(le(P - 1n)), 'a point of order 2 is weak');
  assert.ok(!isValidIdentityKey(le(P + 1n)), 'a non-canonical y is refused');
  assert.ok(isValidIdentityKey(pk));

  // A small-order R with an honest key: S = k·a makes [S]B = R + [k]A hold exactly
  // (cofactorless too). @noble's own verify accepts it; verify_strict does not.
  const a = numLE(sha512(seed).subarray(0, 32).map((b, i) => (i === 0 ? b & 248 : i === 31 ? (b & 127) | 64 : b))) % L;
  const k = numLE(sha512(concat(identity, pk, msg))) % L;
  const smallR = concat(identity, le((k * a) % L));
  assert.ok(ed25519.verify(smallR, msg, pk, { zip215: false }), '(the cofactored check lets it through)');
  assert.ok(!ed25519VerifyStrict(pk, msg, smallR), 'small-order R');

  assert.ok(!ed25519VerifyStrict(pk.subarray(0, 31), msg, sig), 'short key');
  assert.ok(!ed25519VerifyStrict(pk, msg, sig.subarray(0, 63)), 'short signature');
});

test('X25519 refuses low-order points (all-zero results)', () => {
  const secret = new Uint8Array(32).fill(5);
  const lowOrder = [0n, 1n, P - 1n, P, P + 1n, 325606250916557431795983626356110631294008115727848805560023387167927233504n, 39382357235489614581723060781553021112529911719440698176882885853963445705823n];
  for (const u of lowOrder) {
    assert.equal(x25519SharedSecret(secret, le(u)), null, `u = ${u}`);
  }
  const peer = x25519PublicKey(new Uint8Array(32).fill(6));
  assert.equal(x25519SharedSecret(secret, peer)?.length, 32);
  assert.equal(x25519SharedSecret(secret.subarray(0, 31), peer), null);
});

function pair(opts: { pin?: Uint8Array; serverSeed?: Uint8Array } = {}) {
  const user = UserKey.generate();
  const device = DeviceKey.generate();
  const cert = user.certify(device.public(), 1_767_225_600, 0);
  const serverSeed = opts.serverSeed ?? new Uint8Array(32).fill(7);
  const server = new ServerHandshake(serverSeed, randomEphemeral());
  const client = new ClientHandshake(device.credentials(user.public(), cert), opts.pin ? pinKey(opts.pin) : FIRST_USE, randomEphemeral());
  return { user, device, cert, server, client };
}

test('client handshake refusals', () => {
  const refuse = (failure: string, hello: (h: Record<string, unknown>) => Record<string, unknown> | string, pin?: Uint8Array) => {
    const { server, client } = pair(pin ? { pin } : {});
    const sh = JSON.parse(server.handleClientHello(client.clientHello())) as Record<string, unknown>;
    const mutated = hello(sh);
    assert.throws(
      () => client.handleServerHello(typeof mutated === 'string' ? mutated : JSON.stringify(mutated)),
      (e: unknown) => e instanceof HandshakeError && e.failure === failure,
      failure,
    );
    assert.equal(client.state, 'closed');
    assert.throws(() => client.handleServerHello('{}'), (e: unknown) => e instanceof HandshakeError && e.failure === 'unexpected');
  };
  refuse('server_key_mismatch', (h) => h, new Uint8Array(32).fill(1));
  refuse('server_signature', (h) => {
    const sig = b64uDecode(h.sig as string);
    sig[5] = sig[5]! ^ 1;
    return { ...h, sig: b64uEncode(sig) };
  });
  refuse('unsupported_version', (h) => ({ ...h, v: 2 }));
  refuse('malformed', (h) => ({ ...h, v: '1' }));
  refuse('malformed', (h) => ({ ...h, eph: `${h.eph as string}A` }));
  refuse('malformed', () => 'not json');
  refuse('unexpected', (h) => ({ ...h, type: 'client_hello' }));
  refuse('refused', () => ({ type: 'error', code: 'unsupported_version', message: 'no', supported: [1] }));

  // An all-zero key exchange, signed properly so only the DH check can refuse it.
  const serverSeed = new Uint8Array(32).fill(7);
  const { client } = pair();
  const hello = JSON.parse(client.clientHello()) as { eph: string; nonce: string };
  const zero = new Uint8Array(32);
  const nonce = new Uint8Array(32).fill(3);
  const serverKey = DeviceKey.fromSeed(serverSeed).public();
  const th1 = transcript1(b64uDecode(hello.eph), b64uDecode(hello.nonce), zero, nonce, serverKey);
  const badHello = {
    type: 'server_hello',
    v: 1,
    eph: b64uEncode(zero),
    nonce: b64uEncode(nonce),
    server_key: b64uEncode(serverKey),
    sig: b64uEncode(ed25519Sign(serverSeed, serverSigMessage(th1))),
  };
  assert.throws(() => client.handleServerHello(JSON.stringify(badHello)), (e: unknown) => e instanceof HandshakeError && e.failure === 'bad_key');

  // Final or not, as the client decides whether to reconnect.
  assert.ok(new HandshakeError('server_key_mismatch').isFinal());
  assert.ok(!new HandshakeError('malformed').isFinal());
  assert.ok(new HandshakeError('refused', 'unsupported_version').isFinal());
  for (const c of [4002, 4003, 4011]) assert.ok(isFinalCloseCode(c));
  for (const c of [1000, 1001, 1011, 4001, 4008, 4009, 4010, 4012]) assert.ok(!isFinalCloseCode(c));
});

test('server handshake checks, in the order of §4.5, with the close codes of §4.7', () => {
  const now = 1_767_225_600;
  const run = (mutate: (auth: Record<string, unknown>) => Record<string, unknown>, nowSecs = now) => {
    const { server, client } = pair();
    const auth = JSON.parse(client.handleServerHello(server.handleClientHello(client.clientHello()))) as Record<string, unknown>;
    return () => server.handleClientAuth(JSON.stringify(mutate(auth)), nowSecs);
  };
  const code = (f: () => unknown, closeCode: number, label: string) =>
    assert.throws(f, (e: unknown) => e instanceof ServerHandshakeError && e.closeCode === closeCode && e.label === label, label);

  assert.doesNotThrow(run((a) => a));
  code(run((a) => ({ ...a, mac: b64uEncode(new Uint8Array(32)) })), 4002, 'mac');
  code(run((a) => ({ ...a, sig: b64uEncode(new Uint8Array(64)) })), 4002, 'client_signature');
  code(run((a) => ({ ...a, user: b64uEncode(UserKey.generate().public()) })), 4002, 'cert_signature');
  code(run((a) => a, now - 400), 4002, 'cert_not_yet_valid');
  code(run((a) => ({ ...a, user: b64uEncode(new Uint8Array(32).fill(0).map((_, i) => (i === 0 ? 1 : 0))) })), 4002, 'weak_key');
  code(run((a) => ({ ...a, mac: 'short' })), 4001, 'malformed');
  code(run((a) => ({ ...a, type: 'client_hello' })), 4001, 'malformed');

  // Expired certificate.
  const user = UserKey.generate();
  const device = DeviceKey.generate();
  const cert = user.certify(device.public(), now - 100, now - 10);
  const server = new ServerHandshake(new Uint8Array(32).fill(7), randomEphemeral());
  const client = new ClientHandshake(device.credentials(user.public(), cert), FIRST_USE, randomEphemeral());
  const auth = client.handleServerHello(server.handleClientHello(client.clientHello()));
  code(() => server.handleClientAuth(auth, now), 4002, 'cert_expired');

  // Hello refusals.
  const s2 = new ServerHandshake(new Uint8Array(32).fill(7), randomEphemeral());
  assert.throws(
    () => s2.handleClientHello(JSON.stringify({ type: 'client_hello', v: 2, eph: b64uEncode(new Uint8Array(32).fill(9)), nonce: b64uEncode(new Uint8Array(32)) })),
    (e: unknown) => e instanceof ServerHandshakeError && e.closeCode === 4001 && (JSON.parse(e.errorFrame!) as { supported: number[] }).supported[0] === 1,
  );
  const s3 = new ServerHandshake(new Uint8Array(32).fill(7), randomEphemeral());
  assert.throws(
    () => s3.handleClientHello(JSON.stringify({ type: 'client_hello', v: 1, eph: b64uEncode(new Uint8Array(32)), nonce: b64uEncode(new Uint8Array(32)) })),
    (e: unknown) => e instanceof ServerHandshakeError && (JSON.parse(e.errorFrame!) as { code: string }).code === 'bad_key',
  );
  // A revoked device fails after every cryptographic check.
  const p = pair();
  const a2 = p.client.handleServerHello(p.server.handleClientHello(p.client.clientHello()));
  p.server.handleClientAuth(a2, now);
  code(() => p.server.handleDeviceCheck(true), 4002, 'revoked');
});

test('auth_ok is checked against the handshake; sealed frames refuse tampering, replay, reordering', async () => {
  const { server, client } = pair();
  const auth = client.handleServerHello(server.handleClientHello(client.clientHello()));
  server.handleClientAuth(auth, 1_767_225_600);
  const srv = server.handleDeviceCheck(false);
  const cli = client.established();
  const limits = { max_payload: 65536, max_ttl: 2592000, events_per_sec: 200, burst: 400 };
  // An auth_ok for another session is refused (on a second pair: a refusal ends the handshake).
  const other = pair();
  const a3 = other.client.handleServerHello(other.server.handleClientHello(other.client.clientHello()));
  other.server.handleClientAuth(a3, 1_767_225_600);
  const ok = JSON.parse(authOkMessage(other.server.handleDeviceCheck(false), 0, 1, limits)) as Record<string, unknown>;
  assert.throws(
    () => other.client.handleAuthOk(JSON.stringify({ ...ok, session: 'AAAAAAAAAAAAAAAAAAAAAA' })),
    (e: unknown) => e instanceof HandshakeError && e.failure === 'auth_ok_mismatch',
  );

  const f0 = srv.sealer.sealSync(authOkMessage(srv, 3, 1, limits));
  assert.equal(client.handleAuthOk(cli.opener.openSync(f0)).head, 3);
  assert.equal(client.state, 'established');

  const a = srv.sealer.sealSync('{"type":"pong","server_time":1}');
  const b = srv.sealer.sealSync('{"type":"pong","server_time":2}');
  // Reordered: frame 2 where 1 is expected.
  const fresh = new Opener(srv.keys.kS2c);
  fresh.openSync(f0);
  await assert.rejects(fresh.open(b), SealError);
  // Tampered.
  const t = a.slice();
  t[0] = t[0]! ^ 1;
  assert.throws(() => new Opener(srv.keys.kS2c, 'noble').openSync(t), SealError);
  // Shorter than the tag.
  await assert.rejects(new Opener(srv.keys.kS2c).open(new Uint8Array(15)), SealError);
  // In order: both open; replayed: refused.
  assert.equal(fromUtf8(cli.opener.openSync(a)), '{"type":"pong","server_time":1}');
  assert.equal(fromUtf8(await cli.opener.open(b)), '{"type":"pong","server_time":2}');
  await assert.rejects(cli.opener.open(b), SealError);
  // Wrong direction.
  const c2s = new Sealer(srv.keys.kC2s).sealSync('x');
  assert.throws(() => new Opener(srv.keys.kS2c).openSync(c2s), SealError);
});

test('requests: encoding and client-side checks', () => {
  const id = '0190c1a2-8f00-7000-8000-00000000002a';
  assert.equal(
    encodeRequest({ type: 'publish', id, payload: b64uDecode('KCkqKywtLi8wMTIz'), key: b64uDecode('c2V0dGluZ3M'), base: 17 }, 'p2'),
    `{"type":"publish","rid":"p2","id":"${id}","payload":"KCkqKywtLi8wMTIz","key":"c2V0dGluZ3M","base":17}`,
  );
  assert.equal(
    encodeRequest({ type: 'publish', id, payload: new Uint8Array(0), ephemeral: true, to: ['JuwMVZErPViCvj1MjPGbLWBAuPDLSY7ZneTGIIHkXNk'] }),
    `{"type":"publish","id":"${id}","payload":"","ephemeral":true,"to":["JuwMVZErPViCvj1MjPGbLWBAuPDLSY7ZneTGIIHkXNk"]}`,
  );
  assert.equal(encodeRequest({ type: 'cursor', seq: 43 }), '{"type":"cursor","seq":43}');
  assert.equal(encodeRequest({ type: 'sync', after: 40, limit: 500 }, 's1'), '{"type":"sync","rid":"s1","after":40,"limit":500}');
  const bad = (m: Parameters<typeof validateRequest>[0]) => assert.throws(() => validateRequest(m), InvalidError);
  const p = new Uint8Array(1);
  bad({ type: 'publish', id: id.toUpperCase(), payload: p });
  bad({ type: 'publish', id, payload: p, key: new Uint8Array(0) });
  bad({ type: 'publish', id, payload: p, key: new Uint8Array(65) });
  bad({ type: 'publish', id, payload: p, base: 1 });
  bad({ type: 'publish', id, payload: p, to: [] });
  bad({ type: 'publish', id, payload: p, ephemeral: true, ttl: 5 });
  bad({ type: 'sync', after: 0, limit: 1001 });
  bad({ type: 'sync', after: -1 });
});

test('server messages: decoding and shape checks; unknown fields and types are tolerated', () => {
  const ack = decodeServerMessage('{"type":"ack","rid":"p1","id":"0190c1a2-7d3e-7b6a-9f21-3c4d5e6f7a8b","seq":43,"ts":1767225601234,"extra":1}');
  assert.equal(ack.type === 'ack' && ack.seq, 43);
  const events = decodeServerMessage(
    '{"type":"events","rid":"s1","events":[{"seq":41,"id":"0190c1a2-6b00-7000-8000-000000000029","device":"5YgHe4XFis5-_6_6XXuQCVuyefLxayB2vfYNVws-FOc","ts":1767225500000,"payload":"KCkqKywtLi8wMTIz"}],"head":43,"more":false,"truncated":{"oldest":41}}',
  );
  assert.equal(events.type === 'events' && events.truncated?.oldest, 41);
  assert.deepEqual(decodeServerMessage('{"type":"hello_v2","rid":7}'), { type: 'unknown', originalType: 'hello_v2', rid: 7 });
  for (const bad of [
    '[]',
    '{"rid":1}',
    '{"type":"ack","id":"not-a-uuid"}',
    '{"type":"events","events":[{"seq":1}],"head":1,"more":false}',
    '{"type":"event","id":"0190c1a2-6b00-7000-8000-000000000029","device":"x","ts":1,"payload":""}',
    '{"type":"pong","server_time":-1}',
    '{"type":"error","code":"x"}',
  ]) {
    assert.throws(() => decodeServerMessage(bad), ProtocolError, bad);
  }
});

test('UUIDv7 ids', () => {
  const id = uuidv7(0x0190c1a27d3e);
  assert.ok(isCanonicalUuid(id));
  assert.ok(id.startsWith('0190c1a2-7d3e-7'));
  assert.ok(['8', '9', 'a', 'b'].includes(id[19]!));
  const gen = new Uuidv7Generator();
  let last = '';
  for (let i = 0; i < 5000; i++) {
    const next = gen.next(1_767_225_600_000 - (i % 3)); // a clock that steps back
    assert.ok(isCanonicalUuid(next));
    assert.ok(next > last, `${next} > ${last}`);
    last = next;
  }
});

test('backoff: doubling ceilings, full jitter', () => {
  const b = new Backoff();
  assert.equal(b.ceiling(0), 100);
  assert.equal(b.ceiling(1), 200);
  assert.equal(b.ceiling(8), 25_600);
  assert.equal(b.ceiling(9), 30_000);
  assert.equal(b.ceiling(1000), 30_000);
  assert.equal(b.delayWith(3, 0), 0);
  assert.equal(b.delayWith(3, 0.5), 400);
  for (let i = 0; i < 40; i++) assert.ok(b.delay(i) <= b.ceiling(i));
});

test('link grants and profiles (the Rust SDK\'s formats)', () => {
  const owner = Profile.create('wss://relay.example/v1/ws', new Uint8Array(32).fill(3), { nowSecs: 100 });
  owner.validate();
  const again = Profile.fromJson(owner.toJson());
  assert.equal(again.toJson(), owner.toJson());
  assert.ok(!JSON.stringify(owner).includes(b64uEncode(owner.deviceSecret)), 'toJSON never prints secrets');
  const json = JSON.parse(owner.toJson()) as Record<string, unknown>;
  assert.deepEqual(Object.keys(json), ['v', 'server_url', 'server_key', 'user_public', 'user_secret', 'device_secret', 'cert']);

  const newDevice = DeviceKey.generate();
  const grant = owner.userKey()!.link(newDevice.public(), 100, 0, owner.serverUrl, owner.serverKey);
  const text = grant.encode();
  const decoded = LinkGrant.decode(text);
  assert.equal(decoded.encode(), text);
  // The grant's JSON is the Rust SDK's field for field.
  assert.deepEqual(Object.keys(JSON.parse(fromUtf8(b64uDecode(text))) as object), ['v', 'user', 'device', 'cert', 'server_url', 'server_key']);
  const joined = Profile.join('wss://relay.example/v1/ws', undefined, newDevice, decoded);
  assert.deepEqual(joined.serverKey, new Uint8Array(32).fill(3));
  assert.equal(joined.userKey(), undefined);
  joined.validate();

  assert.throws(() => Profile.join('x', undefined, DeviceKey.generate(), decoded), InvalidError);
  assert.throws(() => Profile.join('x', new Uint8Array(32).fill(4), newDevice, decoded), InvalidError);
  const forged = new LinkGrant(grant.user, DeviceKey.generate().public(), grant.cert, grant.serverUrl, grant.serverKey);
  assert.throws(() => LinkGrant.decode(forged.encode()), InvalidError);
  assert.throws(() => LinkGrant.decode('not a grant'), InvalidError);
  const tampered = JSON.parse(owner.toJson()) as Record<string, unknown>;
  tampered.user_public = UserKey.generate().publicB64u();
  assert.throws(() => Profile.fromJson(JSON.stringify(tampered)), InvalidError);
});
