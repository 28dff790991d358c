// The one bundle the k6 scripts import (`dist/ferry-crypto.js`, built by `npm run
// build`): the sans-IO core of the TypeScript SDK (clients/typescript/src/core: keys,
// certificates, the handshake state machines, sealed frames, messages), so the load
// tests speak the protocol through the same code as the SDK instead of a copy of
// their own. k6's runtime lacks TextEncoder/TextDecoder, so the polyfills load first;
// Ed25519 and X25519 come from @noble (k6's WebCrypto has neither), AES-GCM from k6's
// WebCrypto (the core picks it when `crypto.subtle` is there).
import './polyfills.js';

export * from '../../../clients/typescript/src/core/index.ts';
export { TextEncoderPolyfill, TextDecoderPolyfill } from './polyfills.js';
