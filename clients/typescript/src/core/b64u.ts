/**
 * Strict base64url without padding (RFC 4648 §5), the encoding of every binary
 * value on the wire: decoders reject padding, the `+` and `/` characters,
 * whitespace, and encodings whose unused trailing bits are not zero, so each byte
 * string has exactly one accepted encoding (protocol §1).
 *
 * @module
 */

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const LOOKUP = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < 64; i++) t[ALPHABET.charCodeAt(i)] = i;
  return t;
})();

/** Thrown for text that is not strict b64u (of the expected length). */
export class B64uError extends Error {
  override name = 'B64uError';
}

/** The b64u text of `bytes`. */
export function b64uEncode(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  const a = ALPHABET;
  for (; i + 2 < bytes.length; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out += a[n >> 18]! + a[(n >> 12) & 63]! + a[(n >> 6) & 63]! + a[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = (bytes[i] as number) << 16;
    out += a[n >> 18]! + a[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8);
    out += a[n >> 18]! + a[(n >> 12) & 63]! + a[(n >> 6) & 63]!;
  }
  return out;
}

/**
 * Decodes strict b64u. With `len`, the result must be exactly that many bytes.
 * Throws {@link B64uError} on anything else.
 */
export function b64uDecode(text: string, len?: number): Uint8Array {
  if (typeof text !== 'string') throw new B64uError('b64u: not a string');
  if (text.length % 4 === 1) throw new B64uError('b64u: impossible length');
  const outLen = Math.floor((text.length * 3) / 4);
  if (len !== undefined && outLen !== len) {
    throw new B64uError(`b64u: expected ${len} bytes, got ${outLen}`);
  }
  const out = new Uint8Array(outLen);
  const val = (i: number): number => {
    const c = text.charCodeAt(i);
    const v = c < 128 ? (LOOKUP[c] as number) : -1;
    if (v < 0) throw new B64uError('b64u: invalid character');
    return v;
  };
  let o = 0;
  let i = 0;
  for (; i + 3 < text.length; i += 4) {
    const n = (val(i) << 18) | (val(i + 1) << 12) | (val(i + 2) << 6) | val(i + 3);
    out[o++] = n >> 16;
    out[o++] = (n >> 8) & 255;
    out[o++] = n & 255;
  }
  const rest = text.length - i;
  if (rest === 2) {
    const a = val(i);
    const b = val(i + 1);
    if (b & 15) throw new B64uError('b64u: non-canonical trailing bits');
    out[o++] = (a << 2) | (b >> 4);
  } else if (rest === 3) {
    const a = val(i);
    const b = val(i + 1);
    const c = val(i + 2);
    if (c & 3) throw new B64uError('b64u: non-canonical trailing bits');
    out[o++] = (a << 2) | (b >> 4);
    out[o++] = ((b & 15) << 4) | (c >> 2);
  }
  return out;
}

/** Whether `text` is strict b64u (of `len` bytes when given). */
export function isB64u(text: unknown, len?: number): text is string {
  if (typeof text !== 'string') return false;
  try {
    b64uDecode(text, len);
    return true;
  } catch {
    return false;
  }
}
