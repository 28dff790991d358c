/**
 * The high-level client: one logical connection of one device that survives
 * disconnects, publishes with retries under a stable event id, and streams the
 * user's log in `seq` order without gaps or duplicates.
 *
 * @module
 */

import { b64uDecode, b64uEncode } from '../core/b64u.js';
import { Backoff } from '../core/backoff.js';
import {
  ConflictError,
  type FerryError,
  InvalidError,
  NoUserKeyError,
  ProtocolError,
  ServerError,
  ShutdownError,
  TimeoutError,
  TruncatedError,
} from '../core/errors.js';
import { type DeviceCredentials, type ServerPin, FIRST_USE, type UserKey, pinKey } from '../core/keys.js';
import {
  type ClientMessage,
  DEFAULT_SYNC_LIMIT,
  type DeviceInfo,
  type EphemeralEvent,
  type Event,
  type EventWire,
  MAX_SYNC_LIMIT,
  type Presence,
  type ServerMessage,
  deviceFromWire,
  ephemeralFromWire,
  eventFromWire,
} from '../core/messages.js';
import type { RandomSource } from '../core/random.js';
import type { AeadBackend } from '../core/seal.js';
import { Uuidv7Generator } from '../core/uuid.js';
import {
  type AuthOk,
  CONNECT_TIMEOUT_MS,
  Connection,
  type Incoming,
  KEEPALIVE_MS,
  REQUEST_TIMEOUT_MS,
} from './connection.js';
import { AsyncQueue, StopSignal, sleep } from './util.js';
import type { WebSocketConstructor } from './websocket.js';

const LIVE_QUEUE = 4096;
const NOTICE_QUEUE = 256;
/** A stream reports its position with `cursor` at least this often while it pages. */
const CURSOR_EVERY = 256;

/** How a {@link Client} connects and behaves. */
export interface ClientOptions {
  /** `ws://` or `wss://` URL of the server's `/v1/ws`. */
  readonly url: string;
  /** This device's credentials. */
  readonly credentials: DeviceCredentials;
  /**
   * How to trust the server key (default: first use). With first use the key of
   * the first connection is pinned for every reconnection ({@link Client.serverKey}).
   */
  readonly pin?: ServerPin | undefined;
  /** The user key, for {@link Client.revoke}; only on devices that hold it. */
  readonly userKey?: UserKey | undefined;
  /** The WebSocket constructor; default: the platform's (pass `ws`'s in Node 20). */
  readonly WebSocket?: WebSocketConstructor | undefined;
  /** Reconnect and retry delays (default 100 ms doubling up to 30 s, full jitter). */
  readonly backoff?: Backoff | undefined;
  /** Time limit of one connection attempt (socket and handshake), ms (default 20 s). */
  readonly connectTimeoutMs?: number | undefined;
  /** Time limit of one request's reply, ms (default 30 s). */
  readonly requestTimeoutMs?: number | undefined;
  /**
   * How long a call keeps retrying (reconnects, `unavailable`, `rate_limited`)
   * before it gives up with {@link TimeoutError}, ms (default 2 minutes).
   */
  readonly retryDeadlineMs?: number | undefined;
  /** Page size of `sync` (1–1000, default 500). */
  readonly syncLimit?: number | undefined;
  /** Keep-alive period, ms (default 30 s). */
  readonly keepaliveMs?: number | undefined;
  /** Which AES-GCM to use (default: WebCrypto where available). */
  readonly aead?: AeadBackend | undefined;
  /** Randomness (handshakes, event ids); default: `crypto.getRandomValues`. */
  readonly random?: RandomSource | undefined;
  /** The wall clock, Unix ms (event ids, revocation timestamps); default `Date.now`. */
  readonly now?: (() => number) | undefined;
}

