-- The source file a sync was deployed from (its TypeScript, before bundling), as Nango's
-- GET /integrations/{key}/functions/{name}/code returns it. NULL for versions deployed before.
ALTER TABLE sync_definitions ADD COLUMN source text;
