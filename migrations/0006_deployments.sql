-- Sync definitions are database state, per environment (SPEC 6.1). A deployment writes all of
-- these tables in one transaction; every instance reads them from here, so instances never
-- disagree and a change needs no restart.

-- An environment's integrations: what a deployed folder named, later also created through the API.
CREATE TABLE integrations (
  environment_id integer NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
  unique_key text NOT NULL,
  provider text NOT NULL,
  display_name text NOT NULL,
  -- The folder's integration.json (base URL, how credentials are sent...), {} when it has none.
  config jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (environment_id, unique_key)
);

-- Bundled sync functions, by the sha256 of their code: one self-contained ES module each. Kept
-- after a newer version replaces them, so a run finishes on the bundle it started with.
CREATE TABLE bundles (
  hash text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
  code text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per deployment to one environment: who, when, from where, and what it changed.
CREATE TABLE deployments (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  environment_id integer NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
  deployed_by text NOT NULL,
  source text NOT NULL,
  -- {"added": ["integration/sync"...], "changed": [...], "removed": [...], "refused": [{"file", "reason"}...]}
  summary jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX deployments_environment_idx ON deployments (environment_id, id);

-- The syncs an environment runs now: the newest deployed version of each.
CREATE TABLE sync_definitions (
  -- Kept across versions: Nango's functions API names a function by it.
  id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  environment_id integer NOT NULL,
  integration text NOT NULL,
  name text NOT NULL CHECK (name ~ '^[a-zA-Z0-9_-]{1,255}$'),
  bundle_hash text NOT NULL REFERENCES bundles (hash),
  -- The file it was deployed from, relative to the deployed folder.
  file text NOT NULL,
  description text NOT NULL,
  -- As written ("every hour") and in milliseconds.
  frequency text NOT NULL,
  frequency_ms bigint NOT NULL CHECK (frequency_ms >= 30000),
  auto_start boolean NOT NULL,
  sync_type text NOT NULL CHECK (sync_type IN ('full', 'incremental')),
  track_deletes boolean NOT NULL,
  -- Model name -> JSON Schema of its records.
  models jsonb NOT NULL,
  -- Fields kept and shown but not used yet (Nango's version, endpoints, scopes, webhookSubscriptions...).
  extra jsonb NOT NULL DEFAULT '{}',
  deployment_id bigint NOT NULL REFERENCES deployments (id),
  deployed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (environment_id, integration, name),
  FOREIGN KEY (environment_id, integration) REFERENCES integrations (environment_id, unique_key) ON DELETE CASCADE
);

CREATE INDEX bundles_in_use_idx ON sync_definitions (bundle_hash);

-- The bundle a run executed: it starts on the newest deployment and finishes on that one.
ALTER TABLE runs ADD COLUMN bundle_hash text;
