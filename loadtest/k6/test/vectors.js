// Checks the protocol core the k6 scripts run on (the TypeScript SDK's sans-IO core,
// bundled into dist/ferry-crypto.js) against the protocol test vectors
// (test/protocol-vectors.json, a copy of the project's vectors), inside k6's own
// JavaScript engine. Run: `k6 run test/vectors.js`; any mismatch fails the `checks`
// threshold and k6 exits non-zero.
import { check, fail } from 'k6';
import {
  ClientHandshake,
  DeviceKey,
  HandshakeError,
  Opener,
  Sealer,
  ServerHandshake,
  UserKey,
  b64uDecode,
  b64uEncode,
  bytesEqual,
  certMessage,
  concat,
  ed25519PublicKey,
  ed25519Sign,
  ed25519VerifyStrict,
  encodeRequest,
  fromUtf8,
  handshakeSecret,
  hkdfExpand,
  pinKey,
  restLoginMessage,
  revocationMessage,
  serverSigMessage,
  sha256,
  transcript1,
  u64be,
  utf8,
  x25519PublicKey,
  x25519SharedSecret,
} from '../dist/ferry-crypto.js';
import { credentialsOf, identityOf } from '../lib/ferry.js';

const V = JSON.parse(open('./protocol-vectors.json'));

export const options = {
  vus: 1,
  iterations: 1,
  thresholds: { checks: ['rate==1'] },
};

