// A static file server for the notes example (no dependencies):
//   node examples/notes/serve.mjs [--port 8000] [--host 127.0.0.1]
// It serves this directory; run `npm run bundle` first so vendor/ferry-client.js
// exists. Browsers give WebCrypto and Web Locks only to secure contexts, which
// include http://127.0.0.1 and http://localhost.
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json' };

/** Starts the server; resolves with it once it listens. */
export function serveNotes({ port = 8000, host = '127.0.0.1', dir = root, extra = {} } = {}) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = extra[path] ?? join(dir, normalize(path === '/' ? '/index.html' : path));
    if (!extra[path] && !file.startsWith(dir)) {
      res.writeHead(403).end();
      return;
    }
    try {
      if (!statSync(file).isFile()) throw new Error('not a file');
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, def) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : def;
  };
  const server = await serveNotes({ port: Number(arg('--port', '8000')), host: arg('--host', '127.0.0.1') });
  const { address, port } = server.address();
  console.log(`notes example on http://${address}:${port}/ (add ?server=ws://HOST:PORT/v1/ws to pick the relay)`);
}
