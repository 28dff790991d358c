-- Ferry schema, version 1 (PostgreSQL dialect). Keep table and column names identical
-- to migrations/sqlite/V1__initial.sql: tests/migrations.rs checks the parity.
-- Times are Unix milliseconds unless a column says otherwise; keys are raw 32-byte
-- Ed25519 public keys; event ids are 16-byte UUIDs.

-- One row per user: the per-user sequence counter (locked FOR UPDATE by append, which
-- makes seq assignment gap-free across server instances) and the retention watermark.
CREATE TABLE users (
    user_id        BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(user_id) = 32),
    -- Highest seq assigned in this user's log; only Store::append moves it.
    head           BIGINT NOT NULL DEFAULT 0,
    -- Retention removed every event with seq <= pruned_through.
    pruned_through BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id         BYTEA  NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    device_id       BYTEA  NOT NULL CHECK (octet_length(device_id) = 32),
    -- The device certificate as first presented (issued/expires in Unix seconds).
    cert_issued_at  BIGINT NOT NULL,
    cert_expires_at BIGINT NOT NULL,
    cert_sig        BYTEA  NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    -- The device's processed position in its user's log; never moves backwards.
    cursor_seq      BIGINT NOT NULL DEFAULT 0,
    revoked_at      BIGINT,
    PRIMARY KEY (user_id, device_id)
);

-- The log. No foreign key to users: append always locks the users row in the same
-- transaction, and the check would cost a lookup per inserted row.
CREATE TABLE events (
    user_id    BYTEA  NOT NULL,
    seq        BIGINT NOT NULL,
    event_id   BYTEA  NOT NULL,
    device_id  BYTEA  NOT NULL,
    ts         BIGINT NOT NULL,
    payload    BYTEA  NOT NULL,
    event_key  BYTEA,
    ttl        BIGINT,
    expires_at BIGINT,
    -- Gap-free, unique seq per user: the backstop for seq assignment.
    CONSTRAINT events_user_seq UNIQUE (user_id, seq),
    -- Idempotency: an event id appears once per user.
    CONSTRAINT events_user_event_id UNIQUE (user_id, event_id)
);
-- "Newest event with this key" for compare-and-set.
CREATE INDEX events_user_key_seq ON events (user_id, event_key, seq) WHERE event_key IS NOT NULL;
-- Lets a retention job find expired events without scanning the log.
CREATE INDEX events_expires_at ON events (expires_at) WHERE expires_at IS NOT NULL;

-- Each signed revocation is usable once.
CREATE TABLE used_revocations (
    user_id   BYTEA  NOT NULL,
    device_id BYTEA  NOT NULL,
    ts        BIGINT NOT NULL,
    sig       BYTEA  NOT NULL,
    used_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, ts, sig)
);

-- REST API refresh tokens, stored by hash. A spent token presented again revokes its
-- whole family.
CREATE TABLE refresh_tokens (
    token_hash BYTEA  NOT NULL PRIMARY KEY,
    family     BYTEA  NOT NULL,
    user_id    BYTEA  NOT NULL,
    device_id  BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at   BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Access-token denylist (JWT `jti`), kept until the token would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
