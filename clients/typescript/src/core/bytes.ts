/**
 * Byte utilities shared by the whole core: UTF-8, concatenation, big-endian integers,
 * comparisons. Nothing here does IO, reads the clock or draws randomness.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The UTF-8 bytes of `text`. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** The text of UTF-8 `bytes`; throws on invalid UTF-8. */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** `parts` one after the other, as one new array. */
export function concat(...parts: ArrayLike<number>[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * `n` as 8 big-endian bytes (`u64be` in the protocol). Numbers must be safe
 * non-negative integers; bigints cover the whole u64 range.
 */
export function u64be(n: number | bigint): Uint8Array {
  let v = typeof n === 'bigint' ? n : safeU64(n);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`u64be: ${n} is out of range`);
  // Byte by byte rather than DataView.setBigUint64, which not every engine has (k6).
  const out = new Uint8Array(8);
  for (let i = 7; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function safeU64(n: number): bigint {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`u64be: ${n} is not a non-negative safe integer`);
  }
  return BigInt(n);
}

/** Whether `a` and `b` hold the same bytes (for public values: not constant time). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Whether `a` and `b` hold the same bytes, in time that depends only on their
 * lengths (for MACs and other secrets).
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

/** Whether every byte is zero, in time that depends only on the length. */
export function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i] as number;
  return acc === 0;
}

/** Overwrites `bytes` with zeros (best effort: JavaScript may hold other copies). */
export function wipe(bytes: Uint8Array | undefined | null): void {
  if (bytes) bytes.fill(0);
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/**
 * A view of exactly `bytes` as an `ArrayBuffer`-backed `Uint8Array`, which
 * WebCrypto and WebSocket `send` accept everywhere (copies only when `bytes` is a
 * window into a larger or shared buffer).
 */
export function exactBuffer(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  if (
    bytes.buffer instanceof ArrayBuffer &&
    bytes.byteOffset === 0 &&
    bytes.byteLength === bytes.buffer.byteLength
  ) {
    return bytes as Uint8Array<ArrayBuffer>;
  }
  return new Uint8Array(bytes);
}
