// Checks lib/ferry.js against the protocol test vectors (test/protocol-vectors.json, a
// copy of the project's vectors). Run: `k6 run test/vectors.js`; any mismatch fails
// the `checks` threshold and k6 exits non-zero.
import { check, fail } from 'k6';
import {
  b64uDecode,
  b64uEncode,
  bytesEqual,
  certMessage,
  clientAuth,
  clientHello,
  concat,
  ed25519PublicKey,
  ed25519Sign,
  ed25519Verify,
  fromUtf8,
  HandshakeError,
  hkdfExpand,
  hkdfExtract,
  processServerHello,
  SealedChannel,
  serverSigMessage,
  sha256,
  u64be,
  utf8,
  x25519PublicKey,
} from '../lib/ferry.js';

const V = JSON.parse(open('./protocol-vectors.json'));

export const options = {
  vus: 1,
  iterations: 1,
  thresholds: { checks: ['rate==1'] },
};

const d = (s) => b64uDecode(s);
const eqB = (name, got, want) => {
  const ok = bytesEqual(got, typeof want === 'string' ? d(want) : want);
  if (!check(null, { [name]: () => ok })) console.error(`${name}: got ${b64uEncode(got)}, want ${typeof want === 'string' ? want : b64uEncode(want)}`);
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
}

function checkHandshake() {
  const I = V.inputs;
  const K = V.keys;
  const H = V.handshake;
  const serverSeed = d(I.server_seed);
  const userSeed = d(I.user_seed);
  const deviceSeed = d(I.device_seed);

  eqB('server_key', ed25519PublicKey(serverSeed), K.server_key);
  eqB('user_key', ed25519PublicKey(userSeed), K.user_key);
  eqB('device_key', ed25519PublicKey(deviceSeed), K.device_key);
  eqB('client_eph', x25519PublicKey(d(I.client_eph_secret)), K.client_eph);
  eqB('server_eph', x25519PublicKey(d(I.server_eph_secret)), K.server_eph);

  // Device certificate.
  const cm = certMessage(d(K.user_key), d(K.device_key), I.cert_issued_at, I.cert_expires_at);
  eqB('cert message', cm, V.cert.message);
  eqB('cert sig', ed25519Sign(cm, userSeed), V.cert.sig);
  check(null, { 'cert sig verifies': () => ed25519Verify(d(V.cert.sig), cm, d(K.user_key)) });

  // Client hello with the fixed ephemeral secret and nonce.
  const hello = clientHello(d(I.client_eph_secret), d(I.client_nonce));
  eq('client_hello eph', hello.message.eph, K.client_eph);
  eq('client_hello nonce', hello.message.nonce, I.client_nonce);
  eq('client_hello type', hello.message.type, 'client_hello');
  eq('client_hello v', hello.message.v, 1);

  // The server hello the server would send; its signature must be the vector's.
  const serverHello = {
    type: 'server_hello',
    v: 1,
    eph: K.server_eph,
    nonce: I.server_nonce,
    server_key: K.server_key,
    sig: H.server_sig,
  };
  const hs = processServerHello(hello.state, serverHello, d(K.server_key));
  eqB('th1', hs.th1, H.th1);
  eqB('server sig (recomputed)', ed25519Sign(serverSigMessage(hs.th1), serverSeed), H.server_sig);
  eqB('dh', hs.dh, H.dh);
  eqB('prk', hs.prk, H.prk);
  eqB('prk = HMAC(TH1, dh)', hkdfExtract(d(H.th1), d(H.dh)), H.prk);
  eqB('k_hs', hs.kHs, H.k_hs);
  eqB('k_hs = expand(confirm)', hkdfExpand(d(H.prk), utf8('ferry-hs/v1 confirm'), 32), H.k_hs);

  const identity = {
    user: K.user_key,
    device: K.device_key,
    seed: deviceSeed,
    cert: { issued_at: V.cert.issued_at, expires_at: V.cert.expires_at, sig: V.cert.sig },
  };
  const auth = clientAuth(hs, identity);
  eqB('th2', auth.th2, H.th2);
  eqB('client sig', auth.sig, H.client_sig);
  eqB('client mac', auth.mac, H.client_mac);
  eqB('k_c2s', auth.kC2s, H.k_c2s);
  eqB('k_s2c', auth.kS2c, H.k_s2c);
  eq('session id', auth.sessionId, H.session_id);
  eq('client_auth sig field', auth.message.sig, H.client_sig);
  eq('client_auth mac field', auth.message.mac, H.client_mac);
  eq('client_auth cert sig', auth.message.cert.sig, V.cert.sig);

  // Refusals.
  const expectHsError = (name, code, f) => {
    let got = null;
    try {
      f();
    } catch (e) {
      got = e instanceof HandshakeError ? e.code : `other: ${e}`;
    }
    eq(name, got, code);
  };
  const otherKey = ed25519PublicKey(new Uint8Array(32).fill(7));
  expectHsError('pinned key mismatch refused', 'server_key_mismatch', () =>
    processServerHello(hello.state, serverHello, otherKey),
  );
  const badSig = d(H.server_sig);
  badSig[0] ^= 1;
  expectHsError('bad server sig refused', 'bad_server_sig', () =>
    processServerHello(hello.state, { ...serverHello, sig: b64uEncode(badSig) }, d(K.server_key)),
  );
  // A low-order server eph (u = 0) gives the all-zero X25519 result; signed properly so
  // only the DH check can refuse it.
  const zeroEph = new Uint8Array(32);
  const th1z = concat(utf8('ferry-hs/v1'), [0], d(K.client_eph), d(I.client_nonce), zeroEph, d(I.server_nonce), d(K.server_key));
  const sigZ = ed25519Sign(serverSigMessage(sha256(th1z)), serverSeed);
  expectHsError('all-zero dh refused', 'bad_key', () =>
    processServerHello(
      hello.state,
      { ...serverHello, eph: b64uEncode(zeroEph), sig: b64uEncode(sigZ) },
      d(K.server_key),
    ),
  );
  expectHsError('version 2 refused', 'bad_version', () => processServerHello(hello.state, { ...serverHello, v: 2 }, null));
  expectHsError('server error surfaced', 'unsupported_version', () =>
    processServerHello(hello.state, { type: 'error', code: 'unsupported_version', supported: [1] }, null),
  );
  return auth;
}

