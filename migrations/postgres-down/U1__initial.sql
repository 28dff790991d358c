-- Reverts migrations/postgres/V1__initial.sql. Run by `ferry migrate down`.
DROP TABLE revoked_tokens;
DROP TABLE refresh_tokens;
DROP TABLE used_revocations;
DROP TABLE events;
DROP TABLE devices;
DROP TABLE users;
