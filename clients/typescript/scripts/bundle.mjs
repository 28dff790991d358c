// Bundles the SDK for browsers with esbuild (one minified ESM file) and reports its
// size: raw, minified and minified + gzip. With --check, fails when the gzip size is
// over the budget (60 KB). Writes:
//   dist/browser/ferry-client.js        the whole SDK (src/index.ts)
//   dist/browser/ferry-core.js          the sans-IO core alone (src/core/index.ts)
//   examples/notes/vendor/ferry-client.js  a copy for the notes example
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUDGET_BYTES = 60 * 1024;
const check = process.argv.includes('--check');

async function bundle(entry, out) {
  await build({
    entryPoints: [join(root, entry)],
    outfile: join(root, out),
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    legalComments: 'none',
    logLevel: 'warning',
  });
  const bytes = readFileSync(join(root, out));
  return { out, min: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
}

const results = [
  await bundle('src/index.ts', 'dist/browser/ferry-client.js'),
  await bundle('src/core/index.ts', 'dist/browser/ferry-core.js'),
];
mkdirSync(join(root, 'examples/notes/vendor'), { recursive: true });
copyFileSync(join(root, 'dist/browser/ferry-client.js'), join(root, 'examples/notes/vendor/ferry-client.js'));

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
for (const r of results) {
  console.log(`${r.out}: ${kb(r.min)} minified, ${kb(r.gzip)} minified + gzip (${r.gzip} bytes)`);
}
const whole = results[0];
if (whole.gzip > BUDGET_BYTES) {
  const msg = `bundle: ${kb(whole.gzip)} minified + gzip is over the budget of ${kb(BUDGET_BYTES)}`;
  if (check) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
} else {
  console.log(`bundle: within the ${kb(BUDGET_BYTES)} budget`);
}
