import type { ColumnType, Generated, Kysely, Transaction } from 'kysely'

/**
 * Table types for Kysely. Timestamps are read as Date and written as Date or SQL expressions.
 * "sealed" columns hold text produced by src/crypto.ts (plain JSON or an AES-256-GCM envelope).
 */

type CreatedAt = ColumnType<Date, Date | undefined, never>
type UpdatedAt = ColumnType<Date, Date | undefined, Date>
/** jsonb: read as parsed JSON, written as a JSON string. */
type Jsonb<T> = ColumnType<T, string, string>

export interface EnvironmentsTable {
  id: Generated<number>
  name: string
  created_at: CreatedAt
}

export interface ApiKeysTable {
  id: Generated<string>
  environment_id: number
  key_hash: string
  key_prefix: string
  scopes: string[]
  created_at: CreatedAt
  last_used_at: Date | null
  revoked_at: Date | null
}

export interface EnvironmentVariablesTable {
  environment_id: number
  name: string
  /** sealed JSON string */
  value: string
  created_at: CreatedAt
  updated_at: UpdatedAt
}

export interface ConnectionsTable {
  id: Generated<number>
  environment_id: number
  provider_config_key: string
  connection_id: string
  /** sealed JSON object */
  metadata: string | null
  /** sealed JSON object */
  credentials: string | null
  connection_config: Jsonb<Record<string, unknown>>
  tags: Jsonb<Record<string, string>>
  end_user: Jsonb<Record<string, unknown> | null>
  created_at: CreatedAt
  updated_at: UpdatedAt
  /** when the stored access token expires (plain, so expiring ones are found without decrypting) */
  credentials_expires_at: Date | null
  last_refresh_success: Date | null
  last_refresh_failure: Date | null
  refresh_error: string | null
  refresh_attempts: Generated<number>
  /** set when the paired Nango deleted it: its syncs stay stopped (migration 0010) */
  deleted_upstream_at: ColumnType<Date | null, Date | null | undefined, Date | null>
}

export interface DatasetsTable {
  connection_pk: number
  model: string
  variant: string
  record_count: Generated<number>
  max_size_bytes: Generated<number>
  last_write_at: Date | null
  last_sync_at: Date | null
  track_deletes_generation: number | null
  retention_checked_at: Date | null
  /** Every record at or before this cursor position is pruned (migrations/0012) */
  pruned_through_at: ColumnType<string | null, string | null | undefined, string | null>
  pruned_through_id: number | null
  /** Moved by every update of the row (migrations/0015) */
  change_mark: Generated<number>
  created_at: CreatedAt
}

/** Timestamps of records are read as text (`::text`) where microseconds matter. */
export interface RecordsTable {
  connection_pk: number
  model: string
  variant: string
  id: Generated<number>
  external_id: string
  payload: string | null
  payload_hash: string
  size_bytes: number
  first_seen_at: Date | string
  last_modified_at: Date | string
  deleted_at: Date | string | null
  pruned_at: Date | string | null
}

export interface RecordsSeenTable {
  connection_pk: number
  model: string
  variant: string
  generation: number
  batch: Generated<number>
  external_ids: string[]
}

export interface SyncsTable {
  id: Generated<string>
  connection_pk: number
  name: string
  variant: string
  frequency: string | null
  last_sync_date: Date | null
  created_at: CreatedAt
}

export interface SchedulesTable {
  sync_id: string
  connection_pk: number
  state: 'STARTED' | 'PAUSED' | 'DELETED'
  frequency_ms: number
  starts_at: Date
  next_due_at: Date
  updated_at: UpdatedAt
}

export interface RunsTable {
  id: Generated<number>
  sync_id: string
  connection_pk: number
  state: 'CREATED' | 'STARTED' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'EXPIRED'
  reason: 'schedule' | 'trigger' | 'start'
  reset: Generated<boolean>
  empty_cache: Generated<boolean>
  type: 'full' | 'incremental' | null
  created_at: CreatedAt
  due_at: Generated<Date>
  started_at: Date | null
  heartbeat_at: Date | null
  ended_at: Date | null
  owner: string | null
  lease: string | null
  result: Jsonb<Record<string, { added: number; updated: number; deleted: number }> | null>
  error: string | null
  /** the bundle it executed (set when it starts) */
  bundle_hash: string | null
}

