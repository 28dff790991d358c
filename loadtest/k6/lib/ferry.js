// Ferry wire protocol v1, client side, for k6 (PROTOCOL.md §2–§4).
//
// Crypto: Ed25519, X25519 and SHA-256 come from the esbuild bundle of @noble
// (`dist/ferry-crypto.js`, `npm run build`); HMAC/HKDF from k6/crypto; AES-256-GCM
// from k6's WebCrypto. The pure functions (b64u, handshake steps, SealedChannel) are
// exported so `test/vectors.js` can check them against protocol-vectors.json.

import { WebSocket } from 'k6/experimental/websockets';
import { hmac } from 'k6/crypto';
import {
  ed25519PublicKey,
  ed25519Sign,
  ed25519Verify,
  x25519PublicKey,
  x25519SharedSecret,
  sha256,
} from '../dist/ferry-crypto.js';

export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------
// Bytes

const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string. */
export function utf8(str) {
  return te.encode(str);
}

/** String of UTF-8 bytes (throws on invalid UTF-8). */
export function fromUtf8(bytes) {
  return td.decode(bytes);
}

/** Concatenates Uint8Arrays (or byte-valued arrays). */
export function concat(...parts) {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** u64be of a non-negative safe integer. */
export function u64be(n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`u64be: ${n} is not a safe non-negative integer`);
  const out = new Uint8Array(8);
  const hi = Math.floor(n / 0x100000000);
  const lo = n - hi * 0x100000000;
  const v = new DataView(out.buffer);
  v.setUint32(0, hi);
  v.setUint32(4, lo);
  return out;
}

/** Constant-time-ish equality of two byte arrays (lengths are public). */
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** The ArrayBuffer holding exactly the bytes of `u8` (copies only when it must). */
export function toArrayBuffer(u8) {
  if (u8 instanceof ArrayBuffer) return u8;
  if (u8.byteOffset === 0 && u8.byteLength === u8.buffer.byteLength) return u8.buffer;
  return u8.slice().buffer;
}

/** `n` random bytes. */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

/**
 * A UUIDv7 (RFC 9562 §5.7: 48-bit Unix milliseconds, then random bits) in canonical
 * lowercase hyphenated form, as the Rust client SDK makes them: time-ordered ids land
 * at the right edge of the server's idempotency index.
 */
export function uuidv7() {
  const b = randomBytes(16);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  let h = '';
  for (let i = 0; i < 16; i++) h += (b[i] < 16 ? '0' : '') + b[i].toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------------------------------------------------------------------------
// b64u: base64url without padding, strict (RFC 4648 §5)

const B64U = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64U_LOOKUP = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < 64; i++) t[B64U.charCodeAt(i)] = i;
  return t;
})();

