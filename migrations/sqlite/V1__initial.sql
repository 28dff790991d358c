-- Ferry schema, version 1 (SQLite dialect). Keep table and column names identical to
-- migrations/postgres/V1__initial.sql: tests/migrations.rs checks the parity.
-- Times are Unix milliseconds unless a column says otherwise; keys are raw 32-byte
-- Ed25519 public keys; event ids are 16-byte UUIDs.

-- One row per user: the per-user sequence counter and the retention watermark.
CREATE TABLE users (
    user_id        BLOB    NOT NULL PRIMARY KEY CHECK (length(user_id) = 32),
    -- Highest seq assigned in this user's log; only Store::append moves it.
    head           INTEGER NOT NULL DEFAULT 0,
    -- Retention removed every event with seq <= pruned_through.
    pruned_through INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE devices (
    user_id         BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    device_id       BLOB    NOT NULL CHECK (length(device_id) = 32),
    -- The device certificate as first presented (issued/expires in Unix seconds).
    cert_issued_at  INTEGER NOT NULL,
    cert_expires_at INTEGER NOT NULL,
    cert_sig        BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    -- The device's processed position in its user's log; never moves backwards.
    cursor_seq      INTEGER NOT NULL DEFAULT 0,
    revoked_at      INTEGER,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

-- The log. A plain rowid table (append-only inserts at the end of the b-tree) with
-- small unique indexes inserts about twice as fast as a WITHOUT ROWID table keyed on
-- (user_id, seq). No foreign key to users: append always writes the users row in the
-- same transaction, and the check would cost a lookup per inserted row.
CREATE TABLE events (
    user_id    BLOB    NOT NULL,
    seq        INTEGER NOT NULL,
    event_id   BLOB    NOT NULL,
    device_id  BLOB    NOT NULL,
    ts         INTEGER NOT NULL,
    payload    BLOB    NOT NULL,
    event_key  BLOB,
    ttl        INTEGER,
    expires_at INTEGER
);
-- Gap-free, unique seq per user: the backstop for seq assignment.
CREATE UNIQUE INDEX events_user_seq ON events (user_id, seq);
-- Idempotency: an event id appears once per user.
CREATE UNIQUE INDEX events_user_event_id ON events (user_id, event_id);
-- "Newest event with this key" for compare-and-set.
CREATE INDEX events_user_key_seq ON events (user_id, event_key, seq) WHERE event_key IS NOT NULL;
-- Lets a retention job find expired events without scanning the log.
CREATE INDEX events_expires_at ON events (expires_at) WHERE expires_at IS NOT NULL;

-- Each signed revocation is usable once.
CREATE TABLE used_revocations (
    user_id   BLOB    NOT NULL,
    device_id BLOB    NOT NULL,
    ts        INTEGER NOT NULL,
    sig       BLOB    NOT NULL,
    used_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, ts, sig)
) WITHOUT ROWID;

-- REST API refresh tokens, stored by hash. A spent token presented again revokes its
-- whole family.
CREATE TABLE refresh_tokens (
    token_hash BLOB    NOT NULL PRIMARY KEY,
    family     BLOB    NOT NULL,
    user_id    BLOB    NOT NULL,
    device_id  BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Access-token denylist (JWT `jti`), kept until the token would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