export interface CheckpointsTable {
  sync_id: string
  /** sealed JSON object */
  checkpoint: string
  version: number
  updated_at: UpdatedAt
}

export interface RunLogsTable {
  run_id: number
  seq: number
  level: 'debug' | 'info' | 'warn' | 'error'
  message: string
  payload: Jsonb<unknown>
  created_at: CreatedAt
}

export interface WebhookSettingsTable {
  environment_id: number
  url: string
  /** sealed */
  secret: string
  updated_at: UpdatedAt
}

export interface WebhookDeliveriesTable {
  id: Generated<number>
  environment_id: number
  run_id: number | null
  url: string
  body: string
  state: Generated<'pending' | 'delivered' | 'failed'>
  attempts: Generated<number>
  next_attempt_at: Generated<Date>
  last_status: number | null
  last_error: string | null
  created_at: CreatedAt
  delivered_at: Date | null
}

export interface IntegrationsTable {
  environment_id: number
  unique_key: string
  provider: string
  display_name: string
  config: Jsonb<Record<string, unknown>>
  /** sealed JSON object: the integration's own app (client id and secret, scopes...) */
  credentials: ColumnType<string | null, string | null | undefined, string | null>
  forward_webhooks: Generated<boolean>
  created_by: Generated<'deploy' | 'api'>
  created_at: CreatedAt
  updated_at: UpdatedAt
}

export interface BundlesTable {
  /** sha256 hex of `code` */
  hash: string
  code: string
  created_at: CreatedAt
}

export interface DeploymentsTable {
  /** bigint: read as a string by pg, a number by the embedded database */
  id: Generated<string | number>
  environment_id: number
  deployed_by: string
  source: string
  summary: Jsonb<{
    integrations: string[]
    added: string[]
    changed: string[]
    removed: string[]
    refused: { file: string; reason: string }[]
  }>
  created_at: CreatedAt
}

export interface SyncDefinitionsTable {
  id: Generated<string | number>
  environment_id: number
  integration: string
  name: string
  bundle_hash: string
  file: string
  description: string
  frequency: string
  /** bigint */
  frequency_ms: ColumnType<string | number, number, number>
  auto_start: boolean
  sync_type: 'full' | 'incremental'
  track_deletes: boolean
  models: Jsonb<Record<string, object>>
  extra: Jsonb<Record<string, unknown>>
  /** the deployed file's source, before bundling; null for versions deployed before 0009 */
  source: ColumnType<string | null, string | null | undefined, string | null>
  deployment_id: ColumnType<string | number, string | number, string | number>
  deployed_at: ColumnType<Date, Date | undefined, Date>
}

export interface InstanceMarkersTable {
  name: string
  created_at: CreatedAt
}

export interface Database {
  instance_markers: InstanceMarkersTable
  environments: EnvironmentsTable
  api_keys: ApiKeysTable
  environment_variables: EnvironmentVariablesTable
  connections: ConnectionsTable
  datasets: DatasetsTable
  records: RecordsTable
  records_seen: RecordsSeenTable
  syncs: SyncsTable
  schedules: SchedulesTable
  runs: RunsTable
  checkpoints: CheckpointsTable
  run_logs: RunLogsTable
  webhook_settings: WebhookSettingsTable
  webhook_deliveries: WebhookDeliveriesTable
  integrations: IntegrationsTable
  bundles: BundlesTable
  deployments: DeploymentsTable
  sync_definitions: SyncDefinitionsTable
  nango_pairings: NangoPairingsTable
}

/** An environment paired with a Nango instance (SPEC 6.5, migration 0010). */
export interface NangoPairingsTable {
  environment_id: number
  url: string
  /** sealed JSON string */
  secret_key: string
  /** sealed JSON string */
  webhook_secret: string | null
  paired_at: CreatedAt
  reconcile_due_at: ColumnType<Date, Date | undefined, Date>
  reconcile_lease_until: Date | null
  last_reconcile_at: Date | null
  last_reconcile_outcome: 'succeeded' | 'failed' | null
  last_reconcile_error: string | null
  last_reconcile_counts: ColumnType<Record<string, number> | null, string | undefined, string>
  last_webhook_at: Date | null
  last_webhook_summary: string | null
}

/** What stores take first: the pool or a transaction the caller owns. */
export type Queryable = Kysely<Database> | Transaction<Database>
