-- Reverts migrations/postgres/V4__kept_revocations.sql. Run by `ferry migrate down`.
DROP TABLE kept_revocations;
