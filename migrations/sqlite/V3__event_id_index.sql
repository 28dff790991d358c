-- Ferry schema, version 3 (SQLite dialect): the idempotency index leads with the
-- event id. Keep index names identical to migrations/postgres/V3__event_id_index.sql.
--
-- Keyed (user_id, event_id), every stored event dirtied one leaf page of that index
-- per user in the batch, wherever the user's ids fell. Keyed (event_id, user_id),
-- time-ordered ids (UUIDv7, what the client SDK generates) land at the right edge of
-- the index, so a batch dirties a handful of pages; random ids cost what they did
-- before. The user stays in the key: ids are client-chosen, so an id shared by many
-- users must not turn the duplicate check into a scan, and uniqueness per user stays
-- enforced by the index as a backstop to the append path's own check.
DROP INDEX events_user_event_id;
CREATE UNIQUE INDEX events_event_id_user ON events (event_id, user_id);
