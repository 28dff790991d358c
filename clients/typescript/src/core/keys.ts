/**
 * Identities (protocol §2): user and device keys, device certificates, the link
 * grant that certifies a new device, and the other signed statements (revocation,
 * REST login).
 *
 * @module
 */

import { b64uDecode, b64uEncode } from './b64u.js';
import { concat, fromUtf8, u64be, utf8, wipe } from './bytes.js';
import { ed25519PublicKey, ed25519Sign, ed25519VerifyStrict, isValidIdentityKey } from './crypto.js';
import { InvalidError } from './errors.js';
import { type RandomSource, systemRandom } from './random.js';

const L_CERT = utf8('ferry-device-cert/v1');
const L_REVOKE = utf8('ferry-revoke/v1');
const L_REST = utf8('ferry-rest/v1');
const ZERO = [0];

/** A device certificate: the user key's signature over {@link certMessage}. */
export interface DeviceCertificate {
  /** Unix seconds. */
  readonly issuedAt: number;
  /** Unix seconds; 0 means it never expires. */
  readonly expiresAt: number;
  /** Ed25519 signature, 64 bytes. */
  readonly sig: Uint8Array;
}

/** A certificate as it travels in JSON: `{"issued_at","expires_at","sig"}`. */
export interface CertificateJson {
  issued_at: number;
  expires_at: number;
  sig: string;
}

/**
 * `"ferry-device-cert/v1" || 0x00 || user || device || u64be(issued_at) ||
 * u64be(expires_at)`, 101 bytes.
 */
export function certMessage(user: Uint8Array, device: Uint8Array, issuedAt: number, expiresAt: number): Uint8Array {
  return concat(L_CERT, ZERO, user, device, u64be(issuedAt), u64be(expiresAt));
}

/** Whether `cert` is the user key's valid (strictly verified) certificate for `device`. */
export function verifyCertificate(user: Uint8Array, device: Uint8Array, cert: DeviceCertificate): boolean {
  if (!isValidIdentityKey(user) || !isValidIdentityKey(device)) return false;
  return ed25519VerifyStrict(user, certMessage(user, device, cert.issuedAt, cert.expiresAt), cert.sig);
}

/** A certificate in its JSON form. */
export function certificateToJson(cert: DeviceCertificate): CertificateJson {
  return { issued_at: cert.issuedAt, expires_at: cert.expiresAt, sig: b64uEncode(cert.sig) };
}

/** Parses a certificate's JSON form (checks types and encodings, not the signature). */
export function certificateFromJson(json: unknown): DeviceCertificate {
  const o = json as Partial<CertificateJson> | null;
  if (!o || typeof o !== 'object' || !isU64(o.issued_at) || !isU64(o.expires_at) || typeof o.sig !== 'string') {
    throw new InvalidError('the certificate must be {"issued_at","expires_at","sig"}');
  }
  return { issuedAt: o.issued_at, expiresAt: o.expires_at, sig: decodeFixed(o.sig, 64, 'cert.sig') };
}

/** `"ferry-revoke/v1" || 0x00 || user || device || u64be(ts_ms)`, 88 bytes. */
export function revocationMessage(user: Uint8Array, device: Uint8Array, tsMs: number): Uint8Array {
  return concat(L_REVOKE, ZERO, user, device, u64be(tsMs));
}

/** `"ferry-rest/v1" || 0x00 || challenge || server_key`, 78 bytes. */
export function restLoginMessage(challenge: Uint8Array, serverKey: Uint8Array): Uint8Array {
  return concat(L_REST, ZERO, challenge, serverKey);
}

