/**
 * Everything one device needs to connect, and where the application keeps it: a
 * {@link Profile} (the same JSON as the Rust SDK's `profile.json`) saved in a
 * {@link KeyStore} the application provides ({@link MemoryKeyStore} here; the notes
 * example keeps it in IndexedDB).
 *
 * @module
 */

import { b64uEncode } from '../core/b64u.js';
import { bytesEqual } from '../core/bytes.js';
import { InvalidError } from '../core/errors.js';
import {
  type CertificateJson,
  type DeviceCertificate,
  type DeviceCredentials,
  DeviceKey,
  FIRST_USE,
  type LinkGrant,
  type ServerPin,
  UserKey,
  certificateFromJson,
  certificateToJson,
  decodeFixed,
  pinKey,
  verifyCertificate,
} from '../core/keys.js';
import type { RandomSource } from '../core/random.js';

/**
 * Where an application keeps secrets: a small string-valued store. Implement it
 * over whatever the platform offers (IndexedDB, the OS keychain, an encrypted
 * file); the SDK only reads and writes the values it is given.
 */
export interface KeyStore {
  /** The value saved under `name`, or `null`. */
  get(name: string): Promise<string | null>;
  /** Saves `value` under `name`, replacing what was there. */
  set(name: string, value: string): Promise<void>;
  /** Removes `name`. */
  delete(name: string): Promise<void>;
}

/** A {@link KeyStore} in memory (tests, short-lived tools). */
export class MemoryKeyStore implements KeyStore {
  readonly #values = new Map<string, string>();

  get(name: string): Promise<string | null> {
    return Promise.resolve(this.#values.get(name) ?? null);
  }

  set(name: string, value: string): Promise<void> {
    this.#values.set(name, value);
    return Promise.resolve();
  }

  delete(name: string): Promise<void> {
    this.#values.delete(name);
    return Promise.resolve();
  }
}

/** The JSON form of a profile, as the Rust SDK writes `profile.json`. */
export interface ProfileJson {
  v: 1;
  server_url: string;
  server_key?: string | null;
  user_public: string;
  user_secret?: string | null;
  device_secret: string;
  cert: CertificateJson;
}

/** Everything one device needs to connect. Holds secrets: keep its JSON where secrets go. */
export class Profile {
  private constructor(
    /** `ws://` or `wss://` URL of the server's `/v1/ws`. */
    public serverUrl: string,
    /** The pinned server key; `undefined` until first use. */
    public serverKey: Uint8Array | undefined,
    /** The user's public key. */
    readonly userPublic: Uint8Array,
    readonly userSecret: Uint8Array | undefined,
    readonly deviceSecret: Uint8Array,
    /** This device's certificate. */
    readonly cert: DeviceCertificate,
  ) {}

  /**
   * A new user with this as its first device: generates the user key and the
   * device key and certifies the device (issued `nowSecs`, no expiry).
   */
  static create(
    serverUrl: string,
    serverKey?: Uint8Array,
    opts: { random?: RandomSource; nowSecs?: number } = {},
  ): Profile {
    const user = UserKey.generate(opts.random);
    const device = DeviceKey.generate(opts.random);
    const cert = user.certify(device.public(), opts.nowSecs ?? Math.floor(Date.now() / 1000), 0);
    return new Profile(serverUrl, serverKey?.slice(), user.public(), user.seed(), device.seed(), cert);
  }

  /**
   * A linked device's profile: its own key and the grant a user-key device issued
   * for it. Fails when the grant is for another device; `serverKey` wins over the
   * grant's, and when both are set they must agree.
   */
  static join(serverUrl: string, serverKey: Uint8Array | undefined, device: DeviceKey, grant: LinkGrant): Profile {
    if (!bytesEqual(grant.device, device.public())) {
      throw new InvalidError('the link grant was issued for another device key');
    }
    if (!verifyCertificate(grant.user, grant.device, grant.cert)) {
      throw new InvalidError('the certificate does not verify for this user and device');
    }
    if (serverKey && grant.serverKey && !bytesEqual(serverKey, grant.serverKey)) {
      throw new InvalidError('the link grant pins a different server key than this device');
    }
    return new Profile(serverUrl, (serverKey ?? grant.serverKey)?.slice(), grant.user.slice(), undefined, device.seed(), grant.cert);
  }

