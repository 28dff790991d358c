-- Reverts migrations/postgres/V2__rest_auth.sql. Run by `ferry migrate down`.
DROP INDEX refresh_tokens_access_jti;
ALTER TABLE refresh_tokens DROP COLUMN access_expires_at, DROP COLUMN access_jti;
DROP TABLE auth_challenges;
