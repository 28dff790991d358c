/**
 * The handshake (protocol §4) as sans-IO state machines: values that consume input
 * (a text frame, the current time, fresh random bytes, the answer to the revocation
 * lookup) and return what to send. They never do IO, read the clock or draw
 * randomness themselves.
 *
 * ```text
 * client:  Start ─hello─▶ AwaitServerHello ─server_hello ok / client_auth─▶ AwaitAuthOk ─sealed auth_ok─▶ Established
 *                                │ pin mismatch, bad sig, all-zero dh, error frame ─▶ Closed
 * server:  AwaitHello ─client_hello ok / server_hello─▶ AwaitAuth ─checks ok─▶ AwaitDeviceCheck ─not revoked / auth_ok─▶ Established
 * ```
 *
 * @module
 */

import { b64uDecode, b64uEncode } from './b64u.js';
import { bytesEqual, concat, constantTimeEqual, fromUtf8, u64be, utf8 } from './bytes.js';
import {
  ed25519PublicKey,
  ed25519Sign,
  ed25519VerifyStrict,
  hkdfExpand,
  hkdfExtract,
  hmacSha256,
  isValidIdentityKey,
  sha256,
  x25519PublicKey,
  x25519SharedSecret,
} from './crypto.js';
import { HandshakeError } from './errors.js';
import {
  type DeviceCertificate,
  type DeviceCredentials,
  type ServerPin,
  certMessage,
  certificateToJson,
  isU64,
} from './keys.js';
import { type RandomSource, systemRandom } from './random.js';
import { type AeadBackend, Opener, Sealer } from './seal.js';

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** How far in the future a certificate's `issued_at` may be (clock skew), seconds. */
export const CERT_CLOCK_SKEW_SECS = 300;

const L_HS = utf8('ferry-hs/v1');
const L_SERVER = utf8('ferry-hs/v1 server');
const L_CLIENT = utf8('ferry-hs/v1 client');
const L_CLIENT_MAC = utf8('ferry-hs/v1 client-mac');
const L_CONFIRM = utf8('ferry-hs/v1 confirm');
const L_C2S = utf8('ferry-hs/v1 c2s');
const L_S2C = utf8('ferry-hs/v1 s2c');
const L_SESSION = utf8('ferry-hs/v1 session');
const ZERO = [0];

/** TH1 = SHA-256("ferry-hs/v1" || 0x00 || eph_c || nonce_c || eph_s || nonce_s || server_key). */
export function transcript1(
  ephC: Uint8Array,
  nonceC: Uint8Array,
  ephS: Uint8Array,
  nonceS: Uint8Array,
  serverKey: Uint8Array,
): Uint8Array {
  return sha256(concat(L_HS, ZERO, ephC, nonceC, ephS, nonceS, serverKey));
}

/** What the server key signs: `"ferry-hs/v1 server" || 0x00 || TH1`. */
export function serverSigMessage(th1: Uint8Array): Uint8Array {
  return concat(L_SERVER, ZERO, th1);
}

/** TH2 = SHA-256(TH1 || user || device || u64be(issued_at) || u64be(expires_at) || cert.sig). */
export function transcript2(th1: Uint8Array, user: Uint8Array, device: Uint8Array, cert: DeviceCertificate): Uint8Array {
  return sha256(concat(th1, user, device, u64be(cert.issuedAt), u64be(cert.expiresAt), cert.sig));
}

/** What the device key signs: `"ferry-hs/v1 client" || 0x00 || TH2`. */
export function clientSigMessage(th2: Uint8Array): Uint8Array {
  return concat(L_CLIENT, ZERO, th2);
}

/** The key-confirmation MAC input: `"ferry-hs/v1 client-mac" || 0x00 || TH2`. */
export function clientMacMessage(th2: Uint8Array): Uint8Array {
  return concat(L_CLIENT_MAC, ZERO, th2);
}

/** PRK = HKDF-Extract(TH1, dh) and K_hs = HKDF-Expand(PRK, "ferry-hs/v1 confirm", 32). */
export function handshakeSecret(th1: Uint8Array, dh: Uint8Array): { prk: Uint8Array; kHs: Uint8Array } {
  const prk = hkdfExtract(th1, dh);
  return { prk, kHs: hkdfExpand(prk, L_CONFIRM, 32) };
}

