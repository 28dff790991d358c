-- Ferry schema, version 5 (SQLite dialect): retention. Keep table and column names
-- identical to migrations/postgres/V5__retired_keys.sql.
--
-- When retention deletes the newest event of a key (an expired event, or one in a
-- pruned prefix of the log), its seq is remembered here, so a compare-and-set
-- publish (`key` + `base`) is still judged against the key's true newest seq.
CREATE TABLE retired_keys (
    user_id   BLOB    NOT NULL CHECK (length(user_id) = 32),
    event_key BLOB    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (user_id, event_key)
) WITHOUT ROWID;