const d = (s) => b64uDecode(s);
const eqB = (name, got, want) => {
  const ok = got instanceof Uint8Array && bytesEqual(got, typeof want === 'string' ? d(want) : want);
  if (!check(null, { [name]: () => ok })) {
    console.error(`${name}: got ${got instanceof Uint8Array ? b64uEncode(got) : got}, want ${typeof want === 'string' ? want : b64uEncode(want)}`);
  }
  return ok;
};
const eq = (name, got, want) => {
  const ok = got === want;
  if (!check(null, { [name]: () => ok })) console.error(`${name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  return ok;
};
const throws = (name, f) => {
  let threw = false;
  try {
    f();
  } catch (_) {
    threw = true;
  }
  check(null, { [name]: () => threw });
};

function checkB64u() {
  eq('b64u: empty', b64uEncode(new Uint8Array(0)), '');
  eq('b64u: "f"', b64uEncode(utf8('f')), 'Zg');
  eq('b64u: "fo"', b64uEncode(utf8('fo')), 'Zm8');
  eq('b64u: "foo"', b64uEncode(utf8('foo')), 'Zm9v');
  eq('b64u: url alphabet', b64uEncode(new Uint8Array([0xfb, 0xff, 0xbf])), '-_-_');
  eq('b64u: round trip', fromUtf8(b64uDecode('Zm9vYmFy')), 'foobar');
  throws('b64u: padding rejected', () => b64uDecode('Zg=='));
  throws('b64u: "+" rejected', () => b64uDecode('+/+/'));
  throws('b64u: non-canonical bits rejected', () => b64uDecode('Zh'));
  throws('b64u: bad length rejected', () => b64uDecode('Zm9vY'));
  throws('b64u: wrong size rejected', () => b64uDecode(V.keys.server_key, 31));
  throws('b64u: whitespace rejected', () => b64uDecode('Zm9v '));
  eqB('u64be', u64be(0x0102030405), new Uint8Array([0, 0, 0, 1, 2, 3, 4, 5]));
}

function checkPrimitives() {
  const I = V.inputs;
  const K = V.keys;
  const H = V.handshake;
  eqB('server_key', ed25519PublicKey(d(I.server_seed)), K.server_key);
  eqB('user_key', ed25519PublicKey(d(I.user_seed)), K.user_key);
  eqB('device_key', ed25519PublicKey(d(I.device_seed)), K.device_key);
  eqB('client_eph', x25519PublicKey(d(I.client_eph_secret)), K.client_eph);
  eqB('server_eph', x25519PublicKey(d(I.server_eph_secret)), K.server_eph);
  const cm = certMessage(d(K.user_key), d(K.device_key), I.cert_issued_at, I.cert_expires_at);
  eqB('cert message', cm, V.cert.message);
  eqB('cert sig', ed25519Sign(d(I.user_seed), cm), V.cert.sig);
  check(null, { 'cert sig verifies (strict)': () => ed25519VerifyStrict(d(K.user_key), cm, d(V.cert.sig)) });
  eqB('dh', x25519SharedSecret(d(I.client_eph_secret), d(K.server_eph)), H.dh);
  const th1 = transcript1(d(K.client_eph), d(I.client_nonce), d(K.server_eph), d(I.server_nonce), d(K.server_key));
  eqB('th1', th1, H.th1);
  eqB('server sig', ed25519Sign(d(I.server_seed), serverSigMessage(th1)), H.server_sig);
  const { prk, kHs } = handshakeSecret(th1, d(H.dh));
  eqB('prk', prk, H.prk);
  eqB('k_hs', kHs, H.k_hs);
  eqB('k_hs = expand(confirm)', hkdfExpand(d(H.prk), utf8('ferry-hs/v1 confirm'), 32), H.k_hs);
  const user = UserKey.fromSeed(d(I.user_seed));
  eqB('revoke sig', user.signRevocation(d(V.revoke.device_key), V.revoke.ts), V.revoke.sig);
  eqB('revoke message', revocationMessage(d(K.user_key), d(V.revoke.device_key), V.revoke.ts).subarray(80), u64be(V.revoke.ts));
  const device = DeviceKey.fromSeed(d(I.device_seed));
  eqB('rest sig', device.signRestChallenge(d(V.rest.challenge), d(K.server_key)), V.rest.sig);
  eq('rest message length', restLoginMessage(d(V.rest.challenge), d(K.server_key)).length, 78);
}

/** Runs the client and server state machines against each other with the vectors' inputs. */
function checkHandshake() {
  const I = V.inputs;
  const K = V.keys;
  const H = V.handshake;
  // The credentials as the load scripts build them from a `ferry-load keys` entry.
  const identity = identityOf({
    user: K.user_key,
    device: K.device_key,
    seed: I.device_seed,
    cert: { issued_at: V.cert.issued_at, expires_at: V.cert.expires_at, sig: V.cert.sig },
  });
  const client = new ClientHandshake(credentialsOf(identity), pinKey(d(K.server_key)), {
    secret: d(I.client_eph_secret),
    nonce: d(I.client_nonce),
  });
  const server = new ServerHandshake(d(I.server_seed), { secret: d(I.server_eph_secret), nonce: d(I.server_nonce) });
  const hello = client.clientHello();
  eq('client_hello', hello, `{"type":"client_hello","v":1,"eph":"${K.client_eph}","nonce":"${I.client_nonce}"}`);
  const sh = JSON.parse(server.handleClientHello(hello));
  eq('server_hello eph', sh.eph, K.server_eph);
  eq('server_hello sig', sh.sig, H.server_sig);
  const auth = JSON.parse(client.handleServerHello(JSON.stringify(sh)));
  eq('client_auth sig', auth.sig, H.client_sig);
  eq('client_auth mac', auth.mac, H.client_mac);
  eq('client_auth cert sig', auth.cert.sig, V.cert.sig);
  server.handleClientAuth(JSON.stringify(auth), V.cert.issued_at);
  const srv = server.handleDeviceCheck(false);
  const cli = client.established();
  eqB('k_c2s', cli.keys.kC2s, H.k_c2s);
  eqB('k_s2c', cli.keys.kS2c, H.k_s2c);
  eq('session id', cli.sessionId, H.session_id);
  eq('server session id', srv.sessionId, H.session_id);

  // Refusals.
  const failure = (name, want, mutate, pin) => {
    const c = new ClientHandshake(credentialsOf(identity), pin, { secret: d(I.client_eph_secret), nonce: d(I.client_nonce) });
    let got = null;
    try {
      c.handleServerHello(JSON.stringify(mutate(sh)));
    } catch (e) {
      got = e instanceof HandshakeError ? e.failure : `other: ${e}`;
    }
    eq(name, got, want);
  };
  const otherKey = ed25519PublicKey(new Uint8Array(32).fill(7));
  failure('pinned key mismatch refused', 'server_key_mismatch', (h) => h, pinKey(otherKey));
  const badSig = d(H.server_sig);
  badSig[0] ^= 1;
  failure('bad server sig refused', 'server_signature', (h) => ({ ...h, sig: b64uEncode(badSig) }), pinKey(d(K.server_key)));
  // A low-order server eph (u = 0) gives the all-zero X25519 result; signed properly so
  // only the DH check can refuse it.
  const zeroEph = new Uint8Array(32);
  const th1z = concat(utf8('ferry-hs/v1'), [0], d(K.client_eph), d(I.client_nonce), zeroEph, d(I.server_nonce), d(K.server_key));
  const sigZ = ed25519Sign(d(I.server_seed), serverSigMessage(sha256(th1z)));
  failure('all-zero dh refused', 'bad_key', (h) => ({ ...h, eph: b64uEncode(zeroEph), sig: b64uEncode(sigZ) }), pinKey(d(K.server_key)));
  failure('version 2 refused', 'unsupported_version', (h) => ({ ...h, v: 2 }), pinKey(d(K.server_key)));
  return { cli, srv };
}

async function checkSealed({ cli, srv }) {
  const S = V.sealed;
  const H = V.handshake;
  for (const f of S.c2s) {
    eq(`c2s[${f.counter}] counter`, cli.sealer.counter, f.counter);
    const frame = await cli.sealer.seal(f.plaintext);
    eqB(`c2s[${f.counter}] frame`, frame, f.frame);
    eq(`c2s[${f.counter}] opens (server view)`, fromUtf8(await srv.opener.open(frame)), f.plaintext);
  }
  for (const f of S.s2c) {
    eqB(`s2c[${f.counter}] frame (server seals)`, await srv.sealer.seal(f.plaintext), f.frame);
    eq(`s2c[${f.counter}] opens`, fromUtf8(await cli.opener.open(d(f.frame))), f.plaintext);
  }
  eq('sealing uses k6 WebCrypto', cli.sealer.backend, 'webcrypto');
  eq('ping plaintext', encodeRequest({ type: 'ping' }, 1), S.c2s[0].plaintext);
  eq('sync plaintext', encodeRequest({ type: 'sync', after: 0 }, 'b'), S.c2s[1].plaintext);
  // Tampered, replayed and wrong-direction frames must not open.
  const rejects = async (name, p) => {
    let ok = false;
    try {
      await p;
    } catch (_) {
      ok = true;
    }
    check(null, { [name]: () => ok });
  };
  const tampered = d(S.s2c[0].frame);
  tampered[3] ^= 0x40;
  await rejects('tampered frame refused', new Opener(d(H.k_s2c)).open(tampered));
  const replay = new Opener(d(H.k_s2c));
  await replay.open(d(S.s2c[0].frame));
  await rejects('replayed frame refused (counter 1)', replay.open(d(S.s2c[0].frame)));
  await rejects('c2s frame does not open as s2c', new Opener(d(H.k_s2c)).open(d(S.c2s[0].frame)));
  eqB('noble and WebCrypto agree', new Sealer(d(H.k_c2s), 'noble').sealSync(S.c2s[0].plaintext), S.c2s[0].frame);
}

export default async function () {
  checkB64u();
  let pair;
  try {
    checkPrimitives();
    pair = checkHandshake();
  } catch (e) {
    check(null, { 'handshake vectors ran': () => false });
    fail(`handshake vectors threw: ${e && e.stack ? e.stack : e}`);
  }
  await checkSealed(pair);
}
