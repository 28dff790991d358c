// Starts a real `ferry serve` for the integration tests: free loopback ports, a
// throwaway data directory (SQLite), a fixed server key, and the settings the Rust
// tests use (tests/common/server.rs). The binary is $FERRY_BIN, or the repository's
// target/debug/ferry. Without it the tests are skipped, except under CI, where a
// missing binary fails them.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

import {
  type ClientOptions,
  DeviceKey,
  UserKey,
  type WebSocketConstructor,
  b64uEncode,
  ed25519PublicKey,
  pinKey,
} from '../../src/index.js';

/** The package root (clients/typescript). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Fixed seed of the test server key (as in the Rust tests): clients pin its public key. */
export const SERVER_SEED = new Uint8Array(32).fill(7);
/** The test server's public key. */
export const SERVER_KEY = ed25519PublicKey(SERVER_SEED);

/** The `ws` package's WebSocket, as the SDK's constructor type. */
export const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;

/**
 * The ferry binary, or a reason to skip. Under CI a missing binary throws: the
 * tests must fail loudly, never skip.
 */
export function ferryBinary(): { bin: string } | { skip: string } {
  const bin = process.env.FERRY_BIN ?? resolve(PACKAGE_ROOT, '..', '..', 'target', 'debug', 'ferry');
  if (existsSync(bin)) return { bin };
  const msg = `no ferry binary at ${bin}: build it (cargo build -p ferry) or set FERRY_BIN`;
  if (process.env.CI) throw new Error(msg);
  return { skip: msg };
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** A running `ferry serve`. */
export class FerryServer {
  #child: ChildProcess | null = null;
  #log = '';

  private constructor(
    readonly bin: string,
    readonly port: number,
    readonly adminPort: number,
    readonly dataDir: string,
    readonly env: Record<string, string>,
  ) {}

  /** Starts a server with extra `FERRY_*` settings and waits until it is ready. */
  static async start(bin: string, extra: Record<string, string> = {}): Promise<FerryServer> {
    const dataDir = mkdtempSync(join(tmpdir(), 'ferry-ts-'));
    const server = new FerryServer(bin, await freePort(), await freePort(), dataDir, extra);
    await server.#spawn();
    return server;
  }

  /** `ws://127.0.0.1:PORT/v1/ws`. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  /** `http://127.0.0.1:PORT`. */
  get httpBase(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The server's log so far (stderr and stdout). */
  get log(): string {
    return this.#log;
  }

  async #spawn(): Promise<void> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && !k.startsWith('FERRY_')) env[k] = v;
    }
    Object.assign(env, {
      FERRY_DATA_DIR: this.dataDir,
      FERRY_SERVER_KEY: b64uEncode(SERVER_SEED),
      FERRY_SERVER_LISTEN: `127.0.0.1:${this.port}`,
      FERRY_SERVER_ADMIN_LISTEN: `127.0.0.1:${this.adminPort}`,
      // Tests open many connections from 127.0.0.1.
      FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC: '10000',
      FERRY_SERVER_SHUTDOWN_DEADLINE: '5s',
      FERRY_LOG: 'warn',
      FERRY_LOG_FORMAT: 'text',
      ...this.env,
    });
    const child = spawn(this.bin, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    const append = (b: Buffer): void => {
      this.#log += b.toString();
      if (this.#log.length > 200_000) this.#log = this.#log.slice(-100_000);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`ferry serve exited during start (${child.exitCode ?? child.signalCode}):\n${this.#log}`);
      }
      try {
        const res = await fetch(`http://127.0.0.1:${this.adminPort}/health/ready`);
        if (res.status === 200) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`ferry serve not ready in 30 s:\n${this.#log}`);
  }

  /** Stops the server (SIGTERM: sessions close with 1001) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the server, then starts it again on the same ports and data. */
  async restart(pauseMs = 0): Promise<void> {
    await this.stop();
    if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    await this.#spawn();
  }

  /** Stops the server and removes its data. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** A user with its key, for tests. */
export interface TestUser {
  readonly userKey: UserKey;
  /** A device of this user, certified now (or with the given validity). */
  device(opts?: { issuedAt?: number; expiresAt?: number }): TestDevice;
}

/** A certified device. */
export interface TestDevice {
  readonly deviceKey: DeviceKey;
  readonly userKey: UserKey;
  /** Client options for this device against `server`. */
  options(server: FerryServer, extra?: Partial<ClientOptions>): ClientOptions;
}

/** A new user. */
export function newUser(): TestUser {
  const userKey = UserKey.generate();
  return {
    userKey,
    device(opts = {}) {
      const deviceKey = DeviceKey.generate();
      const cert = userKey.certify(deviceKey.public(), opts.issuedAt ?? Math.floor(Date.now() / 1000) - 60, opts.expiresAt ?? 0);
      return {
        deviceKey,
        userKey,
        options(server, extra = {}) {
          return {
            url: server.url,
            credentials: deviceKey.credentials(userKey.public(), cert),
            pin: pinKey(SERVER_KEY),
            WebSocket: NodeWebSocket,
            backoff: undefined,
            ...extra,
          };
        },
      };
    },
  };
}

/** Waits until `check` returns a value other than undefined/false, polling. */
export async function eventually<T>(what: string, check: () => T | Promise<T>, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Rejects after `ms` with `what`. */
export function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}