/** b64u of bytes. */
export function b64uEncode(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64U[n >> 18] + B64U[(n >> 12) & 63] + B64U[(n >> 6) & 63] + B64U[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64U[n >> 18] + B64U[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64U[n >> 18] + B64U[(n >> 12) & 63] + B64U[(n >> 6) & 63];
  }
  return out;
}

/**
 * Decodes strict b64u: no padding, only the URL-safe alphabet, canonical trailing bits.
 * With `len`, the result must be exactly that many bytes. Throws on anything else.
 */
export function b64uDecode(text, len) {
  if (typeof text !== 'string') throw new TypeError('b64u: not a string');
  if (text.length % 4 === 1) throw new Error('b64u: bad length');
  const outLen = Math.floor((text.length * 3) / 4);
  if (len !== undefined && outLen !== len) throw new Error(`b64u: expected ${len} bytes, got ${outLen}`);
  const out = new Uint8Array(outLen);
  const val = (i) => {
    const c = text.charCodeAt(i);
    const v = c < 128 ? B64U_LOOKUP[c] : -1;
    if (v < 0) throw new Error('b64u: invalid character');
    return v;
  };
  let o = 0;
  let i = 0;
  for (; i + 3 < text.length; i += 4) {
    const n = (val(i) << 18) | (val(i + 1) << 12) | (val(i + 2) << 6) | val(i + 3);
    out[o++] = n >> 16;
    out[o++] = (n >> 8) & 255;
    out[o++] = n & 255;
  }
  const rest = text.length - i;
  if (rest === 2) {
    const a = val(i);
    const b = val(i + 1);
    if (b & 15) throw new Error('b64u: non-canonical trailing bits');
    out[o++] = (a << 2) | (b >> 4);
  } else if (rest === 3) {
    const a = val(i);
    const b = val(i + 1);
    const c = val(i + 2);
    if (c & 3) throw new Error('b64u: non-canonical trailing bits');
    out[o++] = (a << 2) | (b >> 4);
    out[o++] = ((b & 15) << 4) | (c >> 2);
  }
  return out;
}

// ---------------------------------------------------------------------------
// HMAC / HKDF (RFC 5869, SHA-256, outputs ≤ 32 bytes so one block)

/** HMAC-SHA256(key, msg). */
export function hmacSha256(key, msg) {
  return new Uint8Array(hmac('sha256', toArrayBuffer(key), toArrayBuffer(msg), 'binary'));
}

/** HKDF-Extract(salt, ikm). */
export function hkdfExtract(salt, ikm) {
  return hmacSha256(salt, ikm);
}

/** HKDF-Expand(prk, info, len) for len ≤ 32: T(1) = HMAC(PRK, info || 0x01), truncated. */
export function hkdfExpand(prk, info, len) {
  if (len > 32) throw new RangeError('hkdfExpand: one block only');
  return hmacSha256(prk, concat(info, [1])).slice(0, len);
}

// ---------------------------------------------------------------------------
// Handshake (§2)

const L_HS = utf8('ferry-hs/v1');
const L_SERVER = utf8('ferry-hs/v1 server');
const L_CLIENT = utf8('ferry-hs/v1 client');
const L_CLIENT_MAC = utf8('ferry-hs/v1 client-mac');
const L_CONFIRM = utf8('ferry-hs/v1 confirm');
const L_C2S = utf8('ferry-hs/v1 c2s');
const L_S2C = utf8('ferry-hs/v1 s2c');
const L_SESSION = utf8('ferry-hs/v1 session');
const L_CERT = utf8('ferry-device-cert/v1');
const ZERO = [0];

/** A handshake step failed; `code` is a short reason for metrics. */
export class HandshakeError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'HandshakeError';
    this.code = code;
  }
}

/** `"ferry-device-cert/v1" || 0x00 || user || device || u64be(issued_at) || u64be(expires_at)`. */
export function certMessage(user, device, issuedAt, expiresAt) {
  return concat(L_CERT, ZERO, user, device, u64be(issuedAt), u64be(expiresAt));
}

/**
 * Step 1. `ephSecret` (32-byte X25519 scalar) and `nonce` (32 bytes) are random unless a
 * test fixes them. Returns the state for step 2 and the JSON message to send.
 */
export function clientHello(ephSecret = randomBytes(32), nonce = randomBytes(32)) {
  const eph = x25519PublicKey(ephSecret);
  return {
    state: { ephSecret, eph, nonce },
    message: { type: 'client_hello', v: PROTOCOL_VERSION, eph: b64uEncode(eph), nonce: b64uEncode(nonce) },
  };
}

/** TH1 = SHA-256("ferry-hs/v1" || 0x00 || eph_c || nonce_c || eph_s || nonce_s || server_key). */
export function transcript1(ephC, nonceC, ephS, nonceS, serverKey) {
  return sha256(concat(L_HS, ZERO, ephC, nonceC, ephS, nonceS, serverKey));
}

/** `"ferry-hs/v1 server" || 0x00 || TH1`: what the server key signs. */
export function serverSigMessage(th1) {
  return concat(L_SERVER, ZERO, th1);
}

/**
 * Step 2. Checks `server_hello` (parsed JSON) against the pinned server key (32 bytes,
 * or null to accept any: trust on first use is the caller's business), verifies the
 * server signature, computes X25519 (refusing the all-zero result), PRK and K_hs.
 * Throws HandshakeError.
 */
