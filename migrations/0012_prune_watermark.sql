-- Prune walks a dataset from where its last prune stopped, instead of through a partial index of
-- the records still holding a payload (records_unpruned_idx). That index named pruned_at, so every
-- prune was an update no index could skip: new entries in all three indexes for each record. With
-- no index on payload or pruned_at, a prune is a HOT update where the page has room, and each
-- insert maintains one index fewer.
--
-- The mark: every record of the dataset at or before (pruned_through_at, pruned_through_id) in
-- cursor order is pruned. NULL promises nothing (prune starts at the beginning). Prune moves it
-- forward (src/records/prune.ts); a save that restores a pruned record in place, keeping its
-- cursor, moves it back before that record (src/records/save.ts). Both hold the dataset lock.
ALTER TABLE datasets ADD COLUMN pruned_through_at timestamptz, ADD COLUMN pruned_through_id bigint;

DROP INDEX records_unpruned_idx;
