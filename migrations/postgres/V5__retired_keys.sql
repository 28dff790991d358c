-- Ferry schema, version 5 (PostgreSQL dialect): retention. Keep table and column
-- names identical to migrations/sqlite/V5__retired_keys.sql.
--
-- When retention deletes the newest event of a key (an expired event, or one in a
-- pruned prefix of the log), its seq is remembered here, so a compare-and-set
-- publish (`key` + `base`) is still judged against the key's true newest seq.
CREATE TABLE retired_keys (
    user_id   BYTEA  NOT NULL CHECK (octet_length(user_id) = 32),
    event_key BYTEA  NOT NULL,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_key)
);