/** The keys of one session (§4.6). Secret, except the session id. */
export interface SessionKeys {
  /** Client → server sealing key. */
  readonly kC2s: Uint8Array;
  /** Server → client sealing key. */
  readonly kS2c: Uint8Array;
  /** The session id (b64u of 16 bytes), for logs. */
  readonly sessionId: string;
}

/** K_c2s, K_s2c and the session id from PRK and TH2. */
export function sessionKeys(prk: Uint8Array, th2: Uint8Array): SessionKeys {
  return {
    kC2s: hkdfExpand(prk, concat(L_C2S, th2), 32),
    kS2c: hkdfExpand(prk, concat(L_S2C, th2), 32),
    sessionId: b64uEncode(hkdfExpand(prk, concat(L_SESSION, th2), 16)),
  };
}

/** The client's fresh per-connection secrets, drawn by the caller. */
export interface ClientEphemeral {
  /** X25519 secret scalar, 32 bytes. */
  readonly secret: Uint8Array;
  /** 32 random bytes. */
  readonly nonce: Uint8Array;
}

/** Fresh {@link ClientEphemeral} values from `random`. */
export function randomEphemeral(random: RandomSource = systemRandom): ClientEphemeral {
  return { secret: random(32), nonce: random(32) };
}

/** A session after the handshake: the sealing and opening sides and who it is for. */
export class Established {
  /** The sealing side (client: K_c2s; server: K_s2c). */
  readonly sealer: Sealer;
  /** The opening side (client: K_s2c; server: K_c2s). */
  readonly opener: Opener;

  constructor(
    /** Which side this is. */
    readonly role: 'client' | 'server',
    /** The authenticated user's public key. */
    readonly user: Uint8Array,
    /** The authenticated device's public key. */
    readonly device: Uint8Array,
    /** The session keys (secret). */
    readonly keys: SessionKeys,
    backend: AeadBackend = 'auto',
  ) {
    const [mine, theirs] = role === 'client' ? [keys.kC2s, keys.kS2c] : [keys.kS2c, keys.kC2s];
    this.sealer = new Sealer(mine, backend);
    this.opener = new Opener(theirs, backend);
  }

  /** The session id (b64u), as `auth_ok` carries it. */
  get sessionId(): string {
    return this.keys.sessionId;
  }
}

type JsonObject = Record<string, unknown>;

function parseObject(text: string): JsonObject | null {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as JsonObject) : null;
  } catch {
    return null;
  }
}

function field(o: JsonObject, name: string, len: number): Uint8Array | null {
  const v = o[name];
  if (typeof v !== 'string') return null;
  try {
    return b64uDecode(v, len);
  } catch {
    return null;
  }
}

/** Client handshake states, named for what they expect next. */
export type ClientHandshakeState = 'awaitServerHello' | 'awaitAuthOk' | 'established' | 'closed';

/**
 * One connection's handshake, client side.
 *
 * ```ts
 * const hs = new ClientHandshake(credentials, pin, randomEphemeral());
 * ws.send(hs.clientHello());              // text
 * ws.send(hs.handleServerHello(text));    // text: client_auth; throws HandshakeError
 * const session = hs.established();       // sealer/opener; the first frame to open is auth_ok
 * hs.handleAuthOk(plaintextOfFirstFrame); // checks it; throws HandshakeError
 * ```
 */
export class ClientHandshake {
  #state: ClientHandshakeState = 'awaitServerHello';
  #secret: Uint8Array | null;
  readonly #eph: Uint8Array;
  readonly #nonce: Uint8Array;
  #serverKey: Uint8Array | null = null;
  #established: Established | null = null;

  constructor(
    private readonly creds: DeviceCredentials,
    private readonly pin: ServerPin,
    eph: ClientEphemeral,
    private readonly backend: AeadBackend = 'auto',
  ) {
    if (eph.secret.length !== 32 || eph.nonce.length !== 32) throw new RangeError('ephemeral secret and nonce are 32 bytes');
    this.#secret = eph.secret.slice();
    this.#eph = x25519PublicKey(this.#secret);
    this.#nonce = eph.nonce.slice();
  }

