/**
 * The WebSocket the client uses: the platform's (`globalThis.WebSocket`, in
 * browsers, Deno, Bun and Node ≥ 22), or a constructor the application passes in
 * (`ws` in Node 20, whose global WebSocket is still behind a flag).
 *
 * @module
 */

import { InvalidError, InvalidUrlError } from '../core/errors.js';

/** A message event: `data` is a string for text frames, binary otherwise. */
export interface WsMessageEvent {
  readonly data: unknown;
}

/** A close event. */
export interface WsCloseEvent {
  readonly code: number;
  readonly reason?: string;
}

/** The part of the WHATWG WebSocket interface the client uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: never) => void) | null;
  onmessage: ((ev: WsMessageEvent) => void) | null;
  onclose: ((ev: WsCloseEvent) => void) | null;
  onerror: ((ev: never) => void) | null;
}

/** A WebSocket constructor (the WHATWG one, or a compatible one such as `ws`). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** `readyState` of an open socket. */
export const WS_OPEN = 1;

/** The constructor to use: `given`, else the platform's; throws when there is none. */
export function resolveWebSocket(given?: WebSocketConstructor): WebSocketConstructor {
  if (given) return given;
  const g = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof g === 'function') return g as WebSocketConstructor;
  throw new InvalidError(
    'this platform has no global WebSocket: pass one in the options (in Node 20, `WebSocket` from the ws package)',
  );
}

/** Checks that `url` is a `ws://` or `wss://` URL. */
export function checkWsUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new InvalidUrlError(`${JSON.stringify(url)}: not a URL`);
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new InvalidUrlError(`${JSON.stringify(url)}: expected ws:// or wss://`);
  }
}

/** The bytes of a binary message's `data` (ArrayBuffer, a view, or a Node Buffer). */
export function binaryData(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}
