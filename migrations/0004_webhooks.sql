-- Sync webhooks: where each environment wants them, and an outbox that survives restarts.

CREATE TABLE webhook_settings (
  environment_id integer PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
  url text NOT NULL,
  -- The signing secret (sealed): X-Nango-Hmac-Sha256 = HMAC-SHA256(secret, body).
  secret text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Delivered at least once: a delivery is claimed by pushing next_attempt_at past the send's
-- timeout, so if the sender dies the row comes due again and another instance retries it.
CREATE TABLE webhook_deliveries (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  environment_id integer NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
  run_id bigint,
  url text NOT NULL,
  body text NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_status integer,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_environment_idx ON webhook_deliveries (environment_id, id DESC);