/** Whether `n` is an integer the protocol can carry (non-negative, below 2^53). */
export function isU64(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** Decodes b64u of exactly `len` bytes, or throws {@link InvalidError} naming `what`. */
export function decodeFixed(text: unknown, len: number, what: string): Uint8Array {
  try {
    return b64uDecode(text as string, len);
  } catch {
    throw new InvalidError(`${what} must be b64u of ${len} bytes`);
  }
}

abstract class SigningKeyBase {
  readonly #seed: Uint8Array;
  readonly #public: Uint8Array;

  protected constructor(seed: Uint8Array) {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new InvalidError('an Ed25519 seed is 32 bytes');
    this.#seed = seed.slice();
    this.#public = ed25519PublicKey(this.#seed);
  }

  /** The Ed25519 seed (a copy). Secret: store it only where the application keeps secrets. */
  seed(): Uint8Array {
    return this.#seed.slice();
  }

  /** The public key, 32 bytes (a copy): what the protocol uses as the id. */
  public(): Uint8Array {
    return this.#public.slice();
  }

  /** The public key as b64u (43 characters), as on the wire. */
  publicB64u(): string {
    return b64uEncode(this.#public);
  }

  /** Signs `message` (Ed25519, deterministic). */
  sign(message: Uint8Array): Uint8Array {
    return ed25519Sign(this.#seed, message);
  }

  /** Overwrites the seed held by this object (best effort). */
  wipe(): void {
    wipe(this.#seed);
  }

  /** Never prints the seed. */
  toJSON(): { public: string } {
    return { public: this.publicB64u() };
  }
}

/**
 * The user (account) key. Whoever holds it can certify devices and revoke them;
 * keep it on as few devices as possible.
 */
export class UserKey extends SigningKeyBase {
  private constructor(seed: Uint8Array) {
    super(seed);
  }

  /** A fresh random user key. */
  static generate(random: RandomSource = systemRandom): UserKey {
    return new UserKey(random(32));
  }

  /** The user key with this Ed25519 seed (secret). */
  static fromSeed(seed: Uint8Array): UserKey {
    return new UserKey(seed);
  }

  /** Issues a certificate for `devicePublic` (Unix seconds; `expiresAt = 0`: never). */
  certify(devicePublic: Uint8Array, issuedAt: number, expiresAt = 0): DeviceCertificate {
    const sig = this.sign(certMessage(this.public(), devicePublic, issuedAt, expiresAt));
    return { issuedAt, expiresAt, sig };
  }

  /**
   * Certifies a new device and wraps the result as a {@link LinkGrant} to hand to
   * it, with the server it should use (URL and, when known, the pinned key).
   */
  link(
    devicePublic: Uint8Array,
    issuedAt: number,
    expiresAt = 0,
    serverUrl?: string,
    serverKey?: Uint8Array,
  ): LinkGrant {
    return new LinkGrant(
      this.public(),
      devicePublic,
      this.certify(devicePublic, issuedAt, expiresAt),
      serverUrl,
      serverKey,
    );
  }

  /** Signs the revocation of `device` at `tsMs` (Unix milliseconds). */
  signRevocation(device: Uint8Array, tsMs: number): Uint8Array {
    return this.sign(revocationMessage(this.public(), device, tsMs));
  }
}

/** One device's own key. It never leaves the device. */
export class DeviceKey extends SigningKeyBase {
  private constructor(seed: Uint8Array) {
    super(seed);
  }

  /** A fresh random device key. */
  static generate(random: RandomSource = systemRandom): DeviceKey {
    return new DeviceKey(random(32));
  }

  /** The device key with this Ed25519 seed (secret). */
  static fromSeed(seed: Uint8Array): DeviceKey {
    return new DeviceKey(seed);
  }

  /** The credentials this device authenticates with. */
  credentials(user: Uint8Array, cert: DeviceCertificate): DeviceCredentials {
    return { user: user.slice(), deviceKey: this, cert };
  }

  /** Signs a REST login challenge for the server with key `serverKey`. */
  signRestChallenge(challenge: Uint8Array, serverKey: Uint8Array): Uint8Array {
    return this.sign(restLoginMessage(challenge, serverKey));
  }
}

/** What a device proves itself with in the handshake. */
export interface DeviceCredentials {
  /** The user's public key. */
  readonly user: Uint8Array;
  /** The device's key. */
  readonly deviceKey: DeviceKey;
  /** The certificate the user key issued for this device. */
  readonly cert: DeviceCertificate;
}

/**
 * How the client decides to trust the server key (protocol §4.3): only a given
 * key, or the first key seen (the caller stores it and pins it next time).
 */
export type ServerPin = { readonly kind: 'key'; readonly key: Uint8Array } | { readonly kind: 'firstUse' };

/** Pins `key`. */
export function pinKey(key: Uint8Array): ServerPin {
  if (key.length !== 32) throw new InvalidError('a server key is 32 bytes');
  return { kind: 'key', key: key.slice() };
}

/** Trust on first use. */
export const FIRST_USE: ServerPin = Object.freeze({ kind: 'firstUse' });

interface GrantJson {
  v: number;
  user: string;
  device: string;
  cert: CertificateJson;
  server_url?: string;
  server_key?: string;
}

/**
 * A certificate for a new device, as the user's existing device hands it over.
 * The same text format as the Rust SDK's `LinkGrant` (so `ferry-client link`
 * output is accepted here and the other way round).
 *
 * Linking a device:
 * 1. the new device generates a {@link DeviceKey} and shows its public key (b64u);
 * 2. a device holding the {@link UserKey} calls {@link UserKey.link} with it and
 *    shows the {@link LinkGrant.encode}d text;
 * 3. the new device {@link LinkGrant.decode}s it (which checks the signature) and
 *    builds its profile with it (`Profile.join`).
 *
 * The grant holds only public values: it can travel over any channel the user can
 * see both ends of (copy and paste, a QR code).
 */
export class LinkGrant {
  constructor(
    /** The user's public key. */
    readonly user: Uint8Array,
    /** The certified device's public key. */
    readonly device: Uint8Array,
    /** The certificate. */
    readonly cert: DeviceCertificate,
    /** The server URL the existing device uses. */
    readonly serverUrl?: string,
    /** The server key the existing device pinned. */
    readonly serverKey?: Uint8Array,
  ) {}

  /** The grant as one line of text (b64u of a small JSON document). */
  encode(): string {
    const json: GrantJson = {
      v: 1,
      user: b64uEncode(this.user),
      device: b64uEncode(this.device),
      cert: certificateToJson(this.cert),
    };
    if (this.serverUrl !== undefined) json.server_url = this.serverUrl;
    if (this.serverKey !== undefined) json.server_key = b64uEncode(this.serverKey);
    return b64uEncode(utf8(JSON.stringify(json)));
  }

  /** Parses {@link LinkGrant.encode}'s text and checks the certificate. */
  static decode(text: string): LinkGrant {
    let json: GrantJson;
    try {
      json = JSON.parse(fromUtf8(b64uDecode(text.trim()))) as GrantJson;
    } catch {
      throw new InvalidError('the link grant is not b64u of JSON');
    }
    if (!json || typeof json !== 'object') throw new InvalidError('the link grant is malformed');
    if (json.v !== 1) throw new InvalidError(`link grant version ${String(json.v)} is not supported`);
    if (json.server_url !== undefined && typeof json.server_url !== 'string') {
      throw new InvalidError('the link grant is malformed: server_url');
    }
    const grant = new LinkGrant(
      decodeFixed(json.user, 32, 'user'),
      decodeFixed(json.device, 32, 'device'),
      certificateFromJson(json.cert),
      json.server_url,
      json.server_key === undefined ? undefined : decodeFixed(json.server_key, 32, 'server_key'),
    );
    if (!verifyCertificate(grant.user, grant.device, grant.cert)) {
      throw new InvalidError('the certificate does not verify for this user and device');
    }
    return grant;
  }
}
