/**
 * Where the core's conveniences get randomness when the caller passes none: the
 * platform's CSPRNG (`crypto.getRandomValues`, in browsers, Node ≥ 20, Deno and
 * k6). The handshake and sealing never call it themselves: their fresh values
 * are inputs (see `ClientEphemeral`).
 *
 * @module
 */

/** Returns `n` random bytes. */
export type RandomSource = (n: number) => Uint8Array;

/** `n` bytes from `crypto.getRandomValues`. */
export const systemRandom: RandomSource = (n) => {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 65536 bytes per call.
  for (let off = 0; off < n; off += 65536) {
    globalThis.crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
};
