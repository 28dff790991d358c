/**
 * Event ids: canonical UUIDs (lowercase, hyphenated, 36 characters). Time-ordered
 * UUIDv7 ids (RFC 9562 §5.7) land at the right edge of the server's idempotency
 * index, which stores about twice as many events per second as random ones.
 *
 * @module
 */

import { type RandomSource, systemRandom } from './random.js';

const CANONICAL = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `id` is a UUID in canonical form. */
export function isCanonicalUuid(id: unknown): id is string {
  return typeof id === 'string' && CANONICAL.test(id);
}

/**
 * A UUIDv7 for Unix milliseconds `nowMs` with random bits from `random`: 48 bits of
 * time, version 7, 74 random bits with the RFC 4122 variant.
 */
export function uuidv7(nowMs: number, random: RandomSource = systemRandom): string {
  if (!Number.isSafeInteger(nowMs) || nowMs < 0 || nowMs >= 2 ** 48) throw new RangeError('uuidv7: time out of range');
  const b = random(16);
  let ms = nowMs;
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = ((b[6] as number) & 0x0f) | 0x70;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  let h = '';
  for (const x of b) h += x.toString(16).padStart(2, '0');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Makes UUIDv7 ids that increase strictly even within one millisecond or when the
 * clock steps back (the 12 bits after the version count up; the time part never
 * goes below the last id's).
 */
export class Uuidv7Generator {
  #lastMs = -1;
  #seq = 0;

  constructor(private readonly random: RandomSource = systemRandom) {}

  /** The next id for Unix milliseconds `nowMs`. */
  next(nowMs: number): string {
    let ms = Math.max(nowMs, this.#lastMs);
    if (ms === this.#lastMs) {
      this.#seq++;
      if (this.#seq > 0xfff) {
        ms++;
        this.#seq = 0;
      }
    } else {
      this.#seq = this.random(2).reduce((a, x) => (a << 8) | x, 0) & 0x7ff;
    }
    this.#lastMs = ms;
    const id = uuidv7(ms, this.random);
    const seqHex = (0x7000 | this.#seq).toString(16);
    return `${id.slice(0, 14)}${seqHex}${id.slice(18)}`;
  }
}
