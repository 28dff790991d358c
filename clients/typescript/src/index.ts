/**
 * `@ferry-relay/client`: the TypeScript client SDK for the Ferry relay, for
 * browsers and Node ≥ 20 (one ESM build, no Node-only API).
 *
 * - Identities: {@link UserKey}, {@link DeviceKey}, certificates, linking a new
 *   device ({@link LinkGrant}), the stored {@link Profile} and a {@link KeyStore}.
 * - {@link Connection}: one session, low level: handshake, sealed requests matched
 *   to replies, unsolicited messages, the close code. It never reconnects.
 * - {@link Client}: the logical connection of one device: reconnects with jittered
 *   exponential {@link Backoff}, publishes with retries under a stable event id,
 *   and streams the user's log gap-free ({@link EventStream}).
 * - {@link RestClient}: REST tokens by challenge login.
 *
 * Payloads are opaque to the server and to this SDK: applications encrypt them end
 * to end (with keys only the user's devices hold) before publishing.
 *
 * The sans-IO core (handshake state machines, sealing, messages) is also
 * available alone as `@ferry-relay/client/core`.
 *
 * @module
 */

export * from './core/index.js';
export * from './client/client.js';
export * from './client/connection.js';
export * from './client/profile.js';
export * from './client/rest.js';
export {
  type WebSocketConstructor,
  type WebSocketLike,
  type WsCloseEvent,
  type WsMessageEvent,
  resolveWebSocket,
} from './client/websocket.js';
