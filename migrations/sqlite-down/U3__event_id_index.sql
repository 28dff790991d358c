-- Reverts migrations/sqlite/V3__event_id_index.sql. Run by `ferry migrate down`.
DROP INDEX events_event_id_user;
CREATE UNIQUE INDEX events_user_event_id ON events (user_id, event_id);