export function processServerHello(state, hello, pinnedServerKey) {
  if (!hello || hello.type !== 'server_hello') {
    if (hello && hello.type === 'error') throw new HandshakeError(hello.code || 'error', hello.message);
    throw new HandshakeError('unexpected_message', `expected server_hello, got ${hello && hello.type}`);
  }
  if (hello.v !== PROTOCOL_VERSION) throw new HandshakeError('bad_version');
  let ephS;
  let nonceS;
  let serverKey;
  let sig;
  try {
    ephS = b64uDecode(hello.eph, 32);
    nonceS = b64uDecode(hello.nonce, 32);
    serverKey = b64uDecode(hello.server_key, 32);
    sig = b64uDecode(hello.sig, 64);
  } catch (e) {
    throw new HandshakeError('malformed_hello', String(e));
  }
  if (pinnedServerKey && !bytesEqual(pinnedServerKey, serverKey)) {
    throw new HandshakeError('server_key_mismatch', 'server_key is not the pinned key');
  }
  const th1 = transcript1(state.eph, state.nonce, ephS, nonceS, serverKey);
  if (!ed25519Verify(sig, serverSigMessage(th1), serverKey)) {
    throw new HandshakeError('bad_server_sig', 'server signature does not verify');
  }
  let dh;
  try {
    dh = x25519SharedSecret(state.ephSecret, ephS);
  } catch (e) {
    throw new HandshakeError('bad_key', String(e));
  }
  if (dh.every((b) => b === 0)) throw new HandshakeError('bad_key', 'all-zero X25519 result');
  const prk = hkdfExtract(th1, dh);
  const kHs = hkdfExpand(prk, L_CONFIRM, 32);
  return { ...state, ephS, nonceS, serverKey, th1, dh, prk, kHs };
}

/**
 * Step 3 and 4. `identity` = { user, device (b64u), seed (32 bytes), cert: {issued_at,
 * expires_at, sig (b64u)} }. Returns the `client_auth` message and the session keys.
 */
export function clientAuth(hs, identity) {
  const user = b64uDecode(identity.user, 32);
  const device = b64uDecode(identity.device, 32);
  const certSig = b64uDecode(identity.cert.sig, 64);
  const th2 = sha256(
    concat(hs.th1, user, device, u64be(identity.cert.issued_at), u64be(identity.cert.expires_at), certSig),
  );
  const sig = ed25519Sign(concat(L_CLIENT, ZERO, th2), identity.seed);
  const mac = hmacSha256(hs.kHs, concat(L_CLIENT_MAC, ZERO, th2));
  const kC2s = hkdfExpand(hs.prk, concat(L_C2S, th2), 32);
  const kS2c = hkdfExpand(hs.prk, concat(L_S2C, th2), 32);
  const sessionId = b64uEncode(hkdfExpand(hs.prk, concat(L_SESSION, th2), 16));
  return {
    th2,
    sig,
    mac,
    kC2s,
    kS2c,
    sessionId,
    message: {
      type: 'client_auth',
      user: identity.user,
      device: identity.device,
      cert: { issued_at: identity.cert.issued_at, expires_at: identity.cert.expires_at, sig: identity.cert.sig },
      sig: b64uEncode(sig),
      mac: b64uEncode(mac),
    },
  };
}

// ---------------------------------------------------------------------------
// Sealed frames (§3)

/** nonce = 0x00000000 || u64be(counter). */
export function frameNonce(counter) {
  return concat([0, 0, 0, 0], u64be(counter));
}

/**
 * One direction pair of the sealed channel. Counters are taken synchronously when
 * `seal`/`open` is called, so callers must call them in frame order (the promises
 * may settle in any order; `FerrySession` sends in counter order).
 */
export class SealedChannel {
  static async create(kC2s, kS2c) {
    const usage = ['encrypt', 'decrypt'];
    const [c2s, s2c] = await Promise.all([
      crypto.subtle.importKey('raw', toArrayBuffer(kC2s), { name: 'AES-GCM' }, false, usage),
      crypto.subtle.importKey('raw', toArrayBuffer(kS2c), { name: 'AES-GCM' }, false, usage),
    ]);
    return new SealedChannel(c2s, s2c);
  }

  constructor(c2sKey, s2cKey) {
    this.c2sKey = c2sKey;
    this.s2cKey = s2cKey;
    this.sendCounter = 0;
    this.recvCounter = 0;
  }

  /** Seals UTF-8 `plaintext` (string or bytes) with K_c2s; resolves to an ArrayBuffer. */
  seal(plaintext) {
    const bytes = typeof plaintext === 'string' ? utf8(plaintext) : plaintext;
    const iv = frameNonce(this.sendCounter++);
    return crypto.subtle.encrypt({ name: 'AES-GCM', iv, tagLength: 128 }, this.c2sKey, toArrayBuffer(bytes));
  }

