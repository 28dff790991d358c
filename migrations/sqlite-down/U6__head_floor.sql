-- Reverts migrations/sqlite/V6__head_floor.sql. Run by `ferry migrate down`.
-- users.head becomes the head again: the newest seq of each log, where that is higher.
UPDATE users SET head = (SELECT max(e.seq) FROM events AS e WHERE e.user_id = users.user_id)
WHERE head < (SELECT max(e.seq) FROM events AS e WHERE e.user_id = users.user_id);
