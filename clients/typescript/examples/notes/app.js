// Ferry Notes: notes encrypted on the device and synced between one person's
// devices through a Ferry relay. The relay stores and relays only ciphertext.
//
// - The account (a Ferry profile: user key, device key, certificate, pinned server
//   key) lives in IndexedDB, through the SDK's KeyStore interface.
// - The content key is derived from the passphrase (PBKDF2-SHA256, 600,000
//   iterations, salted with the user's public key) and never leaves memory.
// - Each note is an event whose `key` is the note id; saving publishes with `base`
//   set to the note's last seq, so two devices editing the same note get a
//   conflict instead of silently overwriting each other.
// - Each browser tab is its own device: tab slots are held with Web Locks, and a
//   tab after the first gets a device key certified by the account's user key.
import {
  Client,
  ConflictError,
  DeviceKey,
  LinkGrant,
  Profile,
  b64uDecode,
  b64uEncode,
  fromUtf8,
  utf8,
} from './vendor/ferry-client.js';

const DB_NAME = 'ferry-notes';
const PBKDF2_ITERATIONS = 600_000;
const MAX_SLOTS = 8;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ---------------------------------------------------------------------------
// Key storage: the SDK's KeyStore interface over IndexedDB.

class IndexedDbKeyStore {
  #db;

  constructor(name) {
    this.#db = new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore('kv');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  async #run(mode, op) {
    const db = await this.#db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction('kv', mode);
      const req = op(tx.objectStore('kv'));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  }

  async get(name) {
    return (await this.#run('readonly', (s) => s.get(name))) ?? null;
  }

  async set(name, value) {
    await this.#run('readwrite', (s) => s.put(value, name));
  }

  async delete(name) {
    await this.#run('readwrite', (s) => s.delete(name));
  }
}

const store = new IndexedDbKeyStore(DB_NAME);

// ---------------------------------------------------------------------------
// Content encryption: AES-256-GCM under a passphrase-derived key.

async function deriveContentKey(passphrase, userPublic) {
  const material = await crypto.subtle.importKey('raw', utf8(passphrase), 'PBKDF2', false, ['deriveKey']);
  const salt = new Uint8Array([...utf8('ferry-notes/v1 content-key'), 0, ...userPublic]);
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt, iterations: PBKDF2_ITERATIONS },
    material,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/** nonce (12 bytes) || AES-GCM(note JSON), the note's event key as associated data. */
async function sealNote(key, eventKey, note) {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: eventKey }, key, utf8(JSON.stringify(note)));
  const out = new Uint8Array(12 + ct.byteLength);
  out.set(nonce);
  out.set(new Uint8Array(ct), 12);
  return out;
}

async function openNote(key, eventKey, payload) {
  const pt = await crypto.subtle.decrypt(
    { name: 'AES-GCM', iv: payload.subarray(0, 12), additionalData: eventKey },
    key,
    payload.subarray(12),
  );
  return JSON.parse(fromUtf8(new Uint8Array(pt)));
}

const eventKeyOf = (id) => utf8(`note:${id}`);

// ---------------------------------------------------------------------------
// One device per tab.

/** The first free tab slot, held (with a Web Lock) until the tab closes. */
async function acquireSlot() {
  if (!navigator.locks) return 0;
  for (let i = 0; i < MAX_SLOTS; i++) {
    const got = await new Promise((resolve) => {
      navigator.locks.request(`${DB_NAME}-slot-${i}`, { ifAvailable: true }, (lock) => {
        resolve(lock !== null);
        return lock ? new Promise(() => {}) : undefined;
      });
    });
    if (got) return i;
  }
  throw new Error(`more than ${MAX_SLOTS} tabs are open`);
}