  /** Opens a frame sealed with K_s2c; resolves to the plaintext bytes, rejects if it fails. */
  async open(frame) {
    const iv = frameNonce(this.recvCounter++);
    const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv, tagLength: 128 }, this.s2cKey, toArrayBuffer(frame));
    return new Uint8Array(pt);
  }

  /** Seals with K_s2c (the server's direction); for tests only. */
  sealAsServer(plaintext, counter) {
    const bytes = typeof plaintext === 'string' ? utf8(plaintext) : plaintext;
    return crypto.subtle.encrypt({ name: 'AES-GCM', iv: frameNonce(counter), tagLength: 128 }, this.s2cKey, toArrayBuffer(bytes));
  }

  /** Opens with K_c2s (the server's view); for tests only. */
  async openAsServer(frame, counter) {
    return new Uint8Array(
      await crypto.subtle.decrypt({ name: 'AES-GCM', iv: frameNonce(counter), tagLength: 128 }, this.c2sKey, toArrayBuffer(frame)),
    );
  }
}

// ---------------------------------------------------------------------------
// Keys file (`ferry-load keys`)

/** The devices of a parsed key file, flattened: [{user, device, seed, cert, userIndex, deviceIndex}]. */
export function flattenKeys(keyFile) {
  if (!keyFile || keyFile.version !== 1 || !Array.isArray(keyFile.users)) {
    throw new Error('keys: expected {"version":1,"users":[…]} from `ferry-load keys`');
  }
  const out = [];
  keyFile.users.forEach((u, ui) => {
    u.devices.forEach((d, di) => {
      out.push({ user: u.user, device: d.device, seed: d.seed, cert: d.cert, userIndex: ui, deviceIndex: di });
    });
  });
  return out;
}

/** A flattened key entry as the identity `clientAuth` takes (seed decoded). */
export function identityOf(entry) {
  return { user: entry.user, device: entry.device, seed: b64uDecode(entry.seed, 32), cert: entry.cert };
}

/** The pinned server key from `__ENV.FERRY_SERVER_KEY` (b64u), or null for trust on first use. */
export function pinnedServerKeyFromEnv() {
  const k = __ENV.FERRY_SERVER_KEY;
  return k ? b64uDecode(k.trim(), 32) : null;
}

/**
 * Runs each primitive once so @noble builds its precomputed tables now (≈1 s per VU
 * in k6's interpreter) rather than inside the first measured handshake.
 */
export function warmUpCrypto() {
  const seed = randomBytes(32);
  const pk = ed25519PublicKey(seed);
  const msg = utf8('warm up');
  ed25519Verify(ed25519Sign(msg, seed), msg, pk);
  x25519SharedSecret(seed, x25519PublicKey(seed));
}

// ---------------------------------------------------------------------------
// A live session over k6's WebSocket

let firstSeenServerKey = null; // trust on first use, per VU

/**
 * One authenticated session. Usage:
 *
 *   const s = new FerrySession(url, identity, { serverKey, onEvent, onAck, … });
 *   s.connect().then((authOk) => { s.publish(bytes); … s.close(); });
 *
 * Callbacks (all optional): onAuthOk(msg), onAck(msg, sentAtMs), onEvent(msg),
 * onConflict(msg, sentAtMs), onError(msg, sentAtMs), onPresence(msg), onPong(msg,
 * sentAtMs), onMessage(msg) for anything else, onClose({code, reason, expected,
 * authenticated}), onFailure(kind, detail) for local failures (bad frame, …).
 */
export class FerrySession {
  constructor(url, identity, opts = {}) {
    this.url = url;
    this.identity = identity;
    this.opts = opts;
    this.pinned = opts.serverKey !== undefined ? opts.serverKey : pinnedServerKeyFromEnv();
    this.ws = null;
    this.channel = null;
    this.state = 'new'; // new → hello → auth → open → closing → closed
    this.pending = new Map(); // rid → send time (ms)
    this.rid = 0;
    this.sendChain = Promise.resolve();
    this.recvChain = Promise.resolve();
    this.closeCode = null;
    this.closedByUs = false;
    this.timings = {};
    this.sessionId = null;
    this.serverError = null;
    this.peerCloseCode = null;
  }

  /** Opens the socket and runs the handshake; resolves with `auth_ok`, rejects with HandshakeError. */
  connect() {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      this.timings.start = t0;
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(() => {
        fail(new HandshakeError('timeout', 'handshake did not finish within 10 s'));
        this.close(1000);
      }, this.opts.handshakeTimeoutMs || 10000);
      this._resolveAuth = (msg) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(msg);
      };
      this._rejectAuth = fail;

