import { Type } from 'typebox'

import { ConnectionId, ProviderConfigKey, Strict, SyncName, VariantName } from '../http/schemas.ts'
import { FREQUENCY_PATTERN } from '../scheduler/frequency.ts'

/** Request and response shapes of the /sync routes (Nango's, packages/server/lib/controllers/sync). */

const SYNC_ITEM = '`name`, `name::variant`, or `{name, variant}`; a name alone means the `base` variant.'
const SyncItem = Type.Union(
  [Type.String({ maxLength: 512 }), Strict({ name: Type.String(), variant: Type.String() })],
  { description: SYNC_ITEM },
)

export const TriggerBody = Strict({
  syncs: Type.Array(SyncItem, { description: 'Empty for every sync.' }),
  provider_config_key: Type.Optional(Type.String()),
  connection_id: Type.Optional(
    Type.String({
      description: 'Without it (here or in the header), the syncs of every connection of the integration.',
    }),
  ),
  opts: Type.Optional(
    Type.Object({
      reset: Type.Optional(
        Type.Boolean({
          description: 'Forget the checkpoint and the last sync date; the run starts from scratch.',
        }),
      ),
      emptyCache: Type.Optional(
        Type.Boolean({ description: "With reset, also delete the sync's records when the run starts." }),
      ),
    }),
  ),
  sync_mode: Type.Optional(
    Type.Union(
      [
        Type.Literal('incremental'),
        Type.Literal('full_refresh'),
        Type.Literal('full_refresh_and_clear_cache'),
      ],
      {
        deprecated: true,
        description: '`full_refresh` is `opts.reset`; `full_refresh_and_clear_cache` adds `emptyCache`.',
      },
    ),
  ),
  full_resync: Type.Optional(Type.Boolean({ deprecated: true, description: '`true` is `opts.reset`.' })),
})

/** Optional headers some clients send instead of body fields (trigger only). */
export const TriggerHeaders = Type.Object({
  'provider-config-key': Type.Optional(
    Type.String({
      ...ProviderConfigKey,
      description: 'Used when the body has no (or an empty) provider_config_key.',
    }),
  ),
  'connection-id': Type.Optional(
    Type.String({ ...ConnectionId, description: 'Used when the body has no (or an empty) connection_id.' }),
  ),
})

export const PauseStartBody = Strict({
  syncs: Type.Array(
    Type.Union([Type.String(), Strict({ name: Type.String(), variant: Type.String() })], {
      description: SYNC_ITEM,
    }),
    { maxItems: 256, description: 'Empty for every sync.' },
  ),
  provider_config_key: ProviderConfigKey,
  connection_id: Type.Optional(
    Type.String({
      ...ConnectionId,
      description: 'Without it, the syncs of every connection of the integration.',
    }),
  ),
})

export const StatusQuery = Strict({
  syncs: Type.String({ description: '`*` for all, or a comma-separated list of `name` or `name::variant`.' }),
  provider_config_key: ProviderConfigKey,
  connection_id: Type.Optional(ConnectionId),
})

const Counts = Type.Object({ added: Type.Integer(), updated: Type.Integer(), deleted: Type.Integer() })

export const SyncStatus = Type.Object({
  id: Type.String(),
  connection_id: Type.String(),
  type: Type.Union([Type.Literal('INITIAL'), Type.Literal('INCREMENTAL')], { deprecated: true }),
  finishedAt: Type.Optional(
    Type.String({ description: 'When the latest run ended; absent while it runs, or before any run.' }),
  ),
  nextScheduledSyncAt: Type.Union([Type.String(), Type.Null()], {
    description: 'Null unless the schedule is started.',
  }),
  name: Type.String(),
  variant: Type.String(),
  status: Type.Union([
    Type.Literal('RUNNING'),
    Type.Literal('PAUSED'),
    Type.Literal('STOPPED'),
    Type.Literal('SUCCESS'),
    Type.Literal('ERROR'),
  ]),
  frequency: Type.Union([Type.String(), Type.Null()], {
    description: "The connection's override, else the definition's.",
  }),
  latestResult: Type.Optional(
    Type.Record(Type.String(), Counts, {
      description: "The latest run's changes per model; absent before any run.",
    }),
  ),
  latestExecutionStatus: Type.Optional(
    Type.Union([Type.Literal('RUNNING'), Type.Literal('SUCCESS'), Type.Literal('STOPPED')]),
  ),
  recordCount: Type.Record(Type.String(), Type.Integer(), {
    description: 'Live records of this variant, per model.',
  }),
  checkpoint: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
})

export const FrequencyBody = Strict({
  sync_name: SyncName,
  sync_variant: Type.Optional(Type.String({ ...SyncName, description: 'Defaults to `base`.' })),
  provider_config_key: ProviderConfigKey,
  connection_id: ConnectionId,
  frequency: Type.Union([Type.String({ pattern: FREQUENCY_PATTERN }), Type.Null()], {
    description:
      '`every 30 minutes`, `every hour`, `2h`, `1d`...; from 30 seconds to 365 days. Null goes back to ' +
      "the definition's frequency.",
  }),
})

export const VariantParams = Strict({ name: SyncName, variant: VariantName })

export const VariantBody = Strict({ provider_config_key: ProviderConfigKey, connection_id: ConnectionId })
