-- A dataset's change mark: a value no earlier state of the dataset had. GET /records reads the page
-- after the one it serves before its reader asks (src/records/read-ahead.ts) and serves it only if
-- the mark it read with the page, in the page statement's snapshot, is still the dataset's mark.
--
-- Every write of records updates its dataset row in the same transaction (lockDataset's upsert,
-- prune's and retention's updates) or deletes it, so a trigger on that row is the one place the
-- mark must move. Values come from a sequence: a dataset deleted and written again (retention, a
-- reset with emptyCache, its connection deleted and created again) never repeats an earlier mark.
-- Updates that change no record (last_sync_at, the delete-tracking window) move it too; a page
-- read ahead is then read again.
CREATE SEQUENCE datasets_change_seq;

ALTER TABLE datasets ADD COLUMN change_mark bigint NOT NULL DEFAULT nextval('datasets_change_seq');

CREATE FUNCTION datasets_move_change_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.change_mark := nextval('datasets_change_seq');
  RETURN NEW;
END
$$;

CREATE TRIGGER datasets_change_mark BEFORE UPDATE ON datasets
  FOR EACH ROW EXECUTE FUNCTION datasets_move_change_mark();
