-- Ferry schema, version 2 (PostgreSQL dialect): REST authentication. Keep table and
-- column names identical to migrations/sqlite/V2__rest_auth.sql.

-- Single-use login challenges (POST /v1/auth/challenge), in the database so that a
-- challenge issued by one server instance can be redeemed at another. Consumed by
-- a DELETE, so a challenge works once.
CREATE TABLE auth_challenges (
    challenge  BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(challenge) = 32),
    user_id    BYTEA  NOT NULL,
    device_id  BYTEA  NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_challenges_expires_at ON auth_challenges (expires_at);

-- The access token issued together with each refresh token, so that revoking a
-- family (logout, reuse of a spent refresh token) also denylists the family's
-- access tokens, and logout can find the family from the access token.
ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT, ADD COLUMN access_expires_at BIGINT;
CREATE INDEX refresh_tokens_access_jti ON refresh_tokens (access_jti);
