-- Ferry schema, version 2 (SQLite dialect): REST authentication. Keep table and
-- column names identical to migrations/postgres/V2__rest_auth.sql.

-- Single-use login challenges (POST /v1/auth/challenge), in the database so that a
-- challenge issued by one server instance can be redeemed at another. Consumed by
-- a DELETE, so a challenge works once.
CREATE TABLE auth_challenges (
    challenge  BLOB    NOT NULL PRIMARY KEY CHECK (length(challenge) = 32),
    user_id    BLOB    NOT NULL,
    device_id  BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX auth_challenges_expires_at ON auth_challenges (expires_at);

-- The access token issued together with each refresh token, so that revoking a
-- family (logout, reuse of a spent refresh token) also denylists the family's
-- access tokens, and logout can find the family from the access token.
ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT;
ALTER TABLE refresh_tokens ADD COLUMN access_expires_at INTEGER;
CREATE INDEX refresh_tokens_access_jti ON refresh_tokens (access_jti);
