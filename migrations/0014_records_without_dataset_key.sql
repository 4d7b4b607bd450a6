-- Records no longer point at their dataset with a foreign key. Its check looked the dataset row up
-- (FOR KEY SHARE) once for every record inserted: 100,000 1 KB records took Postgres 3.4-3.6 s to
-- insert with it and 2.05-2.06 s without (a copy of the table, 2026-11-30). Every insert of
-- records (batchSave) first upserts and locks its dataset row in the same transaction
-- (lockDataset), so no record is written without its dataset. What the key also did, taking a
-- dataset's records with it when the dataset is deleted (by itself, or with its connection), the
-- trigger below does, in the same statement's transaction.
ALTER TABLE records DROP CONSTRAINT records_connection_pk_model_variant_fkey;

CREATE FUNCTION records_follow_datasets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM records r USING gone g
  WHERE r.connection_pk = g.connection_pk AND r.model = g.model AND r.variant = g.variant;
  RETURN NULL;
END
$$;

CREATE TRIGGER datasets_take_records AFTER DELETE ON datasets
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION records_follow_datasets();
