/**
 * WebSocket close codes of the protocol (§8) and error codes of `error` messages
 * (§7).
 *
 * @module
 */

/** The close codes the protocol names. */
export const CloseCode = Object.freeze({
  /** The session ended normally. */
  Normal: 1000,
  /** The server is shutting down or restarting: reconnect with backoff, then sync. */
  GoingAway: 1001,
  /** A frame or message was larger than the server's limit. */
  TooBig: 1009,
  /** An unexpected server fault: reconnect with backoff. */
  Internal: 1011,
  /** Malformed or out-of-order handshake message, unsupported version, bad key, timeout. */
  HandshakeFailed: 4001,
  /** A well-formed `client_auth` failed a check, including a revoked device. */
  AuthFailed: 4002,
  /** This device was revoked while connected. */
  Revoked: 4003,
  /** The device kept publishing after `rate_limited` replies. */
  RateLimited: 4008,
  /** The device did not read fast enough; reconnect and sync, nothing is lost. */
  SlowConsumer: 4009,
  /** A sealed frame failed to open, a text frame after the handshake, too many protocol errors. */
  ProtocolViolation: 4010,
  /** A newer session of the same device authenticated. */
  Replaced: 4011,
  /** The operator erased the user's data: keep the keys, reconnect, upload again. */
  Erased: 4012,
} as const);

/** One of {@link CloseCode}'s values. */
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

const REASONS: Readonly<Record<number, string>> = {
  1000: 'normal',
  1001: 'server going away',
  1005: 'no status',
  1006: 'abnormal closure',
  1009: 'message too big',
  1011: 'internal error',
  4001: 'handshake failed',
  4002: 'auth failed',
  4003: 'revoked',
  4008: 'rate limited',
  4009: 'slow consumer',
  4010: 'protocol violation',
  4011: 'replaced',
  4012: 'erased',
};

/** A short reason phrase for a close code, or `undefined` for codes the protocol does not name. */
export function closeReason(code: number): string | undefined {
  return REASONS[code];
}

/**
 * Whether reconnecting after this close code cannot help: authentication failed
 * (4002), the device was revoked (4003), another session of this device took over
 * (4011).
 */
export function isFinalCloseCode(code: number): boolean {
  return code === CloseCode.AuthFailed || code === CloseCode.Revoked || code === CloseCode.Replaced;
}

/** The error codes of `error` messages (§7). */
export const ErrorCode = Object.freeze({
  UnsupportedVersion: 'unsupported_version',
  BadKey: 'bad_key',
  AuthFailed: 'auth_failed',
  BadRequest: 'bad_request',
  UnknownType: 'unknown_type',
  PayloadTooLarge: 'payload_too_large',
  RateLimited: 'rate_limited',
  Unavailable: 'unavailable',
  Forbidden: 'forbidden',
  Internal: 'internal',
} as const);

/** One of {@link ErrorCode}'s values, or a code a newer server added. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode] | (string & {});

/**
 * Whether a request that got this error may be sent again unchanged (with the same
 * event id): `rate_limited` (after `retry_after_ms`), `unavailable`, `internal`.
 */
export function isRetryableErrorCode(code: string): boolean {
  return code === ErrorCode.RateLimited || code === ErrorCode.Unavailable || code === ErrorCode.Internal;
}