/** What {@link Client.publish} sends besides the payload. */
export interface PublishOptions {
  /**
   * The event id (canonical lowercase UUID). Default: a fresh UUIDv7. Pass a stored
   * id to retry a publish across restarts: the server answers a repeated id with
   * the original ack and `duplicate: true`.
   */
  readonly id?: string | undefined;
  /** A key (1–64 bytes; a string is taken as UTF-8) for compare-and-set with `base`. */
  readonly key?: Uint8Array | string | undefined;
  /** Store only if the newest event with `key` has this seq (0: none exists). */
  readonly base?: number | undefined;
  /** Time to live, seconds. */
  readonly ttl?: number | undefined;
  /** Relay to connected devices only; never stored. */
  readonly ephemeral?: boolean | undefined;
  /** With `ephemeral`: only these devices (b64u keys or public key bytes). */
  readonly to?: readonly (string | Uint8Array)[] | undefined;
}

/** The server's acknowledgement of a publish. */
export interface Ack {
  /** The event id. */
  readonly id: string;
  /** The event's seq (stored events; absent for ephemeral ones). */
  readonly seq?: number;
  /** When it was stored, Unix ms (stored events). */
  readonly ts?: number;
  /** The id was already stored: this is the original ack, nothing new was stored. */
  readonly duplicate: boolean;
  /** Ephemeral events: how many devices it went to. */
  readonly delivered?: number;
}

/** One page of `sync`. */
export interface SyncPage {
  /** Events with `seq > after`, ascending (expired ones left out). */
  readonly events: Event[];
  /** The user's newest seq. */
  readonly head: number;
  /** More events follow this page. */
  readonly more: boolean;
  /** Retention removed events after `after`; this is the oldest seq still stored. */
  readonly truncated?: number;
}

/** REST tokens issued over the session (`token`). */
export interface SessionToken {
  readonly accessToken: string;
  /** Unix seconds. */
  readonly expiresAt: number;
  readonly refreshToken?: string;
}

/** What an {@link EventStream} yields. */
export type StreamItem =
  /** The next event of the log. */
  | { readonly type: 'event'; readonly event: Event }
  /**
   * Retention removed events the stream had not delivered; it goes on with
   * `oldest`. The application may want to rebuild its state from what follows.
   */
  | { readonly type: 'truncated'; readonly oldest: number; readonly error: TruncatedError }
  /**
   * The operator erased the user's data (4012): the stream starts again from seq 0;
   * the application should upload again what it holds (its keys stay valid).
   */
  | { readonly type: 'erased' }
  /** An event that could not be decoded (skipped; the stream goes on). */
  | { readonly type: 'malformed'; readonly seq: number; readonly error: ProtocolError };

/** The state of a {@link Client}'s connection. */
export type ConnectionState = 'up' | 'down' | 'final';

type State =
  | { readonly kind: 'up'; readonly generation: number; readonly conn: Connection; readonly auth: AuthOk }
  | { readonly kind: 'down' }
  | { readonly kind: 'final'; readonly error: FerryError };

type Live =
  | { readonly kind: 'event'; readonly event: Event }
  | { readonly kind: 'connected' }
  | { readonly kind: 'erased' }
  | { readonly kind: 'final'; readonly error: FerryError };

/**
 * Live notifications ({@link Presence}, {@link EphemeralEvent}) from now on, as an
 * async iterable. Slow readers miss the oldest ones rather than hold anything up.
 */
export class Subscription<T> implements AsyncIterable<T> {
  readonly #queue = new AsyncQueue<T>(NOTICE_QUEUE);
  #unsubscribe: () => void = () => undefined;

  /** @internal */
  constructor(subscribe: (push: (v: T) => void, end: () => void) => () => void) {
    this.#unsubscribe = subscribe(
      (v) => this.#queue.push(v),
      () => this.#queue.close(),
    );
  }

  /** The next notification; `undefined` once the client has stopped or {@link Subscription.close}. */
  next(): Promise<T | undefined> {
    return this.#queue.shift();
  }

  /** Notifications missed because the reader was slow. */
  get missed(): number {
    return this.#queue.dropped;
  }

  /** Stops the subscription. */
  close(): void {
    this.#unsubscribe();
    this.#queue.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    try {
      for (;;) {
        const v = await this.next();
        if (v === undefined) return;
        yield v;
      }
    } finally {
      this.close();
    }
  }
}