  /** The current state. */
  get state(): ClientHandshakeState {
    return this.#state;
  }

  /** The `client_hello` text frame. */
  clientHello(): string {
    return JSON.stringify({
      type: 'client_hello',
      v: PROTOCOL_VERSION,
      eph: b64uEncode(this.#eph),
      nonce: b64uEncode(this.#nonce),
    });
  }

  /**
   * Handles the server's reply to `client_hello` (a text frame): checks the pin,
   * the signature and the key exchange, and returns the `client_auth` text frame
   * to send. Afterwards the sealed channel is {@link ClientHandshake.established}.
   * Throws {@link HandshakeError}.
   */
  handleServerHello(text: string): string {
    if (this.#state !== 'awaitServerHello' || this.#secret === null) {
      this.#state = 'closed';
      throw new HandshakeError('unexpected');
    }
    const secret = this.#secret;
    this.#secret = null;
    this.#state = 'closed';
    const msg = parseObject(text);
    if (msg === null) throw new HandshakeError('malformed');
    if (msg.type === 'error') {
      throw new HandshakeError('refused', typeof msg.code === 'string' ? msg.code : 'error');
    }
    if (msg.type !== 'server_hello') throw new HandshakeError('unexpected');
    if (typeof msg.v !== 'number' || !Number.isInteger(msg.v)) throw new HandshakeError('malformed');
    if (msg.v !== PROTOCOL_VERSION) throw new HandshakeError('unsupported_version');
    const ephS = field(msg, 'eph', 32);
    const nonceS = field(msg, 'nonce', 32);
    const serverKey = field(msg, 'server_key', 32);
    const sig = field(msg, 'sig', 64);
    if (!ephS || !nonceS || !serverKey || !sig) throw new HandshakeError('malformed');
    // Public values: no constant time needed.
    if (this.pin.kind === 'key' && !bytesEqual(this.pin.key, serverKey)) {
      throw new HandshakeError('server_key_mismatch');
    }
    const th1 = transcript1(this.#eph, this.#nonce, ephS, nonceS, serverKey);
    if (!ed25519VerifyStrict(serverKey, serverSigMessage(th1), sig)) {
      throw new HandshakeError('server_signature');
    }
    const dh = x25519SharedSecret(secret, ephS);
    secret.fill(0);
    if (dh === null) throw new HandshakeError('bad_key');
    const { prk, kHs } = handshakeSecret(th1, dh);
    const device = this.creds.deviceKey.public();
    const cert = this.creds.cert;
    const th2 = transcript2(th1, this.creds.user, device, cert);
    const auth = {
      type: 'client_auth',
      user: b64uEncode(this.creds.user),
      device: b64uEncode(device),
      cert: certificateToJson(cert),
      sig: b64uEncode(this.creds.deviceKey.sign(clientSigMessage(th2))),
      mac: b64uEncode(hmacSha256(kHs, clientMacMessage(th2))),
    };
    this.#serverKey = serverKey;
    this.#established = new Established('client', this.creds.user, device, sessionKeys(prk, th2), this.backend);
    prk.fill(0);
    kHs.fill(0);
    dh.fill(0);
    this.#state = 'awaitAuthOk';
    return JSON.stringify(auth);
  }

  /** The server key the handshake accepted (pin it), once `server_hello` was accepted. */
  get serverKey(): Uint8Array | null {
    return this.#serverKey;
  }

  /**
   * The sealed channel, once `client_auth` has been produced. Its first frame to
   * open is the server's `auth_ok` (s2c counter 0).
   */
  established(): Established {
    if (this.#established === null) throw new HandshakeError('unexpected', undefined, 'no session yet');
    return this.#established;
  }

  /**
   * Checks the plaintext of the first sealed frame: an `auth_ok` for this session,
   * user and device. Returns it parsed. Throws {@link HandshakeError}.
   */
  handleAuthOk(plaintext: Uint8Array | string): JsonObject {
    const est = this.#established;
    if (this.#state !== 'awaitAuthOk' || est === null) throw new HandshakeError('unexpected');
    this.#state = 'closed';
    let text: string;
    try {
      text = typeof plaintext === 'string' ? plaintext : fromUtf8(plaintext);
    } catch {
      throw new HandshakeError('malformed');
    }
    const msg = parseObject(text);
    if (msg === null) throw new HandshakeError('malformed');
    if (msg.type !== 'auth_ok') throw new HandshakeError('unexpected', undefined, `first sealed frame is ${String(msg.type)}`);
    if (
      msg.session !== est.sessionId ||
      msg.user !== b64uEncode(est.user) ||
      msg.device !== b64uEncode(est.device) ||
      !isU64(msg.head)
    ) {
      throw new HandshakeError('auth_ok_mismatch');
    }
    this.#state = 'established';
    return msg;
  }
}

/** Why the server side refused a handshake: the close code and the `error` frame it sends, if any. */
export class ServerHandshakeError extends Error {
  override name = 'ServerHandshakeError';
  constructor(
    /** 4001 (handshake failed) or 4002 (auth failed). */
    readonly closeCode: 4001 | 4002,
    /** The `error` text frame to send before closing, if one is promised. */
    readonly errorFrame: string | undefined,
    /** Why, for logs and metrics (never sent). */
    readonly label: string,
  ) {
    super(`handshake refused (${closeCode}): ${label}`);
  }
}

/** The server's fresh per-connection secrets, drawn by the caller. */
export interface ServerEphemeral {
  /** X25519 secret scalar. */
  readonly secret: Uint8Array;
  /** 32 random bytes. */
  readonly nonce: Uint8Array;
}

/** Server handshake states, named for what they expect next. */
export type ServerHandshakeState = 'awaitHello' | 'awaitAuth' | 'awaitDeviceCheck' | 'established' | 'closed';

/**
 * One connection's handshake, server side: the relay's half of §4, for tests
 * (an in-memory client–server pair) and tools. Ferry's server is the Rust crate;
 * this mirrors its checks.
 */
export class ServerHandshake {
  #state: ServerHandshakeState = 'awaitHello';
  readonly #serverSeed: Uint8Array;
  readonly #serverKey: Uint8Array;
  readonly #eph: ServerEphemeral;
  #th1: Uint8Array | null = null;
  #prk: Uint8Array | null = null;
  #kHs: Uint8Array | null = null;
  #pending: { user: Uint8Array; device: Uint8Array; cert: DeviceCertificate; keys: SessionKeys } | null = null;

  constructor(serverSeed: Uint8Array, eph: ServerEphemeral, private readonly backend: AeadBackend = 'auto') {
    this.#serverSeed = serverSeed.slice();
    this.#serverKey = ed25519PublicKey(this.#serverSeed);
    this.#eph = { secret: eph.secret.slice(), nonce: eph.nonce.slice() };
  }

  /** The current state. */
  get state(): ServerHandshakeState {
    return this.#state;
  }

  #fail(code: 4001 | 4002, label: string, errorFrame?: object): never {
    this.#state = 'closed';
    throw new ServerHandshakeError(code, errorFrame ? JSON.stringify(errorFrame) : undefined, label);
  }

  /** Handles `client_hello`; returns the `server_hello` text frame. Throws {@link ServerHandshakeError}. */
  handleClientHello(text: string): string {
    if (this.#state !== 'awaitHello') this.#fail(4001, 'unexpected');
    const msg = parseObject(text);
    if (msg === null || msg.type !== 'client_hello') this.#fail(4001, 'malformed');
    if (typeof msg.v !== 'number' || !Number.isInteger(msg.v)) this.#fail(4001, 'malformed');
    if (msg.v !== PROTOCOL_VERSION) {
      this.#fail(4001, 'unsupported_version', {
        type: 'error',
        code: 'unsupported_version',
        message: 'unsupported protocol version',
        supported: [PROTOCOL_VERSION],
      });
    }
    const ephC = field(msg, 'eph', 32);
    const nonceC = field(msg, 'nonce', 32);
    if (!ephC || !nonceC) this.#fail(4001, 'malformed');
    const dh = x25519SharedSecret(this.#eph.secret, ephC);
    if (dh === null) this.#fail(4001, 'bad_key', { type: 'error', code: 'bad_key', message: 'bad ephemeral key' });
    const ephS = x25519PublicKey(this.#eph.secret);
    const th1 = transcript1(ephC, nonceC, ephS, this.#eph.nonce, this.#serverKey);
    const sig = ed25519Sign(this.#serverSeed, serverSigMessage(th1));
    const { prk, kHs } = handshakeSecret(th1, dh);
    this.#th1 = th1;
    this.#prk = prk;
    this.#kHs = kHs;
    this.#state = 'awaitAuth';
    return JSON.stringify({
      type: 'server_hello',
      v: PROTOCOL_VERSION,
      eph: b64uEncode(ephS),
      nonce: b64uEncode(this.#eph.nonce),
      server_key: b64uEncode(this.#serverKey),
      sig: b64uEncode(sig),
    });
  }

  /**
   * Handles `client_auth` at `nowSecs` (Unix seconds): every cryptographic check of
   * §4.5. Returns the user and device; the caller then looks the device up and
   * calls {@link ServerHandshake.handleDeviceCheck}. Throws {@link ServerHandshakeError}.
   */
  handleClientAuth(text: string, nowSecs: number): { user: Uint8Array; device: Uint8Array } {
    if (this.#state !== 'awaitAuth' || !this.#th1 || !this.#prk || !this.#kHs) this.#fail(4001, 'unexpected');
    const msg = parseObject(text);
    if (msg === null || msg.type !== 'client_auth') this.#fail(4001, 'malformed');
    const user = field(msg, 'user', 32);
    const device = field(msg, 'device', 32);
    const sig = field(msg, 'sig', 64);
    const mac = field(msg, 'mac', 32);
    const c = msg.cert as JsonObject | undefined;
    const certSig = c && typeof c === 'object' ? field(c, 'sig', 64) : null;
    if (!user || !device || !sig || !mac || !c || !certSig || !isU64(c.issued_at) || !isU64(c.expires_at)) {
      this.#fail(4001, 'malformed');
    }
    const cert: DeviceCertificate = { issuedAt: c.issued_at, expiresAt: c.expires_at, sig: certSig };
    const refuse = (label: string): never =>
      this.#fail(4002, label, { type: 'error', code: 'auth_failed', message: 'authentication failed' });
    if (!isValidIdentityKey(user) || !isValidIdentityKey(device)) refuse('weak_key');
    if (!ed25519VerifyStrict(user, certMessage(user, device, cert.issuedAt, cert.expiresAt), cert.sig)) {
      refuse('cert_signature');
    }
    if (cert.issuedAt > nowSecs + CERT_CLOCK_SKEW_SECS) refuse('cert_not_yet_valid');
    if (cert.expiresAt !== 0 && nowSecs >= cert.expiresAt) refuse('cert_expired');
    const th2 = transcript2(this.#th1, user, device, cert);
    if (!ed25519VerifyStrict(device, clientSigMessage(th2), sig)) refuse('client_signature');
    if (!constantTimeEqual(hmacSha256(this.#kHs, clientMacMessage(th2)), mac)) refuse('mac');
    this.#pending = { user, device, cert, keys: sessionKeys(this.#prk, th2) };
    this.#state = 'awaitDeviceCheck';
    return { user, device };
  }

  /**
   * The answer of the revocation lookup. Not revoked: returns the session, whose
   * first sealed frame must be `auth_ok` (see {@link authOkMessage}). Revoked:
   * throws {@link ServerHandshakeError} (4002).
   */
  handleDeviceCheck(revoked: boolean): Established {
    const p = this.#pending;
    if (this.#state !== 'awaitDeviceCheck' || p === null) this.#fail(4001, 'unexpected');
    if (revoked) this.#fail(4002, 'revoked', { type: 'error', code: 'auth_failed', message: 'authentication failed' });
    this.#state = 'established';
    return new Established('server', p.user, p.device, p.keys, this.backend);
  }
}

/** The `auth_ok` plaintext a server sends as its first sealed frame (§6.2). */
export function authOkMessage(
  session: Established,
  head: number,
  serverTimeMs: number,
  limits: { max_payload: number; max_ttl: number; events_per_sec: number; burst: number },
): string {
  return JSON.stringify({
    type: 'auth_ok',
    session: session.sessionId,
    user: b64uEncode(session.user),
    device: b64uEncode(session.device),
    head,
    server_time: serverTimeMs,
    limits,
  });
}
