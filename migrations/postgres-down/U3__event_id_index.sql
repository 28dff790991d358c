-- Reverts migrations/postgres/V3__event_id_index.sql. Run by `ferry migrate down`.
ALTER TABLE events DROP CONSTRAINT events_event_id_user;
ALTER TABLE events ADD CONSTRAINT events_user_event_id UNIQUE (user_id, event_id);
