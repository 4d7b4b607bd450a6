-- Synced records, per dataset: a (connection, model, variant).
-- Every table and index leads with connection_id and every query filters by it, so a distributed
-- Postgres (Citus) can shard all of this on the connection.

-- One row per dataset. Writers lock it (INSERT ... ON CONFLICT DO UPDATE) for the length of their
-- transaction, so writes to one dataset are serialised, and take their timestamp after the lock:
-- greatest(clock_timestamp(), last_write_at + 1 µs). Cursor order therefore equals commit order.
CREATE TABLE datasets (
  connection_id integer NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
  model text NOT NULL,
  variant text NOT NULL,
  -- Live (not deleted) records, kept exact in the same transaction as every write.
  record_count bigint NOT NULL DEFAULT 0 CHECK (record_count >= 0),
  -- An upper bound of records.size_bytes in this dataset (it only grows). While limit x this fits
  -- the page byte budget, GET /records needs no running byte total (src/records/read.ts).
  max_size_bytes integer NOT NULL DEFAULT 0,
  last_write_at timestamptz,
  -- When a sync run for this dataset last completed; retention deletes datasets idle too long.
  last_sync_at timestamptz,
  -- Open delete-tracking window (trackDeletesStart), as a generation number; NULL when closed.
  track_deletes_generation bigint,
  retention_checked_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (connection_id, model, variant)
);

CREATE TABLE records (
  connection_id integer NOT NULL,
  model text NOT NULL,
  variant text NOT NULL,
  -- Internal id: the cursor's tie-breaker between records written in one batch.
  id bigint GENERATED ALWAYS AS IDENTITY,
  external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
  -- Sealed JSON text of the record, `id` first (see src/records/payload.ts); NULL once pruned.
  payload text,
  payload_hash text NOT NULL,
  -- Upper bound of the bytes this record adds to a GET /records page, for the page byte budget.
  size_bytes integer NOT NULL,
  first_seen_at timestamptz NOT NULL,
  last_modified_at timestamptz NOT NULL,
  deleted_at timestamptz,
  pruned_at timestamptz,
  PRIMARY KEY (connection_id, model, variant, external_id),
  FOREIGN KEY (connection_id, model, variant) REFERENCES datasets (connection_id, model, variant) ON DELETE CASCADE
);

-- The keyset: GET /records pages and prune walk it in order, without a sort.
CREATE UNIQUE INDEX records_cursor_idx ON records (connection_id, model, variant, last_modified_at, id);

-- Records still holding a payload: lets prune and retention find work without stepping over the
-- (possibly millions of) rows already pruned.
CREATE INDEX records_unpruned_idx ON records (connection_id, model, variant, last_modified_at, id)
  WHERE pruned_at IS NULL;

-- External ids seen during an open delete-tracking window, one row per saved batch; the end of
-- the window soft-deletes every live record whose id is in none of them.
CREATE TABLE records_seen (
  connection_id integer NOT NULL,
  model text NOT NULL,
  variant text NOT NULL,
  generation bigint NOT NULL,
  batch integer GENERATED ALWAYS AS IDENTITY,
  external_ids text[] NOT NULL,
  PRIMARY KEY (connection_id, model, variant, generation, batch),
  FOREIGN KEY (connection_id, model, variant) REFERENCES datasets (connection_id, model, variant) ON DELETE CASCADE
);

CREATE SEQUENCE records_generation_seq;