      const ws = new WebSocket(this.url);
      this.ws = ws;
      try {
        ws.binaryType = 'arraybuffer';
      } catch (_) {
        // k6 defaults to ArrayBuffer and may refuse to set it.
      }
      ws.onopen = () => {
        this.timings.open = Date.now();
        this.hello = clientHello();
        this.state = 'hello';
        ws.send(JSON.stringify(this.hello.message));
      };
      ws.onmessage = (ev) => this._onMessage(ev.data);
      ws.onerror = (ev) => {
        const detail = ev && ev.error ? String(ev.error) : 'websocket error';
        // k6 reports a close frame from the server as an error ("websocket: close 4002:
        // auth failed") and its close event then carries no code: keep the code here.
        const m = /close (\d{4})/.exec(detail);
        if (m) {
          this.peerCloseCode = Number(m[1]);
          if (this.state !== 'open' && this.state !== 'closing') {
            const said = this.serverError ? ` after error ${this.serverError}` : '';
            fail(new HandshakeError(`close_${m[1]}`, `closed during handshake${said}: ${detail}`));
          }
          return;
        }
        if (this.state !== 'open' && this.state !== 'closing' && this.state !== 'closed') {
          fail(new HandshakeError('ws_error', detail));
        } else if (this.opts.onFailure && this.state === 'open') {
          this.opts.onFailure('ws_error', detail);
        }
      };
      ws.onclose = (ev) => {
        const wasOpen = this.state === 'open' || this.state === 'closing';
        this.state = 'closed';
        this.closeCode = ev && ev.code !== undefined && ev.code !== null ? ev.code : (this.peerCloseCode ?? null);
        const reason = ev && ev.reason;
        if (!settled) {
          // Failures the server reports are counted by close code (4001, 4002, 4008, …);
          // the error frame before it, if any, is in the message.
          const code = `close_${this.closeCode === null || this.closeCode === undefined ? 'unknown' : this.closeCode}`;
          const said = this.serverError ? ` after error ${this.serverError}` : '';
          fail(new HandshakeError(code, `closed during handshake (${this.closeCode})${said} ${reason || ''}`));
        }
        if (this.opts.onClose) {
          this.opts.onClose({ code: this.closeCode, reason, expected: this.closedByUs, authenticated: wasOpen });
        }
      };
    });
  }

  _onMessage(data) {
    if (this.state === 'hello') return this._onServerHello(data);
    if (this.state === 'auth') {
      if (typeof data === 'string') {
        // The server refused client_auth: an error text frame, then close 4002. The
        // handshake fails when the close arrives, so it is counted by close code.
        let msg = null;
        try {
          msg = JSON.parse(data);
        } catch (_) {
          // not JSON: still a refusal
        }
        this.serverError = (msg && msg.code) || 'text_frame';
        return undefined;
      }
      return this._onSealed(data);
    }
    if (this.state === 'open' || this.state === 'closing') {
      if (typeof data === 'string') {
        this._localFailure('text_after_handshake', data.slice(0, 200));
        return undefined;
      }
      return this._onSealed(data);
    }
    return undefined;
  }

  _onServerHello(data) {
    try {
      if (typeof data !== 'string') throw new HandshakeError('unexpected_binary');
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (e) {
        throw new HandshakeError('malformed_hello', String(e));
      }
      if (msg && msg.type === 'error') {
        // e.g. unsupported_version; the server closes (4001) and onclose fails the handshake.
        this.serverError = msg.code || 'error';
        return undefined;
      }
      const pinned = this.pinned || firstSeenServerKey;
      const hs = processServerHello(this.hello.state, msg, pinned);
      if (!pinned) firstSeenServerKey = hs.serverKey;
      const auth = clientAuth(hs, this.identity);
      this.sessionId = auth.sessionId;
      this.state = 'auth';
      this.timings.clientAuth = Date.now();
      // Start importing the AES keys now; frames that arrive first wait on the chain.
      this.recvChain = SealedChannel.create(auth.kC2s, auth.kS2c).then((ch) => {
        this.channel = ch;
      });
      this.sendChain = this.recvChain;
      this.ws.send(JSON.stringify(auth.message));
    } catch (e) {
      this.handshakeErrorCode = e.code || 'handshake_error';
      this._rejectAuth(e instanceof HandshakeError ? e : new HandshakeError('handshake_error', String(e)));
      this.close(1000);
    }
    return undefined;
  }

  _onSealed(data) {
    // Open in arrival order (the counter is taken when `open` is called) and handle in order.
    this.recvChain = this.recvChain
      .then(() => this.channel.open(data))
      .then(
        (pt) => this._dispatch(pt),
        (e) => this._localFailure('bad_frame', String(e)),
      );
    return this.recvChain;
  }

  _dispatch(pt) {
    let msg;
    try {
      msg = JSON.parse(fromUtf8(pt));
    } catch (e) {
      this._localFailure('bad_json', String(e));
      return;
    }
    const o = this.opts;
    if (this.state === 'auth') {
      if (msg.type !== 'auth_ok') {
        this.handshakeErrorCode = msg.code || `unexpected_${msg.type}`;
        this._rejectAuth(new HandshakeError(this.handshakeErrorCode, msg.message));
        this.close(1000);
        return;
      }
      if (msg.session !== this.sessionId || msg.user !== this.identity.user || msg.device !== this.identity.device) {
        this.handshakeErrorCode = 'auth_ok_mismatch';
        this._rejectAuth(new HandshakeError('auth_ok_mismatch', 'auth_ok does not match the handshake'));
        this.close(1000);
        return;
      }
      this.state = 'open';
      this.timings.authOk = Date.now();
      this.authOk = msg;
      if (o.onAuthOk) o.onAuthOk(msg);
      this._resolveAuth(msg);
      return;
    }
    const sentAt = msg.rid !== undefined ? this._take(msg.rid) : undefined;
    switch (msg.type) {
      case 'ack':
        if (o.onAck) o.onAck(msg, sentAt);
        break;
      case 'event':
        if (o.onEvent) o.onEvent(msg);
        break;
      case 'conflict':
        if (o.onConflict) o.onConflict(msg, sentAt);
        break;
      case 'error':
        if (o.onError) o.onError(msg, sentAt);
        break;
      case 'presence':
        if (o.onPresence) o.onPresence(msg);
        break;
      case 'pong':
        if (o.onPong) o.onPong(msg, sentAt);
        break;
      default:
        if (o.onMessage) o.onMessage(msg, sentAt);
    }
  }

  _take(rid) {
    const t = this.pending.get(rid);
    this.pending.delete(rid);
    return t;
  }

  _localFailure(kind, detail) {
    if (this.opts.onFailure) this.opts.onFailure(kind, detail);
  }

  /** True once `auth_ok` arrived and until the socket closes. */
  get isOpen() {
    return this.state === 'open';
  }

  /** Seals and sends a message object; adds a `rid` and records its send time. Returns the rid. */
  send(msg) {
    if (this.state !== 'open') throw new Error(`send: session is ${this.state}`);
    const rid = msg.rid !== undefined ? msg.rid : ++this.rid;
    const body = { ...msg, rid };
    this.pending.set(rid, Date.now());
    const sealed = this.channel.seal(JSON.stringify(body));
    this.sendChain = this.sendChain
      .then(() => sealed)
      .then(
        (frame) => {
          if (this.state === 'open') this.ws.send(frame);
        },
        (e) => this._localFailure('seal_failed', String(e)),
      );
    return rid;
  }

  /** Publishes `payload` (bytes); returns the rid. `extra` adds fields (key, ttl, ephemeral…). */
  publish(payload, extra = {}) {
    return this.send({ type: 'publish', id: uuidv7(), payload: b64uEncode(payload), ...extra });
  }

  /** Sends `ping`; the `pong` reaches onPong with the send time. */
  ping() {
    return this.send({ type: 'ping' });
  }

  /** Requests still waiting for a reply. */
  get outstanding() {
    return this.pending.size;
  }

  /** Closes the socket (once sends queued so far have gone out). */
  close(code = 1000) {
    if (this.state === 'closed' || this.state === 'closing') return;
    const wasOpen = this.state === 'open';
    this.closedByUs = true;
    this.state = wasOpen ? 'closing' : this.state;
    const doClose = () => {
      try {
        if (this.ws) this.ws.close(code);
      } catch (_) {
        // already closed
      }
    };
    if (wasOpen) this.sendChain.then(doClose, doClose);
    else doClose();
  }
}

/** Loads a `ferry-load keys` file's text into the flattened device list. */
export function parseKeys(text) {
  return flattenKeys(JSON.parse(text));
}

export { ed25519PublicKey, ed25519Sign, ed25519Verify, x25519PublicKey, x25519SharedSecret, sha256 };
