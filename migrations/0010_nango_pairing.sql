-- Pairing with a Nango instance (SPEC 6.5): an environment takes its connections from Nango (auth
-- webhooks and a periodic reconcile against Nango's GET /connections) and runs their syncs here.

CREATE TABLE nango_pairings (
  environment_id integer PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
  -- Nango's API base URL, e.g. https://api.nango.dev or a self-hosted http://nango:3003
  url text NOT NULL,
  -- Sealed like a connection's credentials (src/crypto.ts: AES-256-GCM when
  -- SYNCSTORE_ENCRYPTION_KEY is set): the environment's secret key, and the webhook signing secret
  -- (NULL: webhooks are verified with the secret key, as @nangohq/node does).
  secret_key text NOT NULL,
  webhook_secret text,
  paired_at timestamptz NOT NULL DEFAULT now(),
  -- The reconcile is claimed (FOR UPDATE SKIP LOCKED) when due and not leased by another process.
  reconcile_due_at timestamptz NOT NULL DEFAULT now(),
  reconcile_lease_until timestamptz,
  -- The last finished reconcile: when, 'succeeded' or 'failed' (why), and what it did.
  last_reconcile_at timestamptz,
  last_reconcile_outcome text CHECK (last_reconcile_outcome IN ('succeeded', 'failed')),
  last_reconcile_error text,
  -- {"listed": n, "added": n, "deleted": n, "kept": n}
  last_reconcile_counts jsonb,
  -- The last verified webhook: when, and what it was (e.g. "auth creation: created github/u1").
  last_webhook_at timestamptz,
  last_webhook_summary text
);

CREATE INDEX nango_pairings_due_idx ON nango_pairings (reconcile_due_at);

-- A connection deleted in the paired Nango: its syncs are stopped (schedules DELETED) and stay
-- stopped through later deployments; its records stay readable until retention removes them. A new
-- creation webhook or reconcile for the same connection brings it back.
ALTER TABLE connections ADD COLUMN deleted_upstream_at timestamptz;
