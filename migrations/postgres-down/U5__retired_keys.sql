-- Reverts migrations/postgres/V5__retired_keys.sql. Run by `ferry migrate down`.
DROP TABLE retired_keys;
