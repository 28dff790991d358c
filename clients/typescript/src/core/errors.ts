/**
 * The SDK's errors: one base class, {@link FerryError}, with a subclass per kind,
 * each telling what the caller does next ({@link FerryError.isFinal},
 * {@link FerryError.isDisconnect}). The kinds mirror the Rust SDK's `ClientError`.
 *
 * @module
 */

import { closeReason, isFinalCloseCode } from './close.js';

/** Every error the SDK raises. */
export abstract class FerryError extends Error {
  /** A stable label for the kind of error (for logs and metrics). */
  abstract readonly kind: string;

  /** The close code, when the server closed the connection. */
  get closeCode(): number | undefined {
    return undefined;
  }

  /**
   * Whether reconnecting or retrying cannot help: authentication failed (4002),
   * the device was revoked (4003), another session of this device took over
   * (4011), the server key is not the pinned one or its signature is bad, the
   * server speaks another protocol version, the input is invalid, or the client
   * was closed.
   */
  isFinal(): boolean {
    return false;
  }

  /** Whether the connection is gone but a new one may work (the client reconnects). */
  isDisconnect(): boolean {
    return false;
  }

  /**
   * Whether the server closed the session because the operator erased the user's
   * data (4012). The device is not revoked: it keeps its keys, reconnects, and
   * uploads again what it holds (its user's log starts again at seq 0).
   */
  isErased(): boolean {
    return false;
  }
}

/** The server closed the WebSocket with this close code. */
export class ClosedError extends FerryError {
  readonly kind = 'closed';
  override name = 'ClosedError';
  constructor(readonly code: number, readonly reason = '') {
    const phrase = closeReason(code);
    super(`the server closed the connection with code ${code}${phrase ? ` (${phrase})` : ''}`);
  }
  override get closeCode(): number {
    return this.code;
  }
  override isFinal(): boolean {
    return isFinalCloseCode(this.code);
  }
  override isDisconnect(): boolean {
    return !this.isFinal();
  }
  override isErased(): boolean {
    return this.code === 4012;
  }
}

/** Why the client's side of the handshake failed. */
export type HandshakeFailure =
  | 'malformed'
  | 'unexpected'
  | 'unsupported_version'
  | 'bad_key'
  | 'timeout'
  | 'server_key_mismatch'
  | 'server_signature'
  | 'refused'
  | 'auth_ok_mismatch';

/**
 * The handshake failed on the client's side: wrong server key, bad signature,
 * malformed reply, an all-zero key exchange, or the server refused with an `error`
 * frame (`refusedCode`).
 */
export class HandshakeError extends FerryError {
  readonly kind = 'handshake';
  override name = 'HandshakeError';
  constructor(readonly failure: HandshakeFailure, readonly refusedCode?: string, detail?: string) {
    super(`handshake failed: ${failure}${refusedCode ? ` (${refusedCode})` : ''}${detail ? `: ${detail}` : ''}`);
  }
  override isFinal(): boolean {
    return (
      this.failure === 'server_key_mismatch' ||
      this.failure === 'server_signature' ||
      this.failure === 'unsupported_version' ||
      (this.failure === 'refused' && this.refusedCode === 'unsupported_version')
    );
  }
  override isDisconnect(): boolean {
    return !this.isFinal();
  }
}

/** The server answered a request with `error`. */
export class ServerError extends FerryError {
  readonly kind = 'server';
  override name = 'ServerError';
  constructor(readonly code: string, readonly detail: string, readonly retryAfterMs?: number) {
    super(`server error ${code}: ${detail}`);
  }
}

/**
 * A publish with `key` and `base` was refused: the newest event with that key has
 * seq `head` (0: there is none). Merge, then publish again with `base = head`.
 */
export class ConflictError extends FerryError {
  readonly kind = 'conflict';
  override name = 'ConflictError';
  constructor(readonly head: number) {
    super(`conflict: the key's newest event is seq ${head}`);
  }
}

/** The connection could not be opened, or ended without a close frame. */
export class TransportError extends FerryError {
  readonly kind = 'transport';
  override name = 'TransportError';
  override isDisconnect(): boolean {
    return true;
  }
}

/** No reply in time (request timeout, connect timeout, or the retry deadline). */
export class TimeoutError extends FerryError {
  readonly kind = 'timeout';
  override name = 'TimeoutError';
  constructor(message = 'timed out') {
    super(message);
  }
  override isDisconnect(): boolean {
    return true;
  }
}

/**
 * The server sent something the protocol does not allow (a frame that does not
 * open, a text frame after the handshake, a reply of the wrong type). The
 * connection is closed.
 */
export class ProtocolError extends FerryError {
  readonly kind = 'protocol';
  override name = 'ProtocolError';
  override isDisconnect(): boolean {
    return true;
  }
}

/** The server URL is not a `ws://` or `wss://` URL. */
export class InvalidUrlError extends FerryError {
  readonly kind = 'invalid_url';
  override name = 'InvalidUrlError';
  override isFinal(): boolean {
    return true;
  }
}

/** An argument, profile, certificate or link grant is invalid. */
export class InvalidError extends FerryError {
  readonly kind = 'invalid';
  override name = 'InvalidError';
  override isFinal(): boolean {
    return true;
  }
}

/** The operation needs the user key (for example `revoke`) and this device does not hold it. */
export class NoUserKeyError extends FerryError {
  readonly kind = 'no_user_key';
  override name = 'NoUserKeyError';
  constructor() {
    super('this device does not hold the user key');
  }
  override isFinal(): boolean {
    return true;
  }
}

/**
 * Retention removed events the stream had not seen: everything below `oldest`
 * after the stream's position is gone. The stream goes on with `oldest`; an
 * application may want to rebuild its state from a snapshot.
 */
export class TruncatedError extends FerryError {
  readonly kind = 'truncated';
  override name = 'TruncatedError';
  constructor(readonly oldest: number) {
    super(`events before seq ${oldest} were removed by retention`);
  }
}

/** The client was closed locally. */
export class ShutdownError extends FerryError {
  readonly kind = 'shutdown';
  override name = 'ShutdownError';
  constructor() {
    super('the client was closed');
  }
  override isFinal(): boolean {
    return true;
  }
}
