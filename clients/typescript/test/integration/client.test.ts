// The SDK against a real `ferry serve` started by the test (see harness.ts): every
// capability of the Client, over the `ws` package's WebSocket (Node 20 has no
// global one).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  Backoff,
  Client,
  ClosedError,
  ConflictError,
  Connection,
  DeviceKey,
  type Event,
  HandshakeError,
  InvalidUrlError,
  LinkGrant,
  Profile,
  MemoryKeyStore,
  type Presence,
  RestClient,
  RestError,
  ServerError,
  type StreamItem,
  UserKey,
  b64uEncode,
  bytesEqual,
  isCanonicalUuid,
  pinKey,
  utf8,
  fromUtf8,
  FIRST_USE,
} from '../../src/index.js';
import { FerryServer, NodeWebSocket, SERVER_KEY, eventually, ferryBinary, newUser, within } from './harness.js';

const found = ferryBinary();
const skip = 'skip' in found ? found.skip : false;
const bin = 'bin' in found ? found.bin : '';

const fast = new Backoff(20, 500);

/** Collects a stream's items in the background. */
function collect(stream: AsyncIterable<StreamItem>): { items: StreamItem[]; events: () => Event[]; done: Promise<unknown> } {
  const items: StreamItem[] = [];
  const done = (async () => {
    for await (const item of stream) items.push(item);
  })().then(
    () => undefined,
    (e: unknown) => e,
  );
  return { items, events: () => items.filter((i) => i.type === 'event').map((i) => i.event), done };
}

const text = (e: Event): string => fromUtf8(e.payload);

