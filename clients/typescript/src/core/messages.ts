/**
 * The messages of an established session (protocol §6): requests as the client
 * encodes them, replies and notifications as it decodes them, and the decoded
 * application-level shapes (events, devices, presence).
 *
 * @module
 */

import { b64uDecode, b64uEncode, isB64u } from './b64u.js';
import { ProtocolError, InvalidError } from './errors.js';
import { isU64 } from './keys.js';
import { isCanonicalUuid } from './uuid.js';

/** Largest `limit` of a `sync`. */
export const MAX_SYNC_LIMIT = 1000;
/** The server's default `limit` of a `sync`. */
export const DEFAULT_SYNC_LIMIT = 500;
/** Largest decoded `key`, bytes. */
export const MAX_KEY_LEN = 64;
/** Longest string `rid`. */
export const MAX_RID_LEN = 64;

/** A request id: a string of at most 64 characters or a 64-bit integer. */
export type Rid = string | number;

/** A publish request (§6.3). */
export interface PublishRequest {
  readonly type: 'publish';
  /** Canonical UUID, the idempotency key. */
  readonly id: string;
  /** The (already encrypted) payload. */
  readonly payload: Uint8Array;
  /** Names the record this event replaces, for conflict checks (1–64 bytes). */
  readonly key?: Uint8Array | undefined;
  /** The seq of the newest event with `key` this one builds on; 0 = none yet. */
  readonly base?: number | undefined;
  /** Seconds until the event expires. */
  readonly ttl?: number | undefined;
  /** Relay to connected devices only, never store. */
  readonly ephemeral?: boolean | undefined;
  /** With `ephemeral`: only these devices (b64u device keys). */
  readonly to?: readonly string[] | undefined;
}

/** Every request a client sends. */
export type ClientMessage =
  | PublishRequest
  | { readonly type: 'sync'; readonly after: number; readonly limit?: number | undefined }
  | { readonly type: 'cursor'; readonly seq: number }
  | { readonly type: 'devices' }
  | { readonly type: 'revoke'; readonly device: Uint8Array; readonly ts: number; readonly sig: Uint8Array }
  | { readonly type: 'token' }
  | { readonly type: 'ping' };

/**
 * Checks what the server would refuse as `bad_request` before it is sent.
 * Throws {@link InvalidError}.
 */
export function validateRequest(msg: ClientMessage): void {
  switch (msg.type) {
    case 'publish': {
      if (!isCanonicalUuid(msg.id)) throw new InvalidError('the event id must be a canonical lowercase UUID');
      if (!(msg.payload instanceof Uint8Array)) throw new InvalidError('the payload must be a Uint8Array');
      if (msg.ephemeral) {
        if (msg.key !== undefined || msg.base !== undefined || msg.ttl !== undefined) {
          throw new InvalidError('an ephemeral event takes no key, base or ttl');
        }
      } else if (msg.to !== undefined) {
        throw new InvalidError('to needs ephemeral');
      }
      if (msg.key !== undefined && (msg.key.length < 1 || msg.key.length > MAX_KEY_LEN)) {
        throw new InvalidError('key must be 1..=64 bytes');
      }
      if (msg.base !== undefined && msg.key === undefined) throw new InvalidError('base needs key');
      if (msg.base !== undefined && !isU64(msg.base)) throw new InvalidError('base must be a seq');
      if (msg.ttl !== undefined && !isU64(msg.ttl)) throw new InvalidError('ttl must be seconds');
      if (msg.to !== undefined && !msg.to.every((d) => isB64u(d, 32))) throw new InvalidError('to must list device keys');
      return;
    }
    case 'sync':
      if (!isU64(msg.after)) throw new InvalidError('after must be a seq');
      if (msg.limit !== undefined && (!Number.isInteger(msg.limit) || msg.limit < 1 || msg.limit > MAX_SYNC_LIMIT)) {
        throw new InvalidError('limit must be 1..=1000');
      }
      return;
    case 'cursor':
      if (!isU64(msg.seq)) throw new InvalidError('seq must be a seq');
      return;
    case 'revoke':
      if (msg.device.length !== 32 || msg.sig.length !== 64 || !isU64(msg.ts)) throw new InvalidError('malformed revoke');
      return;
    default:
      return;
  }
}

/** The JSON text of a request, with `rid` when given (the plaintext of a sealed frame). */
export function encodeRequest(msg: ClientMessage, rid?: Rid): string {
  const out: Record<string, unknown> = { type: msg.type };
  if (rid !== undefined) out.rid = rid;
  switch (msg.type) {
    case 'publish':
      out.id = msg.id;
      out.payload = b64uEncode(msg.payload);
      if (msg.key !== undefined) out.key = b64uEncode(msg.key);
      if (msg.base !== undefined) out.base = msg.base;
      if (msg.ttl !== undefined) out.ttl = msg.ttl;
      if (msg.ephemeral) out.ephemeral = true;
      if (msg.to !== undefined) out.to = [...msg.to];
      break;
    case 'sync':
      out.after = msg.after;
      if (msg.limit !== undefined) out.limit = msg.limit;
      break;
    case 'cursor':
      out.seq = msg.seq;
      break;
    case 'revoke':
      out.device = b64uEncode(msg.device);
      out.ts = msg.ts;
      out.sig = b64uEncode(msg.sig);
      break;
    default:
      break;
  }
  return JSON.stringify(out);
}

