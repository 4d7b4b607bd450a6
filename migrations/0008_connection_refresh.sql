-- OAuth2 refresh (SPEC 6.4): what a connection records about its token's life, in plain columns so
-- that expiring tokens are found, and a failed refresh is shown, without decrypting credentials.

ALTER TABLE connections
  -- When the stored access token expires (the credentials' expires_at); NULL when it never does or
  -- is not known.
  ADD COLUMN credentials_expires_at timestamptz,
  ADD COLUMN last_refresh_success timestamptz,
  -- The last failed refresh: when, what went wrong, and how many failed in a row. A successful
  -- refresh (or a new import) clears all three.
  ADD COLUMN last_refresh_failure timestamptz,
  ADD COLUMN refresh_error text,
  ADD COLUMN refresh_attempts integer NOT NULL DEFAULT 0 CHECK (refresh_attempts >= 0);

-- Credentials stored in plain JSON (no SYNCSTORE_ENCRYPTION_KEY) tell their expiry now; encrypted
-- ones are filled in at their next import or refresh.
UPDATE connections
SET credentials_expires_at = (credentials::jsonb ->> 'expires_at')::timestamptz
WHERE credentials IS NOT NULL
  AND credentials NOT LIKE 'enc:v1:%'
  AND credentials::jsonb ->> 'expires_at' ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$';

CREATE INDEX connections_expiring_idx ON connections (credentials_expires_at)
  WHERE credentials_expires_at IS NOT NULL;