describe('client against ferry serve', { skip }, () => {
  let server: FerryServer;
  const clients: Client[] = [];
  const open = async (opts: Parameters<typeof Client.connect>[0]): Promise<Client> => {
    const c = await Client.connect({ backoff: fast, ...opts });
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await FerryServer.start(bin);
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.dispose();
  });

  test('handshake, auth_ok, trust on first use and a wrong pin', async () => {
    const user = newUser();
    const dev = user.device();
    const client = await open(dev.options(server, { pin: FIRST_USE }));
    assert.ok(client.isConnected);
    assert.ok(bytesEqual(client.serverKey, SERVER_KEY), 'the first key seen is pinned');
    assert.equal(client.authOk?.head, 0);
    assert.equal(client.authOk?.user, user.userKey.publicB64u());
    assert.equal(client.authOk?.device, dev.deviceKey.publicB64u());
    assert.equal(client.authOk?.limits.max_payload, 65536);
    assert.ok((await client.ping()) > 1.7e12);

    const wrong = UserKey.generate().public();
    await assert.rejects(
      Client.connect(dev.options(server, { pin: pinKey(wrong) })),
      (e: unknown) => e instanceof HandshakeError && e.failure === 'server_key_mismatch' && e.isFinal(),
    );
    await assert.rejects(Client.connect(dev.options(server, { url: 'http://127.0.0.1:1/v1/ws' })), InvalidUrlError);
  });

  test('publish: UUIDv7 ids, ack after storing, retry under the same id is a duplicate', async () => {
    const dev = newUser().device();
    const client = await open(dev.options(server));
    const a1 = await client.publish(utf8('one'));
    assert.ok(isCanonicalUuid(a1.id));
    assert.equal(a1.id[14], '7', 'a version-7 UUID');
    assert.equal(a1.seq, 1);
    assert.equal(a1.duplicate, false);
    const a2 = await client.publish(utf8('two'));
    assert.equal(a2.seq, 2);
    assert.ok(a2.id > a1.id, 'time-ordered ids');
    const again = await client.publish(utf8('one'), { id: a1.id });
    assert.deepEqual({ seq: again.seq, ts: again.ts, duplicate: again.duplicate }, { seq: 1, ts: a1.ts, duplicate: true });
    const page = await client.sync(0);
    assert.deepEqual(page.events.map(text), ['one', 'two']);
    assert.equal(page.head, 2);
    await assert.rejects(client.publish(new Uint8Array(70_000)), (e: unknown) => e instanceof ServerError && e.code === 'payload_too_large');
  });

  test('key/base conflicts', async () => {
    const dev = newUser().device();
    const client = await open(dev.options(server));
    const first = await client.publish(utf8('v1'), { key: 'settings', base: 0 });
    await assert.rejects(client.publish(utf8('v1 again'), { key: 'settings', base: 0 }), (e: unknown) => {
      return e instanceof ConflictError && e.head === first.seq;
    });
    const second = await client.publish(utf8('v2'), { key: 'settings', base: first.seq });
    assert.equal(second.seq, (first.seq ?? 0) + 1);
    const page = await client.sync(0);
    assert.deepEqual(page.events.map((e) => (e.key ? fromUtf8(e.key) : null)), ['settings', 'settings']);
  });

  test('ephemeral and targeted messages reach connected devices only and are never stored', async () => {
    const user = newUser();
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => open(user.device().options(server))));
    const got = { b: [] as string[], c: [] as string[] };
    b!.onEphemeral((e) => got.b.push(fromUtf8(e.payload)));
    const cSub = c!.ephemeral();
    const ackAll = await a!.publish(utf8('cursor moved'), { ephemeral: true });
    assert.equal(ackAll.delivered, 2);
    assert.equal(ackAll.seq, undefined);
    const ackC = await a!.publish(utf8('just for c'), { ephemeral: true, to: [c!.device] });
    assert.equal(ackC.delivered, 1);
    const c1 = await within(5000, 'c gets the first', cSub.next());
    const c2 = await within(5000, 'c gets the second', cSub.next());
    assert.deepEqual([fromUtf8(c1!.payload), fromUtf8(c2!.payload)], ['cursor moved', 'just for c']);
    assert.equal(c1!.device, a!.device);
    await eventually('b gets the broadcast', () => got.b.length === 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got.b, ['cursor moved'], 'the targeted one did not reach b');
    assert.equal((await a!.sync(0)).events.length, 0, 'nothing stored');
    cSub.close();
  });

  test('sync pages with limit and more; syncFrom pages through everything', async () => {
    const dev = newUser().device();
    const client = await open(dev.options(server, { syncLimit: 7 }));
    for (let i = 1; i <= 25; i++) await client.publish(utf8(`e${i}`));
    const p1 = await client.sync(0, 10);
    assert.equal(p1.events.length, 10);
    assert.equal(p1.more, true);
    assert.equal(p1.head, 25);
    const p3 = await client.sync(20, 10);
    assert.deepEqual(p3.events.map((e) => e.seq), [21, 22, 23, 24, 25]);
    assert.equal(p3.more, false);

    const stream = client.syncFrom(0);
    const seen: number[] = [];
    for (;;) {
      const item = await stream.next();
      assert.equal(item?.type, 'event');
      if (item?.type === 'event') seen.push(item.event.seq);
      if (seen.length === 25) break;
    }
    assert.deepEqual(seen, Array.from({ length: 25 }, (_, i) => i + 1));
    assert.ok(stream.syncs >= 4, `paged in ${stream.syncs} syncs`);
    stream.close();
  });

  test('live stream between two devices, cursor, devices and presence', async () => {
    const user = newUser();
    const devA = user.device();
    const devB = user.device();
    const a = await open(devA.options(server));
    const presence: Presence[] = [];
    a.onPresence((p) => presence.push(p));
    const b = await open(devB.options(server));
    await eventually('a sees b come online', () => presence.find((p) => p.device === b.device && p.online));

    const bStream = collect(b.syncFrom(0));
    for (let i = 1; i <= 5; i++) await a.publish(utf8(`live ${i}`));
    await eventually('b receives 5 events', () => bStream.events().length === 5);
    assert.deepEqual(bStream.events().map(text), ['live 1', 'live 2', 'live 3', 'live 4', 'live 5']);
    assert.ok(bStream.events().every((e) => e.device === a.device));

    // b's stream reports its position when it waits for more.
    const devices = await eventually('b reports cursor 4', async () => {
      const list = await a.devices();
      return list.find((d) => d.device === b.device && d.cursor >= 4) ? list : undefined;
    });
    assert.equal(devices.length, 2);
    assert.ok(devices.every((d) => d.online));
    await a.setCursor(5);
    await eventually('a cursor 5', async () => (await b.devices()).find((d) => d.device === a.device)?.cursor === 5);

    await b.close();
    await eventually('a sees b go offline', () => presence.find((p) => p.device === b.device && !p.online));
    await bStream.done;
  });

  test('a lost live event is a gap the stream heals by itself with a sync', async () => {
    const user = newUser();
    const a = await open(user.device().options(server));
    const b = await open(user.device().options(server));
    const stream = b.syncFrom(0);
    const bStream = collect(stream);
    await a.publish(utf8('g1'));
    await eventually('b has g1', () => bStream.events().length === 1);
    b.debugDropLiveEvent(2);
    await a.publish(utf8('g2 (lost on the way)'));
    await a.publish(utf8('g3'));
    await eventually('b has all three', () => bStream.events().length === 3);
    assert.deepEqual(bStream.events().map((e) => e.seq), [1, 2, 3]);
    assert.equal(bStream.events()[1] && text(bStream.events()[1]!), 'g2 (lost on the way)');
    assert.equal(stream.gapsDetected, 1);
    stream.close();
  });

  test('revocation: the device is closed with 4003 for good and cannot log in again', async () => {
    const user = newUser();
    const devA = user.device();
    const devB = user.device();
    const a = await open(devA.options(server, { userKey: user.userKey }));
    const b = await open(devB.options(server));
    const presence: Presence[] = [];
    a.onPresence((p) => presence.push(p));
    const bStream = collect(b.syncFrom(0));

    const noKey = await open(user.device().options(server));
    await assert.rejects(noKey.revoke(b.device), (e: unknown) => e instanceof Error && e.name === 'NoUserKeyError');

    await a.revoke(b.device);
    const why = await within(5000, 'b closed', b.closed());
    assert.ok(why instanceof ClosedError);
    assert.equal(why.closeCode, 4003);
    assert.ok(why.isFinal());
    assert.equal(b.connectionState, 'final');
    const streamEnd = await bStream.done;
    assert.ok(streamEnd instanceof ClosedError && streamEnd.code === 4003, 'the stream ends with 4003');
    await assert.rejects(b.publish(utf8('after')), (e: unknown) => e instanceof ClosedError && e.code === 4003);
    await eventually('a sees the revocation', () => presence.find((p) => p.device === b.device && p.revoked && !p.online));
    const listed = (await a.devices()).find((d) => d.device === b.device);
    assert.ok(listed?.revokedAt, 'devices shows revoked_at');
    await assert.rejects(Client.connect(devB.options(server)), (e: unknown) => e instanceof ClosedError && e.code === 4002 && e.isFinal());
  });

  test('replacement: a second session of the same device closes the first with 4011', async () => {
    const dev = newUser().device();
    const first = await open(dev.options(server));
    const second = await open(dev.options(server));
    const why = await within(5000, 'the first closed', first.closed());
    assert.ok(why instanceof ClosedError && why.code === 4011 && why.isFinal());
    assert.equal(first.connectionState, 'final', 'no automatic reconnect after 4011');
    assert.ok(second.isConnected);
    assert.equal((await second.publish(utf8('still here'))).seq, 1);
  });

  test('an expired certificate is refused with 4002 (final)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const dev = newUser().device({ issuedAt: now - 3600, expiresAt: now - 60 });
    await assert.rejects(Client.connect(dev.options(server)), (e: unknown) => e instanceof ClosedError && e.code === 4002 && e.isFinal());
  });

  test('REST tokens by challenge login, refresh, logout; and over the session', async () => {
    const user = newUser();
    const dev = user.device();
    const opts = dev.options(server);
    const rest = RestClient.forWebSocketUrl(server.url);
    assert.equal((await rest.discovery()).server_key, b64uEncode(SERVER_KEY));
    const pair = await rest.login(opts.credentials, SERVER_KEY);
    const me = await rest.me(pair.accessToken);
    assert.equal(me.user, user.userKey.publicB64u());
    assert.equal(me.device, dev.deviceKey.publicB64u());
    const next = await rest.refresh(pair.refreshToken);
    assert.notEqual(next.refreshToken, pair.refreshToken);
    assert.equal((await rest.me(next.accessToken)).device, dev.deviceKey.publicB64u());
    // Presenting the spent refresh token again revokes the whole family.
    await assert.rejects(rest.refresh(pair.refreshToken), (e: unknown) => e instanceof RestError && e.status === 401);
    await assert.rejects(rest.me(next.accessToken), (e: unknown) => e instanceof RestError && e.status === 401);
    // Logout revokes the access token.
    const again = await rest.login(opts.credentials, SERVER_KEY);
    await rest.logout(again.accessToken);
    await assert.rejects(rest.me(again.accessToken), (e: unknown) => e instanceof RestError && e.status === 401);
    // A wrong server key in the signed challenge is refused.
    await assert.rejects(rest.login(opts.credentials, UserKey.generate().public()), (e: unknown) => e instanceof RestError && e.status === 401);

    const client = await open(opts);
    const tok = await client.token();
    assert.equal((await rest.me(tok.accessToken)).device, dev.deviceKey.publicB64u());
    assert.ok(tok.expiresAt > Date.now() / 1000);
  });

  test('linking a new device with a grant; profiles in a key store', async () => {
    const store = new MemoryKeyStore();
    const owner = Profile.create(server.url, SERVER_KEY);
    await owner.save(store, 'owner');
    const loaded = await Profile.load(store, 'owner');
    assert.equal(loaded?.toJson(), owner.toJson());

    const newDevice = DeviceKey.generate();
    const grantText = owner.userKey()!.link(newDevice.public(), Math.floor(Date.now() / 1000) - 60, 0, server.url, SERVER_KEY).encode();
    const grant = LinkGrant.decode(grantText);
    const joined = Profile.join(server.url, undefined, newDevice, grant);
    assert.equal(joined.userKey(), undefined);

    const a = await open({ url: owner.serverUrl, credentials: owner.credentials(), pin: owner.pin(), WebSocket: NodeWebSocket });
    const b = await open({ url: joined.serverUrl, credentials: joined.credentials(), pin: joined.pin(), WebSocket: NodeWebSocket });
    await a.publish(utf8('hello new device'));
    const page = await b.sync(0);
    assert.deepEqual(page.events.map(text), ['hello new device']);
  });

  test('the low-level Connection: requests by rid, unsolicited messages, close', async () => {
    const user = newUser();
    const a = user.device().options(server);
    const b = user.device().options(server);
    const { connection: ca, authOk } = await Connection.connect(a.url, a.credentials, a.pin!, { WebSocket: NodeWebSocket });
    assert.equal(authOk.head, 0);
    const { connection: cb } = await Connection.connect(b.url, b.credentials, b.pin!, { WebSocket: NodeWebSocket });
    const pong = await ca.request({ type: 'ping' });
    assert.equal(pong.type, 'pong');
    await cb.request({ type: 'publish', id: '0190c1a2-7d3e-7b6a-9f21-3c4d5e6f7a8b', payload: utf8('x') });
    for (;;) {
      const item = await within(5000, 'an event on a', ca.recv());
      if (item?.kind === 'event') {
        assert.equal(item.event.seq, 1);
        break;
      }
    }
    await ca.close();
    assert.equal(ca.closeReason?.kind, 'shutdown');
    await cb.close();
  });
});

