import { Type } from 'typebox'

import { ConnectionId, ProviderConfigKey, Strict, SyncName, VariantName } from '../http/schemas.ts'
import { FREQUENCY_PATTERN } from '../scheduler/frequency.ts'

/** Request and response shapes of the /sync routes (Nango's, packages/server/lib/controllers/sync). */

const SyncItem = Type.Union([
  Type.String({ maxLength: 512 }),
  Strict({ name: Type.String(), variant: Type.String() }),
])

export const TriggerBody = Strict({
  syncs: Type.Array(SyncItem),
  provider_config_key: Type.Optional(Type.String()),
  connection_id: Type.Optional(Type.String()),
  opts: Type.Optional(
    Type.Object({ reset: Type.Optional(Type.Boolean()), emptyCache: Type.Optional(Type.Boolean()) }),
  ),
  sync_mode: Type.Optional(
    Type.Union([
      Type.Literal('incremental'),
      Type.Literal('full_refresh'),
      Type.Literal('full_refresh_and_clear_cache'),
    ]),
  ),
  full_resync: Type.Optional(Type.Boolean()),
})

/** Optional headers some clients send instead of body fields (trigger only). */
export const TriggerHeaders = Type.Object({
  'provider-config-key': Type.Optional(ProviderConfigKey),
  'connection-id': Type.Optional(ConnectionId),
})

export const PauseStartBody = Strict({
  syncs: Type.Array(Type.Union([Type.String(), Strict({ name: Type.String(), variant: Type.String() })]), {
    maxItems: 256,
  }),
  provider_config_key: ProviderConfigKey,
  connection_id: Type.Optional(ConnectionId),
})

export const StatusQuery = Strict({
  syncs: Type.String(),
  provider_config_key: ProviderConfigKey,
  connection_id: Type.Optional(ConnectionId),
})

const Counts = Type.Object({ added: Type.Integer(), updated: Type.Integer(), deleted: Type.Integer() })

export const SyncStatus = Type.Object({
  id: Type.String(),
  connection_id: Type.String(),
  type: Type.Union([Type.Literal('INITIAL'), Type.Literal('INCREMENTAL')]),
  finishedAt: Type.Optional(Type.String()),
  nextScheduledSyncAt: Type.Union([Type.String(), Type.Null()]),
  name: Type.String(),
  variant: Type.String(),
  status: Type.Union([
    Type.Literal('RUNNING'),
    Type.Literal('PAUSED'),
    Type.Literal('STOPPED'),
    Type.Literal('SUCCESS'),
    Type.Literal('ERROR'),
  ]),
  frequency: Type.Union([Type.String(), Type.Null()]),
  latestResult: Type.Optional(Type.Record(Type.String(), Counts)),
  latestExecutionStatus: Type.Optional(
    Type.Union([Type.Literal('RUNNING'), Type.Literal('SUCCESS'), Type.Literal('STOPPED')]),
  ),
  recordCount: Type.Record(Type.String(), Type.Integer()),
  checkpoint: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
})

export const FrequencyBody = Strict({
  sync_name: SyncName,
  sync_variant: Type.Optional(SyncName),
  provider_config_key: ProviderConfigKey,
  connection_id: ConnectionId,
  frequency: Type.Union([Type.String({ pattern: FREQUENCY_PATTERN }), Type.Null()]),
})

export const VariantParams = Strict({ name: SyncName, variant: VariantName })

export const VariantBody = Strict({ provider_config_key: ProviderConfigKey, connection_id: ConnectionId })

export const IntegrationItem = Type.Object({
  unique_key: Type.String(),
  provider: Type.String(),
  display_name: Type.String(),
  logo: Type.String(),
  forward_webhooks: Type.Boolean(),
  created_at: Type.String(),
  updated_at: Type.String(),
  syncs: Type.Array(
    Type.Object({
      name: Type.String(),
      description: Type.String(),
      frequency: Type.String(),
      models: Type.Array(Type.String()),
      auto_start: Type.Boolean(),
      sync_type: Type.String(),
      track_deletes: Type.Boolean(),
    }),
  ),
})
