/**
 * Sealed frames (protocol §5): after the handshake every application message is
 * one binary WebSocket frame, `AES-256-GCM(key, nonce, plaintext, aad = empty)`,
 * the ciphertext followed by the 16-byte tag. Each direction counts its frames from
 * 0; the counter is not sent, the receiver uses the next value it expects, so a
 * frame that was tampered with, replayed, reordered or dropped fails to open.
 *
 * {@link Sealer} and {@link Opener} take the counter when `seal`/`open` is
 * *called*, so calls must be made in frame order; the promises may settle in any
 * order (the caller sends or handles results in call order). AES-GCM runs on
 * WebCrypto where the platform has it (browsers in secure contexts, Node, k6) and
 * on @noble/ciphers otherwise; the `*Sync` methods always use @noble.
 *
 * @module
 */

import { gcm } from '@noble/ciphers/aes.js';

import { concat, exactBuffer, u64be, utf8 } from './bytes.js';

/** Length of the AES-GCM tag that ends every sealed frame. */
export const TAG_LEN = 16;

/** The nonce of frame `counter`: `0x00000000 || u64be(counter)`. */
export function frameNonce(counter: number): Uint8Array {
  return concat([0, 0, 0, 0], u64be(counter));
}

/** Seals `plaintext` as frame `counter` under `key` (synchronously, with @noble). */
export function sealFrame(key: Uint8Array, counter: number, plaintext: Uint8Array): Uint8Array {
  return gcm(key, frameNonce(counter)).encrypt(plaintext);
}

/** Opens frame `counter` under `key`, or returns `null` when it does not open. */
export function openFrame(key: Uint8Array, counter: number, frame: Uint8Array): Uint8Array | null {
  if (frame.length < TAG_LEN) return null;
  try {
    return gcm(key, frameNonce(counter)).decrypt(frame);
  } catch {
    return null;
  }
}