async function checkSealed(auth) {
  const S = V.sealed;
  eqB('u64be', u64be(0x0102030405), new Uint8Array([0, 0, 0, 1, 2, 3, 4, 5]));
  const ch = await SealedChannel.create(auth.kC2s, auth.kS2c);
  for (const f of S.c2s) {
    eq(`c2s[${f.counter}] counter`, ch.sendCounter, f.counter);
    const frame = new Uint8Array(await ch.seal(f.plaintext));
    eqB(`c2s[${f.counter}] frame`, frame, f.frame);
    eq(`c2s[${f.counter}] opens (server view)`, fromUtf8(await ch.openAsServer(frame, f.counter)), f.plaintext);
  }
  for (const f of S.s2c) {
    eqB(`s2c[${f.counter}] frame (server seals)`, new Uint8Array(await ch.sealAsServer(f.plaintext, f.counter)), f.frame);
    eq(`s2c[${f.counter}] counter`, ch.recvCounter, f.counter);
    eq(`s2c[${f.counter}] opens`, fromUtf8(await ch.open(d(f.frame))), f.plaintext);
  }
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
  const fresh = await SealedChannel.create(auth.kC2s, auth.kS2c);
  await rejects('tampered frame refused', fresh.open(tampered));
  const replay = await SealedChannel.create(auth.kC2s, auth.kS2c);
  await replay.open(d(S.s2c[0].frame));
  await rejects('replayed frame refused (counter 1)', replay.open(d(S.s2c[0].frame)));
  const wrongDir = await SealedChannel.create(auth.kC2s, auth.kS2c);
  await rejects('c2s frame does not open as s2c', wrongDir.open(d(S.c2s[0].frame)));
}

function checkOtherSignatures() {
  const K = V.keys;
  const userSeed = d(V.inputs.user_seed);
  const revokeMsg = concat(utf8('ferry-revoke/v1'), [0], d(K.user_key), d(V.revoke.device_key), u64be(V.revoke.ts));
  eqB('revoke sig', ed25519Sign(revokeMsg, userSeed), V.revoke.sig);
  const restMsg = concat(utf8('ferry-rest/v1'), [0], d(V.rest.challenge), d(K.server_key));
  eqB('rest sig', ed25519Sign(restMsg, d(V.inputs.device_seed)), V.rest.sig);
}

export default async function () {
  checkB64u();
  let auth;
  try {
    auth = checkHandshake();
  } catch (e) {
    check(null, { 'handshake vectors ran': () => false });
    fail(`handshake vectors threw: ${e && e.stack ? e.stack : e}`);
  }
  await checkSealed(auth);
  checkOtherSignatures();
}
