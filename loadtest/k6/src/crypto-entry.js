// The one bundle the k6 scripts import (`dist/ferry-crypto.js`, built by `npm run build`).
// k6's WebCrypto has AES-GCM and HMAC but no Ed25519, X25519 or HKDF, so the curve
// arithmetic comes from @noble/curves and hashing from @noble/hashes.
import './polyfills.js';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';

export { TextEncoderPolyfill, TextDecoderPolyfill } from './polyfills.js';

/** Ed25519 public key (32 bytes) of a 32-byte seed. */
export function ed25519PublicKey(seed) {
  return ed25519.getPublicKey(seed);
}

/** Ed25519 signature (64 bytes, RFC 8032, deterministic) of `msg` with a 32-byte seed. */
export function ed25519Sign(msg, seed) {
  return ed25519.sign(msg, seed);
}

/**
 * Strict Ed25519 verification as the protocol requires (RFC 8032 rules: canonical
 * encodings, no ZIP-215 leniency). Never throws: malformed input is `false`.
 */
export function ed25519Verify(sig, msg, publicKey) {
  try {
    return ed25519.verify(sig, msg, publicKey, { zip215: false });
  } catch (_) {
    return false;
  }
}

/** X25519 public key of a 32-byte secret scalar. */
export function x25519PublicKey(secret) {
  return x25519.getPublicKey(secret);
}

/**
 * X25519(secret, peerPublic). Returns the 32-byte shared secret; the caller checks for
 * the all-zero result (noble may also throw on it, which callers treat the same way).
 */
export function x25519SharedSecret(secret, peerPublic) {
  return x25519.getSharedSecret(secret, peerPublic);
}

/** SHA-256 of bytes. */
export function sha256(bytes) {
  return nobleSha256(bytes);
}

/** HMAC-SHA256, for runtimes without k6/crypto (the k6 library uses k6/crypto's hmac). */
export function hmacSha256(key, msg) {
  return hmac(nobleSha256, key, msg);
}

export { ed25519, x25519 };
