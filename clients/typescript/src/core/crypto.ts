/**
 * The protocol's primitives (protocol §1), on the audited @noble libraries:
 * SHA-256, HMAC-SHA256, HKDF-SHA256 (Extract and single-block Expand), Ed25519
 * with strict verification, and X25519 that refuses an all-zero result.
 *
 * Ed25519 verification follows the rules of ed25519-dalek's `verify_strict`, as
 * the server does: `S < L`, canonical encodings of `A` and `R`, neither of them a
 * small-order point, and the cofactorless equation `R = [S]B − [k]A` compared on
 * the encoding of `R`. (@noble's own `verify` checks the cofactored equation and
 * lets a small-order `R` through, so it is not used for verification here.)
 *
 * @module
 */

import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 as nobleSha256, sha512 } from '@noble/hashes/sha2.js';

import { bytesEqual, concat, isAllZero } from './bytes.js';

type EdPoint = ReturnType<typeof ed25519.Point.fromBytes>;

const Point = ed25519.Point;
/** The order of the Ed25519 base point. */
const L = Point.Fn.ORDER;

/** SHA-256 of `bytes`. */
export function sha256(bytes: Uint8Array): Uint8Array {
  return nobleSha256(bytes);
}

/** HMAC-SHA256(key, message). */
export function hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
  return hmac(nobleSha256, key, message);
}

/** HKDF-Extract(salt, ikm) = HMAC-SHA256(salt, ikm). */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array {
  return hmacSha256(salt, ikm);
}

/**
 * HKDF-Expand(prk, info, len) for `len` ≤ 32: the first `len` bytes of
 * HMAC-SHA256(prk, info || 0x01). Every expansion in the protocol is one block.
 */
export function hkdfExpand(prk: Uint8Array, info: Uint8Array, len: number): Uint8Array {
  if (!Number.isInteger(len) || len < 1 || len > 32) throw new RangeError('hkdfExpand: 1..=32 bytes only');
  return hmacSha256(prk, concat(info, [1])).slice(0, len);
}

/** The Ed25519 public key of a 32-byte seed (an RFC 8032 private key). */
export function ed25519PublicKey(seed: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(seed);
}

/** The deterministic Ed25519 signature (64 bytes) of `message` with a 32-byte seed. */
export function ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  return ed25519.sign(message, seed);
}

function decodePoint(bytes: Uint8Array): EdPoint | null {
  try {
    return Point.fromBytes(bytes, false);
  } catch {
    return null;
  }
}

function numberLE(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i] as number);
  return n;
}

/**
 * Strict Ed25519 verification (the rules of ed25519-dalek's `verify_strict`).
 * Never throws: anything malformed is `false`.
 */
export function ed25519VerifyStrict(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const A = decodePoint(publicKey);
  if (!A || A.isSmallOrder()) return false;
  const rBytes = signature.subarray(0, 32);
  const R = decodePoint(rBytes);
  if (!R || R.isSmallOrder()) return false;
  const s = numberLE(signature.subarray(32, 64));
  if (s >= L) return false;
  const k = numberLE(sha512(concat(rBytes, publicKey, message))) % L;
  try {
    const sB = s === 0n ? Point.ZERO : Point.BASE.multiplyUnsafe(s);
    const kA = k === 0n ? Point.ZERO : A.multiplyUnsafe(k);
    return bytesEqual(sB.subtract(kA).toBytes(), rBytes);
  } catch {
    return false;
  }
}

/**
 * Whether `key` is an acceptable identity key (user, device or server): a
 * canonical encoding of a curve point that is not of small order ("weak").
 */
export function isValidIdentityKey(key: Uint8Array): boolean {
  if (key.length !== 32) return false;
  const p = decodePoint(key);
  return p !== null && !p.isSmallOrder();
}

/** The X25519 public key of a 32-byte secret scalar (clamped as RFC 7748 says). */
export function x25519PublicKey(secret: Uint8Array): Uint8Array {
  return x25519.getPublicKey(secret);
}

/**
 * X25519(secret, peerPublic), or `null` when the result would be all zero (the
 * peer sent a low-order point) or an input has the wrong length.
 */
export function x25519SharedSecret(secret: Uint8Array, peerPublic: Uint8Array): Uint8Array | null {
  if (secret.length !== 32 || peerPublic.length !== 32) return null;
  let shared: Uint8Array;
  try {
    shared = x25519.getSharedSecret(secret, peerPublic);
  } catch {
    // @noble refuses low-order inputs before the ladder; same outcome.
    return null;
  }
  return isAllZero(shared) ? null : shared;
}
