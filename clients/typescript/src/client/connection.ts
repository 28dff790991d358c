/**
 * One session with the server: the WebSocket, the handshake, and the sealed
 * channel. It never reconnects; {@link Client} builds reconnection, retries and
 * gap-free event streams on top of it.
 *
 * @module
 */

import { fromUtf8 } from '../core/bytes.js';
import { CloseCode } from '../core/close.js';
import {
  ClosedError,
  type FerryError,
  HandshakeError,
  ProtocolError,
  ServerError,
  ShutdownError,
  TimeoutError,
  TransportError,
} from '../core/errors.js';
import { ClientHandshake, type Established, randomEphemeral } from '../core/handshake.js';
import type { DeviceCredentials, ServerPin } from '../core/keys.js';
import {
  type ClientMessage,
  type EventWire,
  type Limits,
  type Presence,
  type ServerMessage,
  decodeServerMessage,
  encodeRequest,
  validateRequest,
} from '../core/messages.js';
import type { RandomSource } from '../core/random.js';
import type { AeadBackend } from '../core/seal.js';
import { AsyncQueue, type Deferred, deferred } from './util.js';
import {
  WS_OPEN,
  type WebSocketConstructor,
  type WebSocketLike,
  binaryData,
  checkWsUrl,
  resolveWebSocket,
} from './websocket.js';

/** How long {@link Connection.connect} waits for the socket and the handshake, ms. */
export const CONNECT_TIMEOUT_MS = 20_000;
/** How long a request waits for its reply by default, ms. */
export const REQUEST_TIMEOUT_MS = 30_000;
/**
 * After this long without a frame from the server the client pings it (an
 * application `ping`: browsers cannot send WebSocket pings), and after twice this
 * long it gives the connection up as dead, ms.
 */
export const KEEPALIVE_MS = 30_000;
const CLOSE_TIMEOUT_MS = 3_000;

/** The server's `auth_ok`, decoded, with the server key the handshake accepted. */
export interface AuthOk {
  /** Session id (b64u), for logs. */
  readonly session: string;
  /** The authenticated user (b64u). */
  readonly user: string;
  /** The authenticated device (b64u). */
  readonly device: string;
  /** The user's newest seq when the session started. */
  readonly head: number;
  /** The server's clock, Unix ms. */
  readonly serverTime: number;
  /** The limits in force. */
  readonly limits: Limits;
  /** The server key the handshake verified (store it to pin it). */
  readonly serverKey: Uint8Array;
}

/** A message the server sent without being asked. */
export type Incoming =
  | { readonly kind: 'event'; readonly event: EventWire }
  | { readonly kind: 'presence'; readonly presence: Presence }
  | { readonly kind: 'error'; readonly code: string; readonly message: string }
  | { readonly kind: 'closed'; readonly error: FerryError };

/** How {@link Connection.connect} connects. */
export interface ConnectionOptions {
  /** The WebSocket constructor; default: the platform's. */
  readonly WebSocket?: WebSocketConstructor | undefined;
  /** Time limit for the socket and the handshake, ms. */
  readonly timeoutMs?: number | undefined;
  /** Default time limit of one request, ms. */
  readonly requestTimeoutMs?: number | undefined;
  /** Keep-alive period, ms (see {@link KEEPALIVE_MS}). */
  readonly keepaliveMs?: number | undefined;
  /** Which AES-GCM to use. */
  readonly aead?: AeadBackend | undefined;
  /** Randomness for the handshake's ephemeral key and nonce. */
  readonly random?: RandomSource | undefined;
}

interface Pending {
  readonly reply: Deferred<ServerMessage>;
  readonly timer: ReturnType<typeof setTimeout>;
}

type Phase = 'connecting' | 'hello' | 'authOk' | 'open' | 'ended';

/** A monotonic clock in ms where the platform has one. */
function now(): number {
  return typeof performance === 'object' ? performance.now() : Date.now();
}

/**
 * One authenticated session. It seals requests, matches replies to them by `rid`,
 * keeps the connection alive, and hands everything unsolicited (live events,
 * presence) to {@link Connection.onIncoming} or {@link Connection.recv}.
 *
 * ```ts
 * const { connection, authOk } = await Connection.connect(url, credentials, pinKey(serverKey));
 * const reply = await connection.request({ type: 'sync', after: 0, limit: 100 });
 * for (let item; (item = await connection.recv()); ) { … }
 * ```
 */
