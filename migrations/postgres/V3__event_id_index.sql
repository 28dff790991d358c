-- Ferry schema, version 3 (PostgreSQL dialect): the idempotency constraint leads
-- with the event id. Keep index names identical to
-- migrations/sqlite/V3__event_id_index.sql.
--
-- Keyed (user_id, event_id), every stored event touched one leaf page of that index
-- per user in the batch, wherever the user's ids fell. Keyed (event_id, user_id),
-- time-ordered ids (UUIDv7, what the client SDK generates) land at the right edge of
-- the index; random ids cost what they did before. The user stays in the key: ids
-- are client-chosen, so an id shared by many users must not turn the duplicate check
-- into a scan, and uniqueness per user stays enforced as a backstop to the append
-- path's own check.
ALTER TABLE events DROP CONSTRAINT events_user_event_id;
ALTER TABLE events ADD CONSTRAINT events_event_id_user UNIQUE (event_id, user_id);
