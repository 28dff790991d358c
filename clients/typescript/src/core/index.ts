/**
 * The sans-IO core of the Ferry client: keys, certificates and link grants, the
 * handshake state machines, sealed frames and the session's messages. No
 * WebSocket, no timers, no clock reads, and no randomness except where a caller
 * asks for a convenience default (key generation, `randomEphemeral`). The async
 * client (`@ferry-relay/client`) and the k6 load-test library build on it.
 *
 * @module
 */

export * from './b64u.js';
export * from './backoff.js';
export * from './bytes.js';
export * from './close.js';
export * from './crypto.js';
export * from './errors.js';
export * from './handshake.js';
export * from './keys.js';
export * from './messages.js';
export * from './random.js';
export * from './seal.js';
export * from './uuid.js';