function keyBytes(key: Uint8Array | string | undefined): Uint8Array | undefined {
  if (key === undefined) return undefined;
  return typeof key === 'string' ? new TextEncoder().encode(key) : key;
}

function deviceText(d: string | Uint8Array): string {
  return typeof d === 'string' ? d : b64uEncode(d);
}

function unexpected(what: string, msg: ServerMessage): ProtocolError {
  return new ProtocolError(`unexpected reply ${JSON.stringify(msg.type)} to ${what}`);
}

/**
 * The high-level client of one device: a logical connection that reconnects with
 * jittered exponential backoff, retries what is safe to retry, and keeps the event
 * log gap-free.
 *
 * Reconnection stops for good on 4002 (authentication failed), 4003 (revoked) and
 * 4011 (another session of this device took over), and when the server key does
 * not match the pin; every call then fails with that error ({@link Client.closed}).
 *
 * ```ts
 * const client = await Client.connect({ url, credentials, pin: pinKey(serverKey) });
 * const ack = await client.publish(ciphertext);
 * for await (const item of client.syncFrom(0)) {
 *   if (item.type === 'event') apply(item.event);
 * }
 * ```
 */
export class Client {
  readonly #opts: ClientOptions;
  readonly #backoff: Backoff;
  readonly #device: string;
  readonly #user: string;
  #pin: ServerPin;
  #state: State = { kind: 'down' };
  readonly #stateWaiters = new Set<() => void>();
  readonly #streams = new Set<EventStream>();
  readonly #presence = new Set<(p: Presence) => void>();
  readonly #ephemeral = new Set<(e: EphemeralEvent) => void>();
  readonly #stateListeners = new Set<(s: ConnectionState, error?: FerryError) => void>();
  readonly #stop = new StopSignal();
  readonly #ids: Uuidv7Generator;
  readonly #now: () => number;
  readonly #dropLive: number[] = [];
  #closing: Promise<void> | null = null;

  private constructor(opts: ClientOptions, first: Connection, auth: AuthOk) {
    this.#opts = opts;
    this.#backoff = opts.backoff ?? new Backoff();
    this.#device = opts.credentials.deviceKey.publicB64u();
    this.#user = b64uEncode(opts.credentials.user);
    this.#pin = pinKey(auth.serverKey);
    this.#ids = new Uuidv7Generator(opts.random);
    this.#now = opts.now ?? Date.now;
    this.#setUp(1, first, auth);
    void this.#supervise(first, 1);
  }