/** The limits of a session (`auth_ok.limits`, §10). */
export interface Limits {
  readonly max_payload: number;
  readonly max_ttl: number;
  readonly events_per_sec: number;
  readonly burst: number;
}

/** An event as on the wire (`event`, and each entry of `events`). */
export interface EventWire {
  readonly seq?: number;
  readonly id: string;
  readonly device: string;
  readonly ts: number;
  readonly payload: string;
  readonly key?: string;
  readonly ttl?: number;
  readonly ephemeral?: boolean;
}

/** A device as `devices` lists it. */
export interface DeviceInfoWire {
  readonly device: string;
  readonly online: boolean;
  readonly created_at: number;
  readonly last_seen: number;
  readonly cursor: number;
  readonly revoked_at?: number;
}

/** Every message a server sends in a session. `unknown` is a type this SDK does not know. */
export type ServerMessage =
  | {
      readonly type: 'auth_ok';
      readonly session: string;
      readonly user: string;
      readonly device: string;
      readonly head: number;
      readonly server_time: number;
      readonly limits: Limits;
    }
  | {
      readonly type: 'ack';
      readonly rid?: Rid;
      readonly id: string;
      readonly seq?: number;
      readonly ts?: number;
      readonly duplicate?: boolean;
      readonly ephemeral?: boolean;
      readonly delivered?: number;
    }
  | { readonly type: 'conflict'; readonly rid?: Rid; readonly id: string; readonly key: string; readonly head: number }
  | ({ readonly type: 'event' } & EventWire)
  | {
      readonly type: 'events';
      readonly rid?: Rid;
      readonly events: readonly EventWire[];
      readonly head: number;
      readonly more: boolean;
      readonly truncated?: { readonly oldest: number };
    }
  | { readonly type: 'devices'; readonly rid?: Rid; readonly devices: readonly DeviceInfoWire[] }
  | { readonly type: 'ok'; readonly rid?: Rid }
  | {
      readonly type: 'presence';
      readonly device: string;
      readonly online: boolean;
      readonly ts: number;
      readonly revoked?: boolean;
    }
  | {
      readonly type: 'token';
      readonly rid?: Rid;
      readonly access_token: string;
      readonly expires_at: number;
      readonly refresh_token?: string;
    }
  | { readonly type: 'pong'; readonly rid?: Rid; readonly server_time: number }
  | {
      readonly type: 'error';
      readonly rid?: Rid;
      readonly code: string;
      readonly message: string;
      readonly retry_after_ms?: number;
    }
  | { readonly type: 'unknown'; readonly rid?: Rid; readonly originalType: string };

type O = Record<string, unknown>;

function bad(what: string): never {
  throw new ProtocolError(`malformed server message: ${what}`);
}

const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isStr = (v: unknown): v is string => typeof v === 'string';
const optU64 = (v: unknown): boolean => v === undefined || isU64(v);
const optBool = (v: unknown): boolean => v === undefined || isBool(v);

function isRid(v: unknown): v is Rid {
  return (isStr(v) && v.length <= MAX_RID_LEN) || (typeof v === 'number' && Number.isSafeInteger(v));
}

function checkEvent(e: unknown, stored: boolean): EventWire {
  const o = e as O;
  if (!o || typeof o !== 'object') bad('event');
  if (!isCanonicalUuid(o.id) || !isB64u(o.device, 32) || !isU64(o.ts) || !isB64u(o.payload)) bad('event fields');
  if (stored ? !isU64(o.seq) : !optU64(o.seq)) bad('event seq');
  if (o.key !== undefined && !isB64u(o.key)) bad('event key');
  if (!optU64(o.ttl) || !optBool(o.ephemeral)) bad('event ttl/ephemeral');
  return o as unknown as EventWire;
}

/**
 * Parses and checks the plaintext of a sealed frame from the server. Unknown
 * fields are ignored; an unknown `type` is `{type: 'unknown'}`. Throws
 * {@link ProtocolError} on a known message of the wrong shape.
 */
