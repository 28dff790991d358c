// Ferry wire protocol v1, client side, for k6: the IO shell around the TypeScript
// SDK's sans-IO core (clients/typescript/src/core, bundled into dist/ferry-crypto.js
// by `npm run build`). The core holds the protocol — b64u, keys and certificates, the
// handshake state machine, sealed frames (AES-GCM on k6's WebCrypto) — and this file
// only drives it over k6's WebSocket and keeps the metrics hooks the scripts use.

import { WebSocket } from 'k6/experimental/websockets';
import {
  ClientHandshake,
  DeviceKey,
  FIRST_USE,
  HandshakeError as CoreHandshakeError,
  PROTOCOL_VERSION,
  b64uDecode,
  b64uEncode,
  bytesEqual,
  concat,
  ed25519PublicKey,
  ed25519Sign,
  ed25519VerifyStrict,
  exactBuffer,
  fromUtf8,
  pinKey,
  randomEphemeral,
  systemRandom,
  u64be,
  utf8,
  uuidv7 as coreUuidv7,
  x25519PublicKey,
  x25519SharedSecret,
} from '../dist/ferry-crypto.js';

export {
  PROTOCOL_VERSION,
  b64uDecode,
  b64uEncode,
  bytesEqual,
  concat,
  ed25519PublicKey,
  ed25519Sign,
  ed25519VerifyStrict,
  fromUtf8,
  u64be,
  utf8,
  x25519PublicKey,
  x25519SharedSecret,
};

/** `n` random bytes. */
export function randomBytes(n) {
  return systemRandom(n);
}

/** A UUIDv7 in canonical form (time-ordered ids land at the right edge of the server's index). */
export function uuidv7() {
  return coreUuidv7(Date.now());
}

/**
 * A handshake failed; `code` is a short reason for metrics: the core's failure
 * (`server_key_mismatch`, `server_signature`, `bad_key`, `malformed`, …), the code of
 * an `error` frame from the server, `close_<code>`, `timeout` or `ws_error`.
 */
export class HandshakeError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'HandshakeError';
    this.code = code;
  }
}

function handshakeError(e) {
  if (e instanceof CoreHandshakeError) {
    return new HandshakeError(e.failure === 'refused' ? e.refusedCode || 'refused' : e.failure, e.message);
  }
  return e instanceof HandshakeError ? e : new HandshakeError('handshake_error', String(e));
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

/** A flattened key entry as FerrySession takes it (seed decoded). */
export function identityOf(entry) {
  return { user: entry.user, device: entry.device, seed: b64uDecode(entry.seed, 32), cert: entry.cert };
}

/** Loads a `ferry-load keys` file's text into the flattened device list. */
export function parseKeys(text) {
  return flattenKeys(JSON.parse(text));
}

// Credentials per device, built once per VU: a DeviceKey derives its public key (one
// scalar multiplication, ~20 ms in k6's interpreter) when it is made.
const credentialsCache = new Map();

/** The core's DeviceCredentials for an identity ({user, device, seed, cert}). */
export function credentialsOf(identity) {
  let creds = credentialsCache.get(identity.device);
  if (!creds) {
    const key = DeviceKey.fromSeed(identity.seed);
    if (key.publicB64u() !== identity.device) throw new Error(`keys: the seed of ${identity.device} is another key's`);
    creds = key.credentials(b64uDecode(identity.user, 32), {
      issuedAt: identity.cert.issued_at,
      expiresAt: identity.cert.expires_at,
      sig: b64uDecode(identity.cert.sig, 64),
    });
    credentialsCache.set(identity.device, creds);
  }
  return creds;
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
  ed25519VerifyStrict(pk, msg, ed25519Sign(seed, msg));
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
    this.hs = null;
    this.session = null; // the core's Established: sealer and opener
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
        const pinned = this.pinned || firstSeenServerKey;
        this.hs = new ClientHandshake(credentialsOf(this.identity), pinned ? pinKey(pinned) : FIRST_USE, randomEphemeral());
        this.state = 'hello';
        ws.send(this.hs.clientHello());
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
      let typed = null;
      try {
        typed = JSON.parse(data);
      } catch (_) {
        // not JSON: the state machine says so below
      }
      if (typed && typed.type === 'error') {
        // e.g. unsupported_version; the server closes (4001) and onclose fails the handshake.
        this.serverError = typed.code || 'error';
        return undefined;
      }
      const auth = this.hs.handleServerHello(data);
      if (!this.pinned && !firstSeenServerKey) firstSeenServerKey = this.hs.serverKey;
      this.session = this.hs.established();
      this.sessionId = this.session.sessionId;
      this.state = 'auth';
      this.timings.clientAuth = Date.now();
      this.ws.send(auth);
    } catch (e) {
      const err = handshakeError(e);
      this.handshakeErrorCode = err.code;
      this._rejectAuth(err);
      this.close(1000);
    }
    return undefined;
  }

  _onSealed(data) {
    // The opener takes the counter now, in arrival order; results are handled in order.
    const opened = this.session.opener.open(new Uint8Array(data));
    opened.catch(() => undefined);
    this.recvChain = this.recvChain.then(() =>
      opened.then(
        (pt) => this._dispatch(pt),
        (e) => this._localFailure('bad_frame', String(e)),
      ),
    );
    return this.recvChain;
  }

  _dispatch(pt) {
    if (this.state === 'auth') {
      let msg;
      try {
        msg = this.hs.handleAuthOk(pt);
      } catch (e) {
        const err = handshakeError(e);
        this.handshakeErrorCode = err.code;
        this._rejectAuth(err);
        this.close(1000);
        return;
      }
      this.state = 'open';
      this.timings.authOk = Date.now();
      this.authOk = msg;
      if (this.opts.onAuthOk) this.opts.onAuthOk(msg);
      this._resolveAuth(msg);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(fromUtf8(pt));
    } catch (e) {
      this._localFailure('bad_json', String(e));
      return;
    }
    const o = this.opts;
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
    // The sealer takes the counter now; frames go out in that order.
    const sealed = this.session.sealer.seal(JSON.stringify(body));
    sealed.catch(() => undefined);
    this.sendChain = this.sendChain
      .then(() => sealed)
      .then(
        (frame) => {
          if (this.state === 'open') this.ws.send(exactBuffer(frame).buffer);
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
