// Builds dist/ferry-crypto.js: src/crypto-entry.js (the SDK's sans-IO core and the
// polyfills k6 needs) as one ESM file that k6 imports by relative path. The core's
// imports of @noble resolve from this directory's node_modules (`npm ci` here), so
// the SDK package need not be installed.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));

await build({
  entryPoints: [join(here, 'src/crypto-entry.js')],
  outfile: join(here, 'dist/ferry-crypto.js'),
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  mainFields: ['module', 'main'],
  target: 'es2020',
  nodePaths: [join(here, 'node_modules')],
  logLevel: 'warning',
});
