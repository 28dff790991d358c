/**
 * Reconnect and retry delays: exponential backoff with full jitter.
 *
 * @module
 */

/**
 * Attempt `n` waits a uniformly random time in `[0, min(max, initial · 2^n)]`
 * ("full jitter"), so a fleet of clients that lost the server at the same moment
 * does not come back at the same moment.
 */
export class Backoff {
  constructor(
    /** The ceiling of the first attempt's delay, ms. */
    readonly initialMs = 100,
    /** The largest ceiling, ms. */
    readonly maxMs = 30_000,
  ) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) throw new RangeError('backoff: 0 < initialMs <= maxMs');
  }

  /** The ceiling of attempt `attempt` (0-based): `min(max, initial · 2^attempt)`. */
  ceiling(attempt: number): number {
    return Math.min(this.maxMs, this.initialMs * 2 ** Math.min(Math.max(0, attempt), 52));
  }

  /** The delay of attempt `attempt` for a uniform sample `unit` in `[0, 1]`. */
  delayWith(attempt: number, unit: number): number {
    return this.ceiling(attempt) * Math.min(1, Math.max(0, unit));
  }

  /** The delay of attempt `attempt`, drawn at random. */
  delay(attempt: number): number {
    return this.delayWith(attempt, Math.random());
  }
}