/** The credentials of this tab's device: the profile's own (slot 0), or a tab device. */
async function credentialsForSlot(profile, slot) {
  if (slot === 0) return profile.credentials();
  const user = profile.userKey();
  if (!user) throw new Error('this account is open in another tab (only the first device of an account can open more)');
  const name = `tab-device-${slot}`;
  let saved = JSON.parse((await store.get(name)) ?? 'null');
  if (!saved) {
    const device = DeviceKey.generate();
    const cert = user.certify(device.public(), Math.floor(Date.now() / 1000) - 60, 0);
    saved = { seed: b64uEncode(device.seed()), issued_at: cert.issuedAt, sig: b64uEncode(cert.sig) };
    await store.set(name, JSON.stringify(saved));
  }
  const device = DeviceKey.fromSeed(b64uDecode(saved.seed, 32));
  return device.credentials(profile.userPublic, { issuedAt: saved.issued_at, expiresAt: 0, sig: b64uDecode(saved.sig, 64) });
}

// ---------------------------------------------------------------------------
// State and rendering.

const state = {
  profile: null,
  client: null,
  contentKey: null,
  slot: 0,
  notes: new Map(), // id -> { id, title, body, deleted, updatedAt, seq }
  selected: null,
  dirty: false,
  undecryptable: 0,
  position: 0,
};

function say(text, kind = 'info') {
  $('message').textContent = text;
  $('message').dataset.kind = kind;
}

function show(section) {
  for (const id of ['setup', 'unlock', 'notes']) $(id).hidden = id !== section;
}

function setStatus(s, error) {
  const pill = $('status');
  pill.dataset.state = s;
  pill.textContent = s === 'up' ? 'connected' : s === 'down' ? 'reconnecting…' : `stopped: ${error?.message ?? ''}`;
}

function renderList() {
  const list = $('note-list');
  list.replaceChildren();
  const live = [...state.notes.values()].filter((n) => !n.deleted).sort((a, b) => b.updatedAt - a.updatedAt);
  for (const n of live) {
    const li = document.createElement('li');
    li.textContent = n.title || '(untitled)';
    li.dataset.id = n.id;
    li.setAttribute('aria-selected', String(n.id === state.selected));
    li.onclick = () => select(n.id);
    list.append(li);
  }
}

function renderEditor() {
  const n = state.selected ? state.notes.get(state.selected) : null;
  $('title').value = n?.title ?? '';
  $('body').value = n?.body ?? '';
  $('note-info').textContent = n ? `seq ${n.seq}` : 'new note';
  state.dirty = false;
}

function select(id) {
  state.selected = id;
  renderList();
  renderEditor();
}

// ---------------------------------------------------------------------------
// Sync.

async function applyEvent(event) {
  const key = event.key ? fromUtf8(event.key) : '';
  if (!key.startsWith('note:')) return;
  let note;
  try {
    note = await openNote(state.contentKey, event.key, event.payload);
  } catch {
    state.undecryptable++;
    say(`${state.undecryptable} note version(s) could not be decrypted: is this the account's passphrase?`, 'error');
    return;
  }
  state.notes.set(note.id, { ...note, seq: event.seq });
  state.position = event.seq;
  document.body.dataset.position = String(event.seq);
  renderList();
  if (note.id === state.selected) {
    if (!state.dirty) renderEditor();
    else say('this note changed on another device; saving will replace that version', 'error');
  }
}

async function follow(client) {
  const stream = client.syncFrom(0);
  try {
    for await (const item of stream) {
      if (item.type === 'event') await applyEvent(item.event);
      else if (item.type === 'truncated') say(`the relay no longer holds events before ${item.oldest}`);
      else if (item.type === 'erased') {
        state.notes.clear();
        renderList();
        say('the relay erased this account’s data');
      }
    }
  } catch (e) {
    say(`sync stopped: ${e.message}`, 'error');
  }
}

async function save() {
  const id = state.selected ?? crypto.randomUUID();
  const prev = state.notes.get(id);
  const note = { v: 1, id, title: $('title').value, body: $('body').value, deleted: false, updatedAt: Date.now() };
  await publishNote(note, prev?.seq ?? 0);
  state.selected = id;
  state.dirty = false;
}