export class Connection {
  readonly #ws: WebSocketLike;
  readonly #hs: ClientHandshake;
  readonly #opts: ConnectionOptions;
  #phase: Phase = 'connecting';
  #session: Established | null = null;
  #sendChain: Promise<unknown> = Promise.resolve();
  #recvChain: Promise<unknown> = Promise.resolve();
  readonly #pending = new Map<number, Pending>();
  #nextRid = 1;
  #reason: FerryError | null = null;
  readonly #closed = deferred<FerryError>();
  readonly #ready = deferred<AuthOk>();
  #authOk: AuthOk | null = null;
  #incomingHandler: ((item: Incoming) => void) | null = null;
  readonly #queue = new AsyncQueue<Incoming>();
  #keepalive: ReturnType<typeof setTimeout> | null = null;
  #pingSent = false;
  #closeWaiter: Deferred<void> | null = null;
  #closingLocally = false;
  readonly #timings: { started: number; opened?: number; authOk?: number } = { started: now() };

  private constructor(url: string, creds: DeviceCredentials, pin: ServerPin, opts: ConnectionOptions) {
    this.#opts = opts;
    const WS = resolveWebSocket(opts.WebSocket);
    this.#hs = new ClientHandshake(creds, pin, randomEphemeral(opts.random), opts.aead ?? 'auto');
    this.#ws = new WS(url);
    this.#ws.binaryType = 'arraybuffer';
    this.#ws.onopen = () => this.#onOpen();
    this.#ws.onmessage = (ev) => this.#onMessage(ev.data);
    this.#ws.onclose = (ev) => this.#onClose(ev.code, ev.reason ?? '');
    this.#ws.onerror = () => {
      // A close event follows and says what happened.
    };
  }

  /**
   * Opens `url` (`ws://` or `wss://`), runs the handshake with `credentials`,
   * trusting the server key as `pin` says, and reads `auth_ok`. A close frame
   * instead of `auth_ok` is a {@link ClosedError} (4002: authentication failed,
   * which includes a revoked device).
   */
  static async connect(
    url: string,
    credentials: DeviceCredentials,
    pin: ServerPin,
    opts: ConnectionOptions = {},
  ): Promise<{ connection: Connection; authOk: AuthOk }> {
    checkWsUrl(url);
    const conn = new Connection(url, credentials, pin, opts);
    const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
    const timer = setTimeout(() => conn.#end(new TimeoutError(`no session within ${timeoutMs} ms`), CloseCode.Normal), timeoutMs);
    try {
      const authOk = await conn.#ready.promise;
      return { connection: conn, authOk };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The server key the handshake accepted. */
  get serverKey(): Uint8Array {
    return this.#authOk?.serverKey.slice() ?? new Uint8Array(0);
  }

  /** The session's `auth_ok`. */
  get authOk(): AuthOk | null {
    return this.#authOk;
  }

  /** Why the connection ended, once it has. */
  get closeReason(): FerryError | null {
    return this.#reason;
  }

  /** Whether the connection has ended. */
  get isClosed(): boolean {
    return this.#reason !== null;
  }

  /** Resolves when the connection has ended, with why. */
  get closed(): Promise<FerryError> {
    return this.#closed.promise;
  }

  /**
   * When the connection was started, the socket opened and `auth_ok` arrived, in ms
   * of `performance.now()`: `authOk − opened` is the handshake itself, `authOk −
   * started` the whole connect.
   */
  get timings(): { readonly started: number; readonly opened?: number; readonly authOk?: number } {
    return this.#timings;
  }

  /** Which AES-GCM the session uses. */
  get aeadBackend(): string | undefined {
    return this.#session?.sealer.backend;
  }

  /**
   * Where unsolicited messages go. Until a handler is set they queue for
   * {@link Connection.recv}; setting one hands it the queued ones first.
   */
  set onIncoming(handler: ((item: Incoming) => void) | null) {
    this.#incomingHandler = handler;
    if (handler) for (const item of this.#queue.drain()) handler(item);
  }

  /** The next unsolicited message; `{kind: 'closed'}` is the last one, then `undefined`. */
  recv(): Promise<Incoming | undefined> {
    return this.#queue.shift();
  }

  /**
   * Sends a request and waits for its reply (matched by `rid`, which this method
   * assigns). An `error` reply rejects with {@link ServerError}; no reply in time
   * with {@link TimeoutError}; the end of the connection with its reason.
   */
  request(msg: ClientMessage, timeoutMs = this.#opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS): Promise<ServerMessage> {
    validateRequest(msg);
    if (this.#reason) return Promise.reject(this.#reason);
    if (this.#phase !== 'open') return Promise.reject(new TransportError('the session is not established'));
    const rid = this.#nextRid++;
    const reply = deferred<ServerMessage>();
    const timer = setTimeout(() => {
      if (this.#pending.delete(rid)) reply.reject(new TimeoutError(`no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    this.#pending.set(rid, { reply, timer });
    this.#sendSealed(encodeRequest(msg, rid));
    return reply.promise;
  }

  /** Sends a message that has no reply (`cursor`). */
  send(msg: ClientMessage): void {
    validateRequest(msg);
    if (this.#reason) throw this.#reason;
    if (this.#phase !== 'open') throw new TransportError('the session is not established');
    this.#sendSealed(encodeRequest(msg));
  }

  /** Closes the connection normally (1000) and waits for the close to complete. */
  async close(): Promise<void> {
    if (this.#reason) return;
    this.#closingLocally = true;
    this.#closeWaiter = deferred<void>();
    const waiter = this.#closeWaiter;
    const timer = setTimeout(() => waiter.resolve(), CLOSE_TIMEOUT_MS);
    // Let sealed frames already queued go out first.
    await this.#sendChain.catch(() => undefined);
    try {
      this.#ws.close(CloseCode.Normal, 'normal');
    } catch {
      waiter.resolve();
    }
    await waiter.promise;
    clearTimeout(timer);
    this.#end(new ShutdownError());
  }

  #onOpen(): void {
    if (this.#phase !== 'connecting') return;
    this.#phase = 'hello';
    this.#timings.opened = now();
    this.#touch();
    this.#ws.send(this.#hs.clientHello());
  }

  #onMessage(data: unknown): void {
    if (this.#reason) return;
    this.#touch();
    if (typeof data === 'string') {
      // After the handshake's first binary frame, text frames take their turn behind
      // the sealed frames still being opened, so the order of arrival is kept.
      if (this.#phase === 'hello') this.#onText(data);
      else this.#recvChain = this.#recvChain.then(() => this.#reason === null && this.#onText(data));
      return;
    }
    const bytes = binaryData(data);
    if (bytes === null) return;
    this.#onBinary(bytes);
  }

  #onText(text: string): void {
    switch (this.#phase) {
      case 'hello': {
        let auth: string;
        try {
          auth = this.#hs.handleServerHello(text);
        } catch (e) {
          this.#end(e as FerryError, CloseCode.HandshakeFailed);
          return;
        }
        this.#session = this.#hs.established();
        this.#phase = 'authOk';
        this.#ws.send(auth);
        return;
      }
      case 'authOk':
        // The `error` frame before a 4002 close: the close says it all.
        return;
      default:
        this.#end(new ProtocolError('text frame after the handshake'), CloseCode.ProtocolViolation);
    }
  }

  #onBinary(frame: Uint8Array): void {
    const session = this.#session;
    if (session === null || (this.#phase !== 'authOk' && this.#phase !== 'open')) {
      this.#end(new ProtocolError('binary frame during the handshake'), CloseCode.HandshakeFailed);
      return;
    }
    // The counter is taken now, in arrival order; results are handled in that order too.
    const opened = session.opener.open(frame);
    opened.catch(() => undefined);
    this.#recvChain = this.#recvChain.then(async () => {
      let plaintext: Uint8Array;
      try {
        plaintext = await opened;
      } catch {
        this.#end(new ProtocolError('a sealed frame did not open'), CloseCode.ProtocolViolation);
        return;
      }
      if (this.#reason) return;
      if (this.#phase === 'authOk') this.#onAuthOk(plaintext);
      else this.#onSealed(plaintext);
    });
  }

  #onAuthOk(plaintext: Uint8Array): void {
    let msg: Record<string, unknown>;
    try {
      msg = this.#hs.handleAuthOk(plaintext);
      const decoded = decodeServerMessage(JSON.stringify(msg));
      if (decoded.type !== 'auth_ok') throw new HandshakeError('unexpected');
      this.#authOk = {
        session: decoded.session,
        user: decoded.user,
        device: decoded.device,
        head: decoded.head,
        serverTime: decoded.server_time,
        limits: decoded.limits,
        serverKey: (this.#hs.serverKey as Uint8Array).slice(),
      };
    } catch (e) {
      const err = e instanceof HandshakeError ? e : new ProtocolError(`auth_ok is malformed: ${String(e)}`);
      this.#end(err, CloseCode.ProtocolViolation);
      return;
    }
    this.#phase = 'open';
    this.#timings.authOk = now();
    this.#ready.resolve(this.#authOk);
  }

  #onSealed(plaintext: Uint8Array): void {
    let msg: ServerMessage;
    try {
      msg = decodeServerMessage(fromUtf8(plaintext));
    } catch (e) {
      // A reply this client cannot read: fail the request it answers, go on.
      let rid: unknown;
      try {
        rid = (JSON.parse(fromUtf8(plaintext)) as { rid?: unknown }).rid;
      } catch {
        rid = undefined;
      }
      this.#settle(rid, null, e instanceof ProtocolError ? e : new ProtocolError(String(e)));
      return;
    }
    const rid = 'rid' in msg ? msg.rid : undefined;
    if (typeof rid === 'number' && this.#pending.has(rid)) {
      if (msg.type === 'error') {
        this.#settle(rid, null, new ServerError(msg.code, msg.message, msg.retry_after_ms));
      } else if (msg.type === 'unknown') {
        this.#settle(rid, null, new ProtocolError(`unreadable reply of type ${msg.originalType}`));
      } else {
        this.#settle(rid, msg, null);
      }
      return;
    }
    switch (msg.type) {
      case 'event':
        this.#deliver({ kind: 'event', event: msg });
        return;
      case 'presence':
        this.#deliver({
          kind: 'presence',
          presence: { device: msg.device, online: msg.online, ts: msg.ts, revoked: msg.revoked === true },
        });
        return;
      case 'error':
        this.#deliver({ kind: 'error', code: msg.code, message: msg.message });
        return;
      default:
        // A pong to a keep-alive ping, a late reply to a request that timed out, or
        // a message type this client does not know.
        return;
    }
  }

  #settle(rid: unknown, msg: ServerMessage | null, error: FerryError | null): void {
    if (typeof rid !== 'number') return;
    const p = this.#pending.get(rid);
    if (!p) return;
    this.#pending.delete(rid);
    clearTimeout(p.timer);
    if (error) p.reply.reject(error);
    else p.reply.resolve(msg as ServerMessage);
  }

  #deliver(item: Incoming): void {
    if (this.#incomingHandler) this.#incomingHandler(item);
    else this.#queue.push(item);
  }

  #sendSealed(text: string): void {
    const session = this.#session as Established;
    let sealed: Promise<Uint8Array>;
    try {
      sealed = session.sealer.seal(text);
    } catch (e) {
      this.#end(new ProtocolError(String(e)), CloseCode.Normal);
      return;
    }
    sealed.catch(() => undefined);
    // Frames go out in counter order whatever order the seals settle in.
    this.#sendChain = this.#sendChain.then(async () => {
      let frame: Uint8Array;
      try {
        frame = await sealed;
      } catch (e) {
        this.#end(new ProtocolError(`sealing failed: ${String(e)}`), CloseCode.Normal);
        return;
      }
      if (this.#reason || this.#ws.readyState !== WS_OPEN) return;
      try {
        this.#ws.send(frame);
      } catch (e) {
        this.#end(new TransportError(`send failed: ${String(e)}`));
      }
    });
  }

  /** Any frame from the server: the connection is alive. */
  #touch(): void {
    this.#pingSent = false;
    this.#armKeepalive();
  }

  #armKeepalive(): void {
    if (this.#keepalive !== null) clearTimeout(this.#keepalive);
    const period = this.#opts.keepaliveMs ?? KEEPALIVE_MS;
    this.#keepalive = setTimeout(() => this.#onQuiet(period), period);
  }

  #onQuiet(period: number): void {
    this.#keepalive = null;
    if (this.#reason) return;
    if (this.#pingSent || this.#phase !== 'open') {
      this.#end(new TransportError(`no frame from the server for ${Math.round((2 * period) / 1000)} s`), CloseCode.Normal);
      return;
    }
    this.#pingSent = true;
    this.#sendSealed(encodeRequest({ type: 'ping' }));
    this.#armKeepalive();
  }

  #onClose(code: number, reason: string): void {
    if (this.#closeWaiter) this.#closeWaiter.resolve();
    if (this.#reason) return;
    const err = this.#closingLocally
      ? new ShutdownError()
      : code === 1006 || code === 0
        ? new TransportError('the connection ended without a close frame')
        : new ClosedError(code, reason);
    this.#end(err);
  }

  /** Ends the connection once: records why, fails what waits, closes the socket. */
  #end(reason: FerryError, closeCode?: number): void {
    if (this.#reason) return;
    this.#reason = reason;
    this.#phase = 'ended';
    if (this.#keepalive !== null) clearTimeout(this.#keepalive);
    this.#keepalive = null;
    if (closeCode !== undefined) {
      try {
        this.#ws.close(closeCode);
      } catch {
        // Already closing.
      }
    }
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reply.reject(reason);
    }
    this.#pending.clear();
    this.#ready.reject(reason);
    this.#ready.promise.catch(() => undefined);
    this.#deliver({ kind: 'closed', error: reason });
    this.#queue.close();
    this.#closed.resolve(reason);
  }
}
