/**
 * The REST API's authentication (protocol §11, `docs/api.md`): a device logs in by
 * signing a single-use challenge, and gets a short-lived access token and a
 * single-use refresh token. Uses `fetch` (the platform's, or one passed in).
 *
 * @module
 */

import { b64uDecode, b64uEncode } from '../core/b64u.js';
import { FerryError, InvalidUrlError, ProtocolError, TransportError } from '../core/errors.js';
import { type DeviceCredentials, certificateToJson } from '../core/keys.js';

/** A REST request failed: the status and the error body's `code` and `message`. */
export class RestError extends FerryError {
  readonly kind = 'rest';
  override name = 'RestError';
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    /** From `Retry-After`, ms. */
    readonly retryAfterMs?: number,
  ) {
    super(`REST ${status} ${code}: ${detail}`);
  }
  override isFinal(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

/** Tokens from a login or a refresh. */
export interface TokenPair {
  /** The JWT to send as `Authorization: Bearer …`. */
  readonly accessToken: string;
  /** Seconds the access token lives. */
  readonly expiresIn: number;
  /** Unix seconds, when the server says. */
  readonly expiresAt?: number;
  /** Single use: present it once to {@link RestClient.refresh}. */
  readonly refreshToken: string;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** The HTTP base URL (`http://host:port`) of a server whose WebSocket URL is `wsUrl`. */
export function httpBaseFromWsUrl(wsUrl: string): string {
  let u: URL;
  try {
    u = new URL(wsUrl);
  } catch {
    throw new InvalidUrlError(`${JSON.stringify(wsUrl)}: not a URL`);
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new InvalidUrlError(`${wsUrl}: expected ws:// or wss://`);
  return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`;
}

/** A client of the REST API of one server. */
export class RestClient {
  readonly #base: string;
  readonly #fetch: FetchLike;

  constructor(baseUrl: string, opts: { fetch?: FetchLike } = {}) {
    this.#base = baseUrl.replace(/\/+$/, '');
    const f = opts.fetch ?? (globalThis.fetch);
    if (!f) throw new TransportError('this platform has no fetch: pass one in the options');
    this.#fetch = f;
  }

  /** The REST client of the server whose WebSocket URL is `wsUrl`. */
  static forWebSocketUrl(wsUrl: string, opts: { fetch?: FetchLike } = {}): RestClient {
    return new RestClient(httpBaseFromWsUrl(wsUrl), opts);
  }

  /**
   * Sends a request; resolves with the parsed JSON body (or `null` for 204).
   * Non-2xx answers reject with {@link RestError}.
   */
  async request(method: string, path: string, opts: { token?: string; body?: unknown } = {}): Promise<unknown> {
    const headers: Record<string, string> = {};
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    let res: Response;
    try {
      const init: RequestInit = { method, headers };
      if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
      res = await this.#fetch(`${this.#base}${path}`, init);
    } catch (e) {
      throw new TransportError(`${method} ${path}: ${String(e)}`);
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let body: unknown = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        throw new ProtocolError(`${method} ${path}: the body is not JSON`);
      }
    }
    if (!res.ok) {
      const err = (body as { error?: { code?: string; message?: string } } | null)?.error;
      const retry = res.headers.get('retry-after');
      throw new RestError(
        res.status,
        err?.code ?? 'error',
        err?.message ?? res.statusText,
        retry !== null && /^\d+$/.test(retry) ? Number(retry) * 1000 : undefined,
      );
    }
    return body;
  }

  /** `GET /.well-known/ferry`: the server key (b64u), protocol versions, limits. */
  async discovery(): Promise<{ server_key: string } & Record<string, unknown>> {
    return (await this.request('GET', '/.well-known/ferry')) as { server_key: string } & Record<string, unknown>;
  }

  /**
   * Logs the device in: asks for a challenge, signs it with the device key
   * (`"ferry-rest/v1" || 0x00 || challenge || server_key`) and exchanges it, with
   * the certificate, for a token pair. `serverKey` is the pinned key.
   */
  async login(credentials: DeviceCredentials, serverKey: Uint8Array): Promise<TokenPair> {
    const user = b64uEncode(credentials.user);
    const device = credentials.deviceKey.publicB64u();
    const c = (await this.request('POST', '/v1/auth/challenge', { body: { user, device } })) as { challenge?: unknown };
    if (typeof c?.challenge !== 'string') throw new ProtocolError('the challenge reply has no challenge');
    const challenge = b64uDecode(c.challenge, 32);
    const sig = credentials.deviceKey.signRestChallenge(challenge, serverKey);
    const body = {
      user,
      device,
      cert: certificateToJson(credentials.cert),
      challenge: c.challenge,
      sig: b64uEncode(sig),
    };
    return tokens(await this.request('POST', '/v1/auth/token', { body }));
  }

  /** Exchanges a refresh token for a new pair (the old one is spent). */
  async refresh(refreshToken: string): Promise<TokenPair> {
    return tokens(await this.request('POST', '/v1/auth/refresh', { body: { refresh_token: refreshToken } }));
  }

  /** Revokes the access token and its refresh family. */
  async logout(accessToken: string): Promise<void> {
    await this.request('POST', '/v1/auth/logout', { token: accessToken });
  }

  /** `GET /v1/me`: the token's user and device, the user's head. */
  async me(accessToken: string): Promise<{ user: string; device: string; head: number } & Record<string, unknown>> {
    return (await this.request('GET', '/v1/me', { token: accessToken })) as { user: string; device: string; head: number };
  }
}

function tokens(body: unknown): TokenPair {
  const o = body as Record<string, unknown> | null;
  if (!o || typeof o.access_token !== 'string' || typeof o.refresh_token !== 'string' || typeof o.expires_in !== 'number') {
    throw new ProtocolError('the token reply is malformed');
  }
  const out: { -readonly [K in keyof TokenPair]: TokenPair[K] } = {
    accessToken: o.access_token,
    expiresIn: o.expires_in,
    refreshToken: o.refresh_token,
  };
  if (typeof o.expires_at === 'number') out.expiresAt = o.expires_at;
  return out;
}