async function publishNote(note, base) {
  const eventKey = eventKeyOf(note.id);
  const payload = await sealNote(state.contentKey, eventKey, note);
  try {
    const ack = await state.client.publish(payload, { key: eventKey, base });
    say(`saved (seq ${ack.seq})`);
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    // Another device saved this note first: keep this version (last writer wins),
    // building on the newest one.
    say(`another device changed this note (seq ${e.head}); saved this version over it`);
    await publishNote(note, e.head);
  }
}

async function remove() {
  const n = state.selected && state.notes.get(state.selected);
  if (!n) return;
  await publishNote({ ...n, seq: undefined, deleted: true, updatedAt: Date.now() }, n.seq);
  state.selected = null;
  renderEditor();
}

// ---------------------------------------------------------------------------
// Start-up.

async function openAccount(profile, passphrase) {
  say('deriving the content key…');
  state.contentKey = await deriveContentKey(passphrase, profile.userPublic);
  state.slot = await acquireSlot();
  const credentials = await credentialsForSlot(profile, state.slot);
  say('connecting…');
  const client = await Client.connect({
    url: profile.serverUrl,
    credentials,
    pin: profile.pin(),
    userKey: state.slot === 0 ? profile.userKey() : undefined,
  });
  if (!profile.serverKey) {
    // Trust on first use: pin the key from now on.
    profile.serverKey = client.serverKey;
    await profile.save(store);
  }
  state.profile = profile;
  state.client = client;
  setStatus('up');
  client.onStateChange(setStatus);
  $('whoami').textContent = `user ${client.user.slice(0, 8)}… · device ${client.device.slice(0, 8)}… · tab ${state.slot}`;
  $('link-box').hidden = !profile.userKey();
  show('notes');
  say('');
  document.body.dataset.ready = 'true';
  void follow(client);
}

async function main() {
  $('server').value = params.get('server') ?? 'ws://127.0.0.1:8080/v1/ws';
  const profile = await Profile.load(store);
  if (profile) {
    show('unlock');
    $('unlock-pass').focus();
  } else {
    show('setup');
    let pending = await store.get('pending-device');
    if (!pending) {
      pending = b64uEncode(DeviceKey.generate().seed());
      await store.set('pending-device', pending);
    }
    $('my-device-key').textContent = DeviceKey.fromSeed(b64uDecode(pending, 32)).publicB64u();
  }

  const guard = (f) => async () => {
    try {
      await f();
    } catch (e) {
      say(e.message ?? String(e), 'error');
    }
  };

  $('create').onclick = guard(async () => {
    const pass = $('setup-pass').value;
    if (pass.length < 8) throw new Error('choose a passphrase of at least 8 characters');
    const created = Profile.create($('server').value.trim());
    await created.save(store);
    await openAccount(created, pass);
  });

  $('join').onclick = guard(async () => {
    const pass = $('setup-pass').value;
    if (!pass) throw new Error('enter the account’s passphrase');
    const device = DeviceKey.fromSeed(b64uDecode(await store.get('pending-device'), 32));
    const grant = LinkGrant.decode($('grant').value);
    const joined = Profile.join(grant.serverUrl ?? $('server').value.trim(), undefined, device, grant);
    await joined.save(store);
    await store.delete('pending-device');
    await openAccount(joined, pass);
  });

  $('unlock-button').onclick = guard(async () => {
    await openAccount(await Profile.load(store), $('unlock-pass').value);
  });
  $('unlock-pass').onkeydown = (e) => {
    if (e.key === 'Enter') $('unlock-button').click();
  };

  $('new-note').onclick = () => select(null);
  $('title').oninput = $('body').oninput = () => {
    state.dirty = true;
  };
  $('save').onclick = guard(save);
  $('delete').onclick = guard(remove);
  $('link').onclick = guard(async () => {
    const user = state.profile.userKey();
    if (!user) throw new Error('only a device that holds the user key can link devices');
    const devicePublic = b64uDecode($('link-device').value.trim(), 32);
    const grant = user.link(devicePublic, Math.floor(Date.now() / 1000) - 60, 0, state.profile.serverUrl, state.client.serverKey);
    $('link-grant').value = grant.encode();
  });
}

main().catch((e) => say(e.message ?? String(e), 'error'));