describe('reconnecting across a server restart', { skip }, () => {
  let server: FerryServer;
  before(async () => {
    server = await FerryServer.start(bin);
  });
  after(async () => {
    await server.dispose();
  });

  test('1001 on shutdown, jittered backoff, publish retried under its id, stream without gaps', async () => {
    const user = newUser();
    const a = await Client.connect(user.device().options(server, { backoff: new Backoff(50, 400) }));
    const b = await Client.connect(user.device().options(server, { backoff: new Backoff(50, 400) }));
    const states: string[] = [];
    a.onStateChange((s) => states.push(s));
    const bStream = collect(b.syncFrom(0));
    await a.publish(utf8('before'));
    await eventually('b has the first', () => bStream.events().length === 1);

    await server.stop();
    await eventually('a notices', () => a.connectionState === 'down');
    // Published while the server is down: retried once it is back, under the same id.
    const pending = a.publish(utf8('during'));
    await new Promise((r) => setTimeout(r, 300));
    await server.restart();
    const ack = await within(20_000, 'the publish is acked after the restart', pending);
    assert.equal(ack.seq, 2);
    assert.equal(ack.duplicate, false);
    await a.publish(utf8('after'));
    await eventually('b has all three', () => bStream.events().length === 3, 20_000);
    assert.deepEqual(bStream.events().map(text), ['before', 'during', 'after']);
    assert.deepEqual(states.slice(0, 2), ['down', 'up']);
    await a.close();
    await b.close();
    await bStream.done;
  });
});

