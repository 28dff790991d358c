// The SDK and the notes example in real headless Chromium (Debian's `chromium`,
// driven by playwright-core with the system executable) against a real `ferry
// serve`: two pages as two devices of one user exchange events; the notes example
// loads, two tabs sync an encrypted note, a third browser profile joins with a link
// grant, and the relay's database never holds the plaintext. Screenshots go to
// test-artifacts/. Without Chromium or the ferry binary the tests are skipped,
// except under CI, where they fail.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { type Browser, type Page, chromium } from 'playwright-core';

import type * as FerryModule from '../../src/index.js';
import { DeviceKey, UserKey, b64uEncode } from '../../src/index.js';
import { FerryServer, PACKAGE_ROOT, SERVER_KEY, ferryBinary } from '../integration/harness.js';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const ARTIFACTS = join(PACKAGE_ROOT, 'test-artifacts');
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function prerequisites(): string | false {
  const found = ferryBinary();
  const missing: string[] = [];
  if ('skip' in found) missing.push(found.skip);
  if (!existsSync(CHROMIUM)) missing.push(`no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_BIN)`);
  if (!existsSync(join(PACKAGE_ROOT, 'examples/notes/vendor/ferry-client.js'))) missing.push('no bundle: run npm run bundle');
  if (missing.length === 0) return false;
  if (process.env.CI) throw new Error(missing.join('; '));
  return missing.join('; ');
}

const skip = prerequisites();

interface Creds {
  user: string;
  seed: string;
  cert: { issuedAt: number; expiresAt: number; sig: string };
}

function newDevice(user: UserKey): Creds {
  const d = DeviceKey.generate();
  const cert = user.certify(d.public(), Math.floor(Date.now() / 1000) - 60, 0);
  return {
    user: user.publicB64u(),
    seed: b64uEncode(d.seed()),
    cert: { issuedAt: cert.issuedAt, expiresAt: cert.expiresAt, sig: b64uEncode(cert.sig) },
  };
}

/** Runs in the page: connects a Client with the browser's own WebSocket. */
async function connectInPage(page: Page, url: string, serverKey: string, creds: Creds): Promise<void> {
  await page.evaluate(
    async ({ url, serverKey, creds }) => {
      const F = (window as unknown as { Ferry: typeof FerryModule }).Ferry;
      const w = window as unknown as Record<string, unknown>;
      const device = F.DeviceKey.fromSeed(F.b64uDecode(creds.seed, 32));
      const credentials = device.credentials(F.b64uDecode(creds.user, 32), {
        issuedAt: creds.cert.issuedAt,
        expiresAt: creds.cert.expiresAt,
        sig: F.b64uDecode(creds.cert.sig, 64),
      });
      const client = await F.Client.connect({ url, credentials, pin: F.pinKey(F.b64uDecode(serverKey, 32)) });
      w.client = client;
      client.onEphemeral((e) => (w.ephemeral as string[]).push(F.fromUtf8(e.payload)));
      void (async () => {
        for await (const item of client.syncFrom(0)) {
          if (item.type === 'event') (w.received as string[]).push(`${item.event.seq}:${F.fromUtf8(item.event.payload)}`);
        }
      })();
    },
    { url, serverKey, creds },
  );
}

