-- Integrations as data (SPEC 6.4): created, changed and deleted through Nango's integrations API
-- (POST/PATCH/DELETE /integrations) and `syncstore integrations`, beside those a deployment names.

ALTER TABLE integrations
  -- The integration's own app, as Nango's integration credentials hold it, sealed like a
  -- connection's credentials (src/crypto.ts: AES-256-GCM when SYNCSTORE_ENCRYPTION_KEY is set):
  -- {"type": "OAUTH1"|"OAUTH2"|"TBA", "client_id", "client_secret", "scopes": "a,b", "webhook_secret"}
  -- {"type": "APP", "app_id", "app_link", "private_key"}
  -- {"type": "CUSTOM", "client_id", "client_secret", "app_id", "app_link", "private_key"}
  -- NULL when it has none (an API-key provider, or one only a deployment named).
  ADD COLUMN credentials text,
  -- Nango's forward_webhooks: shown and stored; true unless set.
  ADD COLUMN forward_webhooks boolean NOT NULL DEFAULT true,
  -- Who made it: 'deploy' (a deployed folder named it) or 'api' (the API or the CLI). A deployment
  -- prunes only what it made, never an integration created through the API.
  ADD COLUMN created_by text NOT NULL DEFAULT 'deploy' CHECK (created_by IN ('deploy', 'api'));
