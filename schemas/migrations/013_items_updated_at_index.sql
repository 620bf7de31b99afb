-- 013 an index on items (updated_at, item_id) for the API's catalog refresh.
-- Why: every API worker asks Postgres every serving.catalog_refresh_sec (5 s) for the items
-- changed since its last look (serving/catalog.py), in keyset pages over (updated_at, item_id).
-- Without this index each ask walked the whole items table: ~10 ms of Postgres per worker and
-- refresh at 60k items, growing with the catalog.
CREATE INDEX IF NOT EXISTS items_updated_at_idx ON items (updated_at, item_id);