describe('headless Chromium', { skip }, () => {
  let ferry: FerryServer;
  let web: Server;
  let base: string;
  let browser: Browser;

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const found = ferryBinary();
    if (!('bin' in found)) throw new Error(found.skip);
    ferry = await FerryServer.start(found.bin);
    const { serveNotes } = (await import(join(PACKAGE_ROOT, 'examples/notes/serve.mjs'))) as {
      serveNotes: (o: object) => Promise<Server>;
    };
    web = await serveNotes({ port: 0, extra: { '/sdk.html': join(PACKAGE_ROOT, 'test/browser/sdk.html') } });
    const addr = web.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  });

  after(async () => {
    await browser?.close();
    await new Promise((r) => web?.close(r));
    await ferry?.dispose();
  });

  test('two pages as two devices of one user exchange events', async () => {
    const user = UserKey.generate();
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    for (const p of [a, b]) {
      await p.goto(`${base}/sdk.html`);
      await p.waitForSelector('body[data-loaded="true"]');
    }
    const serverKey = b64uEncode(SERVER_KEY);
    await connectInPage(a, ferry.url, serverKey, newDevice(user));
    await connectInPage(b, ferry.url, serverKey, newDevice(user));

    const aead = await a.evaluate(() => (window as unknown as { client: { aeadBackend: string } }).client.aeadBackend);
    assert.equal(aead, 'webcrypto', 'Chromium seals with WebCrypto');

    const acks = await a.evaluate(async () => {
      const w = window as unknown as { Ferry: typeof FerryModule; client: FerryModule.Client };
      const out = [];
      for (const text of ['from A 1', 'from A 2', 'from A 3']) out.push((await w.client.publish(w.Ferry.utf8(text))).seq);
      return out;
    });
    assert.deepEqual(acks, [1, 2, 3]);
    await b.waitForFunction(() => (window as unknown as { received: string[] }).received.length >= 3, null, { timeout: 10_000 });
    assert.deepEqual(await b.evaluate(() => (window as unknown as { received: string[] }).received), [
      '1:from A 1',
      '2:from A 2',
      '3:from A 3',
    ]);

    await b.evaluate(async () => {
      const w = window as unknown as { Ferry: typeof FerryModule; client: FerryModule.Client };
      await w.client.publish(w.Ferry.utf8('from B'));
      await w.client.publish(w.Ferry.utf8('typing…'), { ephemeral: true });
    });
    await a.waitForFunction(
      () => {
        const w = window as unknown as { received: string[]; ephemeral: string[] };
        return w.received.length >= 4 && w.ephemeral.length >= 1;
      },
      null,
      { timeout: 10_000 },
    );
    assert.deepEqual(await a.evaluate(() => (window as unknown as { received: string[] }).received), [
      '1:from A 1',
      '2:from A 2',
      '3:from A 3',
      '4:from B',
    ]);
    assert.deepEqual(await a.evaluate(() => (window as unknown as { ephemeral: string[] }).ephemeral), ['typing…']);

    // Handshake time in Chromium: socket open to auth_ok, one connection at a time.
    const creds = newDevice(user);
    const times = await a.evaluate(
      async ({ url, serverKey, creds }) => {
        const F = (window as unknown as { Ferry: typeof FerryModule }).Ferry;
        const device = F.DeviceKey.fromSeed(F.b64uDecode(creds.seed, 32));
        const credentials = device.credentials(F.b64uDecode(creds.user, 32), {
          issuedAt: creds.cert.issuedAt,
          expiresAt: creds.cert.expiresAt,
          sig: F.b64uDecode(creds.cert.sig, 64),
        });
        const pin = F.pinKey(F.b64uDecode(serverKey, 32));
        const out: { total: number; afterOpen: number }[] = [];
        for (let i = 0; i < 25; i++) {
          const { connection } = await F.Connection.connect(url, credentials, pin);
          const t = connection.timings;
          out.push({ total: t.authOk! - t.started, afterOpen: t.authOk! - t.opened! });
          await connection.close();
        }
        return out;
      },
      { url: ferry.url, serverKey, creds },
    );
    const stats = (xs: number[]) => {
      const sorted = xs.slice(5).sort((x, y) => x - y);
      return { median: sorted[Math.floor(sorted.length / 2)]!, p90: sorted[Math.floor(sorted.length * 0.9)]!, samples: sorted.length };
    };
    const figures = {
      // Connect: new WebSocket to auth_ok. Handshake: socket open to auth_ok.
      chromium_connect_ms: stats(times.map((t) => t.total)),
      chromium_handshake_after_open_ms: stats(times.map((t) => t.afterOpen)),
    };
    writeFileSync(join(ARTIFACTS, 'chromium-handshake.json'), `${JSON.stringify(figures, null, 2)}\n`);
    console.log(
      `chromium: connect median ${figures.chromium_connect_ms.median.toFixed(2)} ms, handshake after open ${figures.chromium_handshake_after_open_ms.median.toFixed(2)} ms`,
    );

    await a.screenshot({ path: join(ARTIFACTS, 'sdk-page-a.png') });
    await ctxA.close();
    await ctxB.close();
  });

  test('the notes example: two tabs sync an encrypted note, a third browser joins with a grant', async () => {
    const marker = `plaintext-marker-${Date.now()}`;
    const url = `${base}/?server=${encodeURIComponent(ferry.url)}`;
    const passphrase = 'correct horse battery staple';
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    const tab1 = await ctx.newPage();
    const errors: string[] = [];
    tab1.on('pageerror', (e) => errors.push(String(e)));
    await tab1.goto(url);
    await tab1.waitForSelector('#setup:not([hidden])');
    await tab1.fill('#setup-pass', passphrase);
    await tab1.click('#create');
    await tab1.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
    assert.equal(await tab1.getAttribute('#status', 'data-state'), 'up');

    await tab1.fill('#title', 'Groceries');
    await tab1.fill('#body', `eggs, milk, ${marker}`);
    await tab1.click('#save');
    await tab1.waitForSelector('#note-list li:has-text("Groceries")');

    // A second tab of the same browser: same account, its own device.
    const tab2 = await ctx.newPage();
    tab2.on('pageerror', (e) => errors.push(String(e)));
    await tab2.goto(url);
    await tab2.waitForSelector('#unlock:not([hidden])');
    await tab2.fill('#unlock-pass', passphrase);
    await tab2.click('#unlock-button');
    await tab2.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
    assert.match((await tab2.textContent('#whoami')) ?? '', /tab 1/);
    assert.notEqual(await tab1.textContent('#whoami'), await tab2.textContent('#whoami'), 'two devices');
    await tab2.click('#note-list li:has-text("Groceries")');
    assert.equal(await tab2.inputValue('#body'), `eggs, milk, ${marker}`);

    // An edit in tab 2 reaches tab 1 live.
    await tab2.fill('#body', `eggs, milk, bread, ${marker}`);
    await tab2.click('#save');
    await tab1.click('#note-list li:has-text("Groceries")');
    await tab1.waitForFunction((m) => (document.getElementById('body') as HTMLTextAreaElement).value === `eggs, milk, bread, ${m}`, marker, {
      timeout: 10_000,
    });

    // Another browser profile joins with a link grant from tab 1.
    const other = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    const tab3 = await other.newPage();
    tab3.on('pageerror', (e) => errors.push(String(e)));
    await tab3.goto(url);
    await tab3.waitForSelector('#setup:not([hidden])');
    await tab3.click('#join-box summary');
    const newKey = ((await tab3.textContent('#my-device-key')) ?? '').trim();
    assert.equal(newKey.length, 43);
    await tab1.click('#link-box summary');
    await tab1.fill('#link-device', newKey);
    await tab1.click('#link');
    await tab1.waitForFunction(() => (document.getElementById('link-grant') as HTMLTextAreaElement).value.length > 100);
    const grant = await tab1.inputValue('#link-grant');
    await tab3.fill('#setup-pass', passphrase);
    await tab3.fill('#grant', grant);
    await tab3.click('#join');
    await tab3.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
    await tab3.click('#note-list li:has-text("Groceries")');
    assert.equal(await tab3.inputValue('#body'), `eggs, milk, bread, ${marker}`);

    await tab1.screenshot({ path: join(ARTIFACTS, 'notes-tab1.png') });
    await tab2.screenshot({ path: join(ARTIFACTS, 'notes-tab2.png') });
    await tab3.screenshot({ path: join(ARTIFACTS, 'notes-linked-browser.png') });
    assert.deepEqual(errors, []);

    // The relay only ever saw ciphertext: the marker is nowhere in its files.
    const files = readdirSync(ferry.dataDir, { recursive: true, withFileTypes: true }).filter((f) => f.isFile());
    assert.ok(files.length > 0);
    for (const f of files) {
      const bytes = readFileSync(join(f.parentPath, f.name));
      assert.equal(bytes.indexOf(marker), -1, `${f.name} holds the plaintext`);
    }
    await ctx.close();
    await other.close();
  });
});