export function decodeServerMessage(text: string): ServerMessage {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    bad('not JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad('not an object');
  const o = v as O;
  if (!isStr(o.type)) bad('no type');
  if (o.rid !== undefined && !isRid(o.rid)) bad('rid');
  switch (o.type) {
    case 'auth_ok': {
      const l = o.limits as O;
      if (!isB64u(o.user, 32) || !isB64u(o.device, 32) || !isStr(o.session) || !isU64(o.head) || !isU64(o.server_time)) {
        bad('auth_ok');
      }
      if (!l || typeof l !== 'object' || !isU64(l.max_payload) || !isU64(l.max_ttl) || !isU64(l.events_per_sec) || !isU64(l.burst)) {
        bad('auth_ok limits');
      }
      break;
    }
    case 'ack':
      if (!isCanonicalUuid(o.id) || !optU64(o.seq) || !optU64(o.ts) || !optBool(o.duplicate) || !optBool(o.ephemeral) || !optU64(o.delivered)) {
        bad('ack');
      }
      break;
    case 'conflict':
      if (!isStr(o.id) || !isStr(o.key) || !isU64(o.head)) bad('conflict');
      break;
    case 'event':
      checkEvent(o, o.ephemeral !== true);
      break;
    case 'events': {
      if (!Array.isArray(o.events) || !isU64(o.head) || !isBool(o.more)) bad('events');
      for (const e of o.events as unknown[]) checkEvent(e, true);
      const t = o.truncated as O | undefined;
      if (t !== undefined && (t === null || typeof t !== 'object' || !isU64(t.oldest))) bad('events truncated');
      break;
    }
    case 'devices':
      if (!Array.isArray(o.devices)) bad('devices');
      for (const d of o.devices as O[]) {
        if (!d || !isB64u(d.device, 32) || !isBool(d.online) || !isU64(d.created_at) || !isU64(d.last_seen) || !isU64(d.cursor) || !optU64(d.revoked_at)) {
          bad('device');
        }
      }
      break;
    case 'ok':
      break;
    case 'presence':
      if (!isB64u(o.device, 32) || !isBool(o.online) || !isU64(o.ts) || !optBool(o.revoked)) bad('presence');
      break;
    case 'token':
      if (!isStr(o.access_token) || !isU64(o.expires_at) || (o.refresh_token !== undefined && !isStr(o.refresh_token))) {
        bad('token');
      }
      break;
    case 'pong':
      if (!isU64(o.server_time)) bad('pong');
      break;
    case 'error':
      if (!isStr(o.code) || !isStr(o.message) || !optU64(o.retry_after_ms)) bad('error');
      break;
    default: {
      const out: { type: 'unknown'; originalType: string; rid?: Rid } = { type: 'unknown', originalType: o.type };
      if (o.rid !== undefined) out.rid = o.rid;
      return out;
    }
  }
  return o as unknown as ServerMessage;
}

/** One stored event of the user's log, decoded. */
export interface Event {
  /** Its position in the user's log. */
  readonly seq: number;
  /** Its id (canonical UUID). */
  readonly id: string;
  /** The device that published it (b64u). */
  readonly device: string;
  /** When it was stored, Unix ms. */
  readonly ts: number;
  /** The payload (ciphertext, for real applications). */
  readonly payload: Uint8Array;
  /** Its key, when published with one. */
  readonly key?: Uint8Array;
  /** Its TTL in seconds, when published with one. */
  readonly ttl?: number;
}

/** An ephemeral event: relayed live, never stored, no seq. */
export interface EphemeralEvent {
  readonly id: string;
  /** The device that published it (b64u). */
  readonly device: string;
  /** Server time, Unix ms. */
  readonly ts: number;
  readonly payload: Uint8Array;
}

/** A device of the user, as `devices` lists it. */
export interface DeviceInfo {
  /** The device key (b64u). */
  readonly device: string;
  /** Whether it has a session now. */
  readonly online: boolean;
  /** Unix ms. */
  readonly createdAt: number;
  /** Unix ms. */
  readonly lastSeen: number;
  /** The seq it reported as processed. */
  readonly cursor: number;
  /** When it was revoked, Unix ms. */
  readonly revokedAt?: number;
}

/** Another device of the user connected, left, or was revoked. */
export interface Presence {
  /** The device (b64u). */
  readonly device: string;
  readonly online: boolean;
  /** Server time, Unix ms. */
  readonly ts: number;
  readonly revoked: boolean;
}

/** Decodes a stored event from its (checked) wire form. */
export function eventFromWire(e: EventWire): Event {
  const out: { -readonly [K in keyof Event]: Event[K] } = {
    seq: e.seq as number,
    id: e.id,
    device: e.device,
    ts: e.ts,
    payload: b64uDecode(e.payload),
  };
  if (e.key !== undefined) out.key = b64uDecode(e.key);
  if (e.ttl !== undefined) out.ttl = e.ttl;
  return out;
}

/** Decodes an ephemeral event from its (checked) wire form. */
export function ephemeralFromWire(e: EventWire): EphemeralEvent {
  return { id: e.id, device: e.device, ts: e.ts, payload: b64uDecode(e.payload) };
}

/** Decodes a device entry. */
export function deviceFromWire(d: DeviceInfoWire): DeviceInfo {
  const out: { -readonly [K in keyof DeviceInfo]: DeviceInfo[K] } = {
    device: d.device,
    online: d.online,
    createdAt: d.created_at,
    lastSeen: d.last_seen,
    cursor: d.cursor,
  };
  if (d.revoked_at !== undefined) out.revokedAt = d.revoked_at;
  return out;
}

/** The `rid` a server message answers, if any. */
export function ridOf(msg: ServerMessage): Rid | undefined {
  return 'rid' in msg ? msg.rid : undefined;
}