describe('a truncated sync after retention', { skip }, () => {
  let server: FerryServer;
  before(async () => {
    server = await FerryServer.start(bin, {
      FERRY_RETENTION_MAX_EVENTS_PER_USER: '5',
      FERRY_RETENTION_INTERVAL: '1s',
    });
  });
  after(async () => {
    await server.dispose();
  });

  test('sync reports truncated.oldest and the stream says so once, then goes on', async () => {
    const dev = newUser().device();
    const client = await Client.connect(dev.options(server));
    for (let i = 1; i <= 12; i++) await client.publish(utf8(`r${i}`));
    const page = await eventually('retention pruned the log', async () => {
      const p = await client.sync(0);
      return p.truncated !== undefined && p.events[0]?.seq === p.truncated ? p : undefined;
    }, 15_000);
    assert.equal(page.truncated, 8);
    assert.deepEqual(page.events.map((e) => e.seq), [8, 9, 10, 11, 12]);

    const stream = client.syncFrom(2);
    const first = await stream.next();
    assert.equal(first?.type, 'truncated');
    assert.equal(first?.type === 'truncated' && first.oldest, 8);
    const seqs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const item = await stream.next();
      if (item?.type === 'event') seqs.push(item.event.seq);
    }
    assert.deepEqual(seqs, [8, 9, 10, 11, 12]);
    stream.close();
    await client.close();
  });
});

describe('rate limits', { skip }, () => {
  let server: FerryServer;
  before(async () => {
    server = await FerryServer.start(bin, { FERRY_LIMITS_EVENTS_PER_SEC: '20', FERRY_LIMITS_BURST: '5' });
  });
  after(async () => {
    await server.dispose();
  });

  test('rate_limited publishes are retried after retry_after_ms and all stored once', async () => {
    const client = await Client.connect(newUser().device().options(server));
    assert.equal(client.authOk?.limits.burst, 5);
    const acks = await Promise.all(Array.from({ length: 12 }, (_, i) => client.publish(utf8(`p${i}`))));
    assert.deepEqual(
      acks.map((a) => a.seq).sort((x, y) => (x ?? 0) - (y ?? 0)),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
    assert.deepEqual(acks.filter((a) => a.duplicate), []);
    const page = await client.sync(0);
    assert.equal(page.events.length, 12, 'each stored once');
    await client.close();
  });
});
