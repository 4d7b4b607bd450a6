-- Syncs, their schedules and their runs. All scheduling state lives here: no external queue.

-- One row per (connection, sync, variant). `base` exists for every sync of the connection's
-- integration; other variants are created through the API.
CREATE TABLE syncs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  connection_id integer NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (name ~ '^[a-zA-Z0-9_-]{1,255}$'),
  variant text NOT NULL CHECK (variant ~ '^[a-zA-Z0-9_-]{1,255}$'),
  -- The per-connection frequency exactly as given to update-connection-frequency; NULL = the definition's.
  frequency text,
  -- Start time of the last successful run (nango.lastSyncDate); cleared by a reset.
  last_sync_date timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (connection_id, name, variant)
);

-- When a sync runs. Due times lie on a grid anchored at creation: starts_at + k * frequency;
-- slots missed while a run was still going (or the server was down) are skipped, never queued.
CREATE TABLE schedules (
  sync_id uuid PRIMARY KEY REFERENCES syncs (id) ON DELETE CASCADE,
  connection_id integer NOT NULL,
  state text NOT NULL CHECK (state IN ('STARTED', 'PAUSED', 'DELETED')),
  frequency_ms bigint NOT NULL CHECK (frequency_ms >= 30000),
  starts_at timestamptz NOT NULL,
  next_due_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The claim scans only started schedules that are due, in due order.
CREATE INDEX schedules_due_idx ON schedules (next_due_at) WHERE state = 'STARTED';

-- One row per execution. State machine (src/scheduler/states.ts):
-- CREATED -> STARTED -> SUCCEEDED | FAILED | CANCELLED | EXPIRED, and CREATED -> CANCELLED | EXPIRED.
CREATE TABLE runs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sync_id uuid NOT NULL REFERENCES syncs (id) ON DELETE CASCADE,
  connection_id integer NOT NULL,
  state text NOT NULL CHECK (state IN ('CREATED', 'STARTED', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED')),
  -- Why it exists: its schedule came due, or the API asked for it (trigger / start).
  reason text NOT NULL CHECK (reason IN ('schedule', 'trigger', 'start')),
  -- opts.reset: start from no checkpoint and no lastSyncDate; opts.emptyCache: drop the records first.
  reset boolean NOT NULL DEFAULT false,
  empty_cache boolean NOT NULL DEFAULT false,
  -- 'full' or 'incremental', decided when the run starts.
  type text CHECK (type IN ('full', 'incremental')),
  created_at timestamptz NOT NULL DEFAULT now(),
  due_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  heartbeat_at timestamptz,
  ended_at timestamptz,
  -- The instance running it, and a token only that claim knows: completions and heartbeats must
  -- present it, so a run that expired while its owner was away cannot be completed late.
  owner text,
  lease uuid,
  -- {"<Model>": {"added": n, "updated": n, "deleted": n}}
  result jsonb,
  error text
);

-- At most one run executing and at most one waiting per sync: a trigger during a run queues
-- exactly one follow-up, and a second trigger merges into it.
CREATE UNIQUE INDEX runs_one_started_idx ON runs (sync_id) WHERE state = 'STARTED';
CREATE UNIQUE INDEX runs_one_waiting_idx ON runs (sync_id) WHERE state = 'CREATED';
CREATE INDEX runs_claim_idx ON runs (due_at) WHERE state = 'CREATED';
CREATE INDEX runs_heartbeat_idx ON runs (heartbeat_at) WHERE state = 'STARTED';
CREATE INDEX runs_sync_idx ON runs (sync_id, id DESC);

-- A sync's checkpoint (flat JSON object, sealed), with optimistic versioning.
CREATE TABLE checkpoints (
  sync_id uuid PRIMARY KEY REFERENCES syncs (id) ON DELETE CASCADE,
  checkpoint text NOT NULL,
  version integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- What a run's function logged (nango.log), readable with `syncstore runs logs`.
CREATE TABLE run_logs (
  run_id bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  seq integer NOT NULL,
  level text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
  message text NOT NULL,
  payload jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, seq)
);