  /** This device's key. */
  deviceKey(): DeviceKey {
    return DeviceKey.fromSeed(this.deviceSecret);
  }

  /** This device's public key (b64u). */
  devicePublicB64u(): string {
    return this.deviceKey().publicB64u();
  }

  /** The user key, on devices that hold it. */
  userKey(): UserKey | undefined {
    return this.userSecret ? UserKey.fromSeed(this.userSecret) : undefined;
  }

  /** The credentials for the handshake. */
  credentials(): DeviceCredentials {
    return this.deviceKey().credentials(this.userPublic, this.cert);
  }

  /** How to trust the server: the pinned key, or the first one seen. */
  pin(): ServerPin {
    return this.serverKey ? pinKey(this.serverKey) : FIRST_USE;
  }

  /**
   * Checks that the certificate verifies for this user and device and that the
   * user secret, when present, belongs to the user key. Throws {@link InvalidError}.
   */
  validate(): void {
    if (!verifyCertificate(this.userPublic, this.deviceKey().public(), this.cert)) {
      throw new InvalidError('the certificate does not verify for this user and device');
    }
    const user = this.userKey();
    if (user && !bytesEqual(user.public(), this.userPublic)) {
      throw new InvalidError('user_secret does not belong to user_public');
    }
  }

  /** The profile as JSON (secrets included: treat the text as a secret). */
  toJson(): string {
    const json: ProfileJson = {
      v: 1,
      server_url: this.serverUrl,
      server_key: this.serverKey ? b64uEncode(this.serverKey) : null,
      user_public: b64uEncode(this.userPublic),
      user_secret: this.userSecret ? b64uEncode(this.userSecret) : null,
      device_secret: b64uEncode(this.deviceSecret),
      cert: certificateToJson(this.cert),
    };
    return JSON.stringify(json, null, 2);
  }

  /** Parses {@link Profile.toJson}'s text (or a Rust SDK `profile.json`) and validates it. */
  static fromJson(text: string): Profile {
    let json: ProfileJson;
    try {
      json = JSON.parse(text) as ProfileJson;
    } catch (e) {
      throw new InvalidError(`the profile is malformed: ${String(e)}`);
    }
    if (!json || typeof json !== 'object') throw new InvalidError('the profile is malformed');
    if (json.v !== 1) throw new InvalidError(`profile version ${String(json.v)} is not supported`);
    if (typeof json.server_url !== 'string') throw new InvalidError('the profile is malformed: server_url');
    const p = new Profile(
      json.server_url,
      json.server_key == null ? undefined : decodeFixed(json.server_key, 32, 'server_key'),
      decodeFixed(json.user_public, 32, 'user_public'),
      json.user_secret == null ? undefined : decodeFixed(json.user_secret, 32, 'user_secret'),
      decodeFixed(json.device_secret, 32, 'device_secret'),
      certificateFromJson(json.cert),
    );
    p.validate();
    return p;
  }

  /** Saves the profile in `store` under `name`. */
  async save(store: KeyStore, name = 'ferry-profile'): Promise<void> {
    await store.set(name, this.toJson());
  }

  /** Loads the profile saved in `store` under `name`, or `null` when there is none. */
  static async load(store: KeyStore, name = 'ferry-profile'): Promise<Profile | null> {
    const text = await store.get(name);
    return text === null ? null : Profile.fromJson(text);
  }

  /** Never prints secrets. */
  toJSON(): { server_url: string; user_public: string; device_public: string } {
    return {
      server_url: this.serverUrl,
      user_public: b64uEncode(this.userPublic),
      device_public: this.devicePublicB64u(),
    };
  }
}