  /**
   * Connects once (so a wrong URL, key or pin fails here) and starts keeping the
   * connection in the background.
   */
  static async connect(opts: ClientOptions): Promise<Client> {
    const limit = opts.syncLimit ?? DEFAULT_SYNC_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SYNC_LIMIT) {
      throw new InvalidError('syncLimit must be 1..=1000');
    }
    const { connection, authOk } = await Connection.connect(opts.url, opts.credentials, opts.pin ?? FIRST_USE, {
      WebSocket: opts.WebSocket,
      timeoutMs: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
      requestTimeoutMs: opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
      keepaliveMs: opts.keepaliveMs ?? KEEPALIVE_MS,
      aead: opts.aead,
      random: opts.random,
    });
    return new Client(opts, connection, authOk);
  }

  /** The server key in use: the pinned one, or the one seen first (store it). */
  get serverKey(): Uint8Array {
    return this.#pin.kind === 'key' ? this.#pin.key.slice() : new Uint8Array(0);
  }

  /** This device's public key (b64u). */
  get device(): string {
    return this.#device;
  }

  /** The user's public key (b64u). */
  get user(): string {
    return this.#user;
  }

  /** Whether a session is up right now. */
  get isConnected(): boolean {
    return this.#state.kind === 'up' && !this.#state.conn.isClosed;
  }

  /** `up`, `down` (reconnecting) or `final` (stopped for good). */
  get connectionState(): ConnectionState {
    return this.#state.kind;
  }

  /** The current session's `auth_ok`, while connected. */
  get authOk(): AuthOk | null {
    return this.#state.kind === 'up' ? this.#state.auth : null;
  }

  /** Which AES-GCM the current session uses (`webcrypto` or `noble`). */
  get aeadBackend(): string | undefined {
    return this.#state.kind === 'up' ? this.#state.conn.aeadBackend : undefined;
  }

  /**
   * Calls `listener` whenever the connection goes up, down or stops for good (with
   * the error then). Returns a function that removes it.
   */
  onStateChange(listener: (state: ConnectionState, error?: FerryError) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Resolves when the client stops for good, with why (4002, 4003, 4011, a key
   * mismatch, or {@link ShutdownError} after {@link Client.close}).
   */
  async closed(): Promise<FerryError> {
    for (;;) {
      const s = this.#state;
      if (s.kind === 'final') return s.error;
      await this.#stateChanged();
    }
  }

  /**
   * Closes the connection normally and stops reconnecting; every pending and later
   * call fails with {@link ShutdownError}.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.fire();
      const s = this.#state;
      if (s.kind === 'up') await s.conn.close();
      await this.closed();
    })();
    return this.#closing;
  }

  /**
   * Publishes one event and waits for the server's ack (sent only once the event
   * is stored durably).
   *
   * The event id is fixed before the first attempt, so retrying is always safe: on
   * `unavailable`, on `rate_limited` (after `retry_after_ms`), on a timeout and
   * after a lost connection (once reconnected) the same publish is sent again, and
   * if it had been stored the server answers with the original ack and `duplicate:
   * true`. Retries end at {@link ClientOptions.retryDeadlineMs}.
   *
   * A `key`/`base` mismatch is {@link ConflictError}.
   */
  async publish(payload: Uint8Array, opts: PublishOptions = {}): Promise<Ack> {
    const id = opts.id ?? this.#ids.next(this.#now());
    const key = keyBytes(opts.key);
    const msg: ClientMessage = {
      type: 'publish',
      id,
      payload,
      key,
      base: opts.base,
      ttl: opts.ttl,
      ephemeral: opts.ephemeral === true ? true : undefined,
      to: opts.to?.map(deviceText),
    };
    const reply = await this.#call(msg, true);
    if (reply.type === 'conflict') throw new ConflictError(reply.head);
    if (reply.type !== 'ack') throw unexpected('publish', reply);
    const ack: { -readonly [K in keyof Ack]: Ack[K] } = { id: reply.id, duplicate: reply.duplicate === true };
    if (reply.seq !== undefined) ack.seq = reply.seq;
    if (reply.ts !== undefined) ack.ts = reply.ts;
    if (reply.delivered !== undefined) ack.delivered = reply.delivered;
    if (ack.seq !== undefined && !opts.ephemeral && !ack.duplicate) {
      // The server does not relay an event back to its origin: put our own event
      // into the live feed so streams see it without a sync. (Not for a duplicate:
      // what is stored under that id came first.)
      const own: { -readonly [K in keyof Event]: Event[K] } = {
        seq: ack.seq,
        id: ack.id,
        device: this.#device,
        ts: ack.ts ?? 0,
        payload,
      };
      if (key !== undefined) own.key = key;
      if (opts.ttl !== undefined) own.ttl = opts.ttl;
      this.#live({ kind: 'event', event: own });
    }
    return ack;
  }

  /** One page of the log after `after` (retried across reconnects). Most applications want {@link Client.syncFrom}. */
  async sync(after: number, limit = this.#opts.syncLimit ?? DEFAULT_SYNC_LIMIT): Promise<SyncPage> {
    const raw = await this.#syncRaw(after, limit);
    const page: { -readonly [K in keyof SyncPage]: SyncPage[K] } = {
      events: raw.events.map(eventFromWire),
      head: raw.head,
      more: raw.more,
    };
    if (raw.truncated !== undefined) page.truncated = raw.truncated;
    return page;
  }

  /** @internal */
  async syncRaw(after: number, limit: number): Promise<{ events: readonly EventWire[]; head: number; more: boolean; truncated?: number }> {
    return this.#syncRaw(after, limit);
  }

  async #syncRaw(after: number, limit: number): Promise<{ events: readonly EventWire[]; head: number; more: boolean; truncated?: number }> {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SYNC_LIMIT) throw new InvalidError('limit must be 1..=1000');
    const reply = await this.#call({ type: 'sync', after, limit }, true);
    if (reply.type !== 'events') throw unexpected('sync', reply);
    const out: { events: readonly EventWire[]; head: number; more: boolean; truncated?: number } = {
      events: reply.events,
      head: reply.head,
      more: reply.more,
    };
    if (reply.truncated) out.truncated = reply.truncated.oldest;
    return out;
  }

  /**
   * The user's log after `cursor`, then live, as an {@link EventStream}: in `seq`
   * order, without duplicates, and without gaps — a live event whose seq is not
   * the next one, a reconnect, or a stream that fell behind triggers a `sync` from
   * the last delivered seq before going on. The stream includes this device's own
   * events. Each event counts as processed once the next one is asked for; the
   * stream reports that position to the server with `cursor`.
   */
  syncFrom(cursor = 0): EventStream {
    return new EventStream(this, cursor);
  }

  /** Calls `listener` with the presence of the user's other devices; returns a function that removes it. */
  onPresence(listener: (p: Presence) => void): () => void {
    this.#presence.add(listener);
    return () => this.#presence.delete(listener);
  }

  /** Calls `listener` with ephemeral events from the user's other devices; returns a function that removes it. */
  onEphemeral(listener: (e: EphemeralEvent) => void): () => void {
    this.#ephemeral.add(listener);
    return () => this.#ephemeral.delete(listener);
  }

  /** Presence of the user's other devices, from now on. */
  presence(): Subscription<Presence> {
    return new Subscription<Presence>((push, end) => this.#notices(this.#presence, push, end));
  }

  /** Ephemeral events from the user's other devices, from now on. */
  ephemeral(): Subscription<EphemeralEvent> {
    return new Subscription<EphemeralEvent>((push, end) => this.#notices(this.#ephemeral, push, end));
  }

  #notices<T>(set: Set<(v: T) => void>, push: (v: T) => void, end: () => void): () => void {
    set.add(push);
    const offState = this.onStateChange((s) => {
      if (s === 'final') end();
    });
    if (this.#state.kind === 'final') end();
    return () => {
      set.delete(push);
      offState();
    };
  }

  /** Every device of the user. */
  async devices(): Promise<DeviceInfo[]> {
    const reply = await this.#call({ type: 'devices' }, true);
    if (reply.type !== 'devices') throw unexpected('devices', reply);
    return reply.devices.map(deviceFromWire);
  }

  /**
   * Revokes a device of the user, signing with the user key (needs
   * {@link ClientOptions.userKey}). Its sessions close with 4003 and it can no
   * longer connect. Not retried after a lost connection (a revocation is accepted
   * only once); check {@link Client.devices} and call again if needed.
   */
  async revoke(device: string | Uint8Array): Promise<void> {
    const userKey = this.#opts.userKey;
    if (!userKey) throw new NoUserKeyError();
    const deviceKey = typeof device === 'string' ? b64uDecode(device, 32) : device;
    const ts = this.#now();
    const reply = await this.#call({ type: 'revoke', device: deviceKey, ts, sig: userKey.signRevocation(deviceKey, ts) }, false);
    if (reply.type !== 'ok') throw unexpected('revoke', reply);
  }

  /**
   * Records that this device has processed the log up to `seq` (the server never
   * moves it back). {@link EventStream} does this by itself.
   */
  async setCursor(seq: number): Promise<void> {
    const { conn } = await this.#connection(0);
    conn.send({ type: 'cursor', seq });
  }

  /** Round trip to the server; returns the server's clock (Unix ms). */
  async ping(): Promise<number> {
    const reply = await this.#call({ type: 'ping' }, true);
    if (reply.type !== 'pong') throw unexpected('ping', reply);
    return reply.server_time;
  }

  /** REST API tokens for this device, issued over the session (protocol §6.12). */
  async token(): Promise<SessionToken> {
    const reply = await this.#call({ type: 'token' }, true);
    if (reply.type !== 'token') throw unexpected('token', reply);
    const out: { -readonly [K in keyof SessionToken]: SessionToken[K] } = {
      accessToken: reply.access_token,
      expiresAt: reply.expires_at,
    };
    if (reply.refresh_token !== undefined) out.refreshToken = reply.refresh_token;
    return out;
  }

  /**
   * Test hook: the live copy of the event with this seq is dropped on arrival, as
   * if lost, so that gap detection has something to detect.
   * @internal
   */
  debugDropLiveEvent(seq: number): void {
    this.#dropLive.push(seq);
  }

  /** @internal The sync page size of this client's streams. */
  get syncLimit(): number {
    return this.#opts.syncLimit ?? DEFAULT_SYNC_LIMIT;
  }

  /** @internal */
  get backoff(): Backoff {
    return this.#backoff;
  }

  /** @internal */
  registerStream(s: EventStream): () => void {
    this.#streams.add(s);
    if (this.#state.kind === 'final') s.push({ kind: 'final', error: this.#state.error });
    return () => this.#streams.delete(s);
  }

  /** @internal Sends `cursor` on the current session if there is one; false otherwise. */
  trySendCursor(seq: number): boolean {
    const s = this.#state;
    if (s.kind !== 'up' || s.conn.isClosed) return false;
    try {
      s.conn.send({ type: 'cursor', seq });
      return true;
    } catch {
      return false;
    }
  }

  #stateChanged(): Promise<void> {
    return new Promise((resolve) => {
      const cb = (): void => {
        this.#stateWaiters.delete(cb);
        resolve();
      };
      this.#stateWaiters.add(cb);
    });
  }

  #setState(s: State): void {
    this.#state = s;
    for (const w of [...this.#stateWaiters]) w();
    for (const l of [...this.#stateListeners]) {
      try {
        if (s.kind === 'final') l(s.kind, s.error);
        else l(s.kind);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  #setUp(generation: number, conn: Connection, auth: AuthOk): void {
    conn.onIncoming = (item) => this.#route(item);
    this.#setState({ kind: 'up', generation, conn, auth });
    this.#live({ kind: 'connected' });
  }

  #setFinal(error: FerryError): void {
    if (this.#state.kind === 'final') return;
    this.#setState({ kind: 'final', error });
    this.#live({ kind: 'final', error });
  }

  #live(item: Live): void {
    for (const s of this.#streams) s.push(item);
  }

  #route(item: Incoming): void {
    switch (item.kind) {
      case 'event': {
        const e = item.event;
        if (e.ephemeral === true || e.seq === undefined) {
          const ev = ephemeralFromWire(e);
          for (const l of [...this.#ephemeral]) l(ev);
          return;
        }
        const i = this.#dropLive.indexOf(e.seq);
        if (i >= 0) {
          this.#dropLive.splice(i, 1);
          return;
        }
        this.#live({ kind: 'event', event: eventFromWire(e) });
        return;
      }
      case 'presence':
        for (const l of [...this.#presence]) l(item.presence);
        return;
      default:
        return;
    }
  }

  /** The background task: follows the current connection, reconnects with backoff. */
  async #supervise(first: Connection, firstGeneration: number): Promise<void> {
    let conn = first;
    let generation = firstGeneration;
    for (;;) {
      const reason = await conn.closed;
      if (this.#stop.aborted) {
        this.#setFinal(new ShutdownError());
        return;
      }
      if (reason.isErased()) this.#live({ kind: 'erased' });
      if (reason.isFinal()) {
        this.#setFinal(reason);
        return;
      }
      this.#setState({ kind: 'down' });
      let attempt = 0;
      for (;;) {
        const delay = this.#backoff.delay(attempt);
        attempt++;
        if (!(await sleep(delay, this.#stop))) {
          this.#setFinal(new ShutdownError());
          return;
        }
        try {
          const { connection, authOk } = await Connection.connect(this.#opts.url, this.#opts.credentials, this.#pin, {
            WebSocket: this.#opts.WebSocket,
            timeoutMs: this.#opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
            requestTimeoutMs: this.#opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
            keepaliveMs: this.#opts.keepaliveMs ?? KEEPALIVE_MS,
            aead: this.#opts.aead,
            random: this.#opts.random,
          });
          if (this.#stop.aborted) {
            await connection.close();
            this.#setFinal(new ShutdownError());
            return;
          }
          generation++;
          conn = connection;
          this.#setUp(generation, connection, authOk);
          break;
        } catch (e) {
          const err = e as FerryError;
          if (typeof err.isFinal === 'function' && err.isFinal()) {
            this.#setFinal(err);
            return;
          }
        }
      }
    }
  }

  /** The current session, waiting for one whose generation is at least `minGeneration`. */
  async #connection(minGeneration: number, deadline = Infinity): Promise<{ generation: number; conn: Connection }> {
    for (;;) {
      const s = this.#state;
      if (s.kind === 'final') throw s.error;
      if (s.kind === 'up' && s.generation >= minGeneration && !s.conn.isClosed) {
        return { generation: s.generation, conn: s.conn };
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new TimeoutError('no connection before the retry deadline');
      await Promise.race([this.#stateChanged(), sleep(Math.min(left, 1000))]);
    }
  }

  /**
   * Sends a request on the current session; with `retry`, retries on
   * `unavailable`, `rate_limited`, timeouts and lost connections until the retry
   * deadline.
   */
  async #call(msg: ClientMessage, retry: boolean): Promise<ServerMessage> {
    const deadline = Date.now() + (this.#opts.retryDeadlineMs ?? 120_000);
    let minGeneration = 0;
    let attempt = 0;
    for (;;) {
      const { generation, conn } = await this.#connection(minGeneration, deadline);
      let err: FerryError;
      try {
        return await conn.request(msg, this.#opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
      } catch (e) {
        err = e as FerryError;
      }
      if (!retry || typeof err.isFinal !== 'function' || err.isFinal() || Date.now() >= deadline) throw err;
      let wait: number;
      if (err instanceof ServerError && err.code === 'unavailable') {
        wait = err.retryAfterMs ?? this.#backoff.delay(attempt);
      } else if (err instanceof ServerError && err.code === 'rate_limited') {
        wait = err.retryAfterMs ?? this.#backoff.delay(attempt);
      } else if (err instanceof TimeoutError && !conn.isClosed) {
        wait = 0;
      } else if (conn.isClosed) {
        // The session is gone: wait for the next one, then send again.
        minGeneration = generation + 1;
        wait = 0;
      } else {
        throw err;
      }
      attempt++;
      if (Date.now() + wait >= deadline) throw err;
      if (wait > 0 && !(await sleep(wait, this.#stop))) throw new ShutdownError();
    }
  }
}

/**
 * The user's log in `seq` order: what `sync` returns, then live events, with no
 * duplicates and no gaps (see {@link Client.syncFrom}). An async iterable of
 * {@link StreamItem}s; it ends when the client is closed, and throws the client's
 * final error (4002, 4003, 4011, a key mismatch) when it stops for good.
 */
export class EventStream implements AsyncIterable<StreamItem> {
  readonly #client: Client;
  readonly #live = new AsyncQueue<Live>(LIVE_QUEUE);
  readonly #buffer: { seq: number; item: StreamItem }[] = [];
  #delivered: number;
  #processed: number;
  #cursorSent: number;
  #needSync = true;
  #finished = false;
  #gaps = 0;
  #syncs = 0;
  #retry = 0;
  readonly #unregister: () => void;

  /** @internal */
  constructor(client: Client, cursor: number) {
    this.#client = client;
    this.#delivered = cursor;
    this.#processed = cursor;
    this.#cursorSent = cursor;
    this.#unregister = client.registerStream(this);
  }

  /** @internal */
  push(item: Live): void {
    this.#live.push(item);
  }

  /** The seq of the last event delivered. */
  get position(): number {
    return this.#delivered;
  }

  /** How many times a live event did not follow the last one and a sync filled the gap. */
  get gapsDetected(): number {
    return this.#gaps;
  }

  /** How many `sync` requests the stream made. */
  get syncs(): number {
    return this.#syncs;
  }

  /** Stops the stream (it ends; the client goes on). */
  close(): void {
    this.#finished = true;
    this.#unregister();
    this.#live.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamItem> {
    try {
      for (;;) {
        const item = await this.next();
        if (item === undefined) return;
        yield item;
      }
    } finally {
      this.close();
    }
  }

  /**
   * The next item; `undefined` once the stream or the client was closed. Calling it
   * marks the previous event as processed. Rejects with the client's final error.
   */
  async next(): Promise<StreamItem | undefined> {
    if (this.#finished) return undefined;
    this.#processed = this.#delivered;
    for (;;) {
      const head = this.#buffer.shift();
      if (head !== undefined) {
        if (head.seq <= this.#delivered) continue;
        this.#delivered = head.seq;
        if (this.#delivered - this.#cursorSent >= CURSOR_EVERY) this.#reportCursor();
        return head.item;
      }
      if (this.#needSync) {
        const report = await this.#syncPage();
        if (report) return report;
        continue;
      }
      this.#reportCursor();
      if (this.#live.dropped > 0) {
        // Fell behind the live feed: what was dropped comes from a sync.
        this.#live.dropped = 0;
        this.#needSync = true;
        continue;
      }
      const live = await this.#live.shift();
      if (live === undefined) {
        this.#finished = true;
        return undefined;
      }
      switch (live.kind) {
        case 'event': {
          const e = live.event;
          if (e.seq <= this.#delivered) continue;
          if (e.seq === this.#delivered + 1) {
            this.#buffer.push({ seq: e.seq, item: { type: 'event', event: e } });
          } else {
            this.#gaps++;
            this.#needSync = true;
          }
          continue;
        }
        case 'connected':
          this.#needSync = true;
          continue;
        case 'erased':
          // The log the positions refer to is gone: the user's next event is seq 1 again.
          this.#buffer.length = 0;
          this.#delivered = 0;
          this.#processed = 0;
          this.#cursorSent = 0;
          this.#needSync = true;
          return { type: 'erased' };
        case 'final':
          this.#finished = true;
          this.#unregister();
          if (live.error.kind === 'shutdown') return undefined;
          throw live.error;
      }
    }
  }

  /** Fetches one page into the buffer; returns a truncation to report, if any. */
  async #syncPage(): Promise<StreamItem | undefined> {
    this.#syncs++;
    let page: Awaited<ReturnType<Client['syncRaw']>>;
    try {
      page = await this.#client.syncRaw(this.#delivered, this.#client.syncLimit);
    } catch (e) {
      const err = e as FerryError;
      if (typeof err.isFinal === 'function' && err.isFinal()) {
        this.#finished = true;
        this.#unregister();
        if (err.kind === 'shutdown') return undefined;
        throw err;
      }
      // The retry deadline passed (offline for long, say): keep trying, more
      // slowly, until the client stops for good.
      await sleep(this.#client.backoff.delay(this.#retry));
      this.#retry++;
      return undefined;
    }
    this.#retry = 0;
    this.#needSync = page.more && page.events.length > 0;
    for (const e of page.events) {
      const seq = e.seq as number;
      let item: StreamItem;
      try {
        item = { type: 'event', event: eventFromWire(e) };
      } catch (err) {
        item = { type: 'malformed', seq, error: new ProtocolError(`event ${seq} is malformed: ${String(err)}`) };
      }
      this.#buffer.push({ seq, item });
    }
    if (page.truncated !== undefined && page.truncated > this.#delivered + 1) {
      const oldest = page.truncated;
      // Skip what was removed, so it is reported once.
      this.#delivered = Math.max(this.#delivered, oldest - 1);
      return { type: 'truncated', oldest, error: new TruncatedError(oldest) };
    }
    return undefined;
  }

  #reportCursor(): void {
    if (this.#processed <= this.#cursorSent) return;
    if (this.#client.trySendCursor(this.#processed)) this.#cursorSent = this.#processed;
  }
}

