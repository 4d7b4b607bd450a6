-- Tenancy, API keys, environment variables and connections.
-- Every row belongs to one environment; deleting an environment deletes everything in it.

CREATE TABLE environments (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO environments (name) VALUES ('dev'), ('prod');

-- Secret keys are UUID v4 strings shown once; only their SHA-256 (hex) is stored, and looked up.
CREATE TABLE api_keys (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  environment_id integer NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
  key_hash text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
  -- The first 8 characters of the key, so `keys list` can tell keys apart without the secret.
  key_prefix text NOT NULL,
  scopes text[] NOT NULL CHECK (cardinality(scopes) > 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);

CREATE INDEX api_keys_environment_idx ON api_keys (environment_id);

-- `value` is sealed: a JSON string in plain text, or an AES-256-GCM envelope (see src/crypto.ts).
CREATE TABLE environment_variables (
  environment_id integer NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  value text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (environment_id, name)
);

-- metadata and credentials are sealed JSON objects (they may hold secrets and are encrypted at rest
-- when a key is configured); connection_config, tags and end_user stay jsonb so they can be filtered.
CREATE TABLE connections (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  environment_id integer NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
  provider_config_key text NOT NULL,
  connection_id text NOT NULL,
  metadata text,
  credentials text,
  connection_config jsonb NOT NULL DEFAULT '{}',
  tags jsonb NOT NULL DEFAULT '{}',
  end_user jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (environment_id, provider_config_key, connection_id)
);

CREATE INDEX connections_list_idx ON connections (environment_id, created_at DESC, id DESC);

-- One-off facts about this installation, e.g. that the first dev key has been issued.
CREATE TABLE instance_markers (
  name text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);