/** An AES-256-GCM implementation with empty associated data. */
export interface Aead {
  /** Which implementation this is. */
  readonly name: string;
  /** Ciphertext || tag. */
  seal(nonce: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  /** The plaintext, or `null` when the frame does not open. */
  open(nonce: Uint8Array, frame: Uint8Array): Promise<Uint8Array | null>;
}

/**
 * Which AES-GCM to use: WebCrypto when available (`auto`), one of the two built in,
 * or a factory of the application's own (for example over `node:crypto`, which is
 * synchronous and cheaper per frame than Node's WebCrypto).
 */
export type AeadBackend = 'auto' | 'webcrypto' | 'noble' | ((key: Uint8Array) => Aead);

/** AES-256-GCM on @noble/ciphers (synchronous work behind a promise). */
export function nobleAead(key: Uint8Array): Aead {
  const k = key.slice();
  return {
    name: 'noble',
    seal: (nonce, plaintext) => Promise.resolve(gcm(k, nonce).encrypt(plaintext)),
    open: (nonce, frame) => {
      if (frame.length < TAG_LEN) return Promise.resolve(null);
      try {
        return Promise.resolve(gcm(k, nonce).decrypt(frame));
      } catch {
        return Promise.resolve(null);
      }
    },
  };
}

/** Whether this platform has WebCrypto's AES-GCM (`crypto.subtle`). */
export function hasWebCrypto(): boolean {
  return typeof globalThis.crypto === 'object' && typeof globalThis.crypto?.subtle?.importKey === 'function';
}

/** AES-256-GCM on WebCrypto, or `null` when the platform has none. */
export function webCryptoAead(key: Uint8Array): Aead | null {
  if (!hasWebCrypto()) return null;
  const subtle = globalThis.crypto.subtle;
  const cryptoKey = subtle.importKey('raw', exactBuffer(key.slice()), { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
  // Surfaces through seal/open; never an unhandled rejection of its own.
  cryptoKey.catch(() => undefined);
  return {
    name: 'webcrypto',
    async seal(nonce, plaintext) {
      const ct = await subtle.encrypt({ name: 'AES-GCM', iv: exactBuffer(nonce) }, await cryptoKey, exactBuffer(plaintext));
      return new Uint8Array(ct);
    },
    async open(nonce, frame) {
      if (frame.length < TAG_LEN) return null;
      try {
        const pt = await subtle.decrypt({ name: 'AES-GCM', iv: exactBuffer(nonce) }, await cryptoKey, exactBuffer(frame));
        return new Uint8Array(pt);
      } catch {
        return null;
      }
    },
  };
}

/** The AES-GCM for `key` that `backend` asks for. */
export function makeAead(key: Uint8Array, backend: AeadBackend = 'auto'): Aead {
  if (typeof backend === 'function') return backend(key.slice());
  if (backend === 'noble') return nobleAead(key);
  const wc = webCryptoAead(key);
  if (wc) return wc;
  if (backend === 'webcrypto') throw new Error('WebCrypto (crypto.subtle) is not available here');
  return nobleAead(key);
}

/** Thrown (or rejected with) when a frame does not open or the counter is exhausted. */
export class SealError extends Error {
  override name = 'SealError';
}

function checkCounter(counter: number): void {
  if (counter >= Number.MAX_SAFE_INTEGER) throw new SealError('the frame counter is exhausted');
}

/** One direction's sealing side: seals frame after frame with the next counter. */
export class Sealer {
  #counter = 0;
  readonly #key: Uint8Array;
  readonly #aead: Aead;

  constructor(key: Uint8Array, backend: AeadBackend = 'auto') {
    if (key.length !== 32) throw new RangeError('an AES-256 key is 32 bytes');
    this.#key = key.slice();
    this.#aead = makeAead(this.#key, backend);
  }

  /** The counter the next frame gets. */
  get counter(): number {
    return this.#counter;
  }

  /** The AES-GCM implementation in use. */
  get backend(): string {
    return this.#aead.name;
  }

  /** Seals the next frame (a string is sealed as its UTF-8 bytes). */
  seal(plaintext: Uint8Array | string): Promise<Uint8Array> {
    const counter = this.#counter;
    checkCounter(counter);
    this.#counter++;
    const bytes = typeof plaintext === 'string' ? utf8(plaintext) : plaintext;
    return this.#aead.seal(frameNonce(counter), bytes);
  }

  /** {@link Sealer.seal}, synchronously, with @noble. */
  sealSync(plaintext: Uint8Array | string): Uint8Array {
    const counter = this.#counter;
    checkCounter(counter);
    this.#counter++;
    return sealFrame(this.#key, counter, typeof plaintext === 'string' ? utf8(plaintext) : plaintext);
  }
}

/** One direction's opening side: opens frame after frame with the next counter. */
export class Opener {
  #counter = 0;
  readonly #key: Uint8Array;
  readonly #aead: Aead;

  constructor(key: Uint8Array, backend: AeadBackend = 'auto') {
    if (key.length !== 32) throw new RangeError('an AES-256 key is 32 bytes');
    this.#key = key.slice();
    this.#aead = makeAead(this.#key, backend);
  }

  /** The counter the next frame must have been sealed with. */
  get counter(): number {
    return this.#counter;
  }

  /** Opens the next frame; rejects with {@link SealError} when it does not open. */
  async open(frame: Uint8Array): Promise<Uint8Array> {
    const counter = this.#counter;
    checkCounter(counter);
    this.#counter++;
    const pt = await this.#aead.open(frameNonce(counter), frame);
    if (pt === null) throw new SealError(`frame ${counter} does not open`);
    return pt;
  }

  /** {@link Opener.open}, synchronously, with @noble; throws {@link SealError}. */
  openSync(frame: Uint8Array): Uint8Array {
    const counter = this.#counter;
    checkCounter(counter);
    this.#counter++;
    const pt = openFrame(this.#key, counter, frame);
    if (pt === null) throw new SealError(`frame ${counter} does not open`);
    return pt;
  }
}
