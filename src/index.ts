/**
 * What sync definition files import: `import { createSync } from 'syncstore'` (resolved to this
 * file from anywhere on disk when syncstore loads them). createSync only adds types; a plain
 * object default export works the same.
 */

import type { ActionError } from './runtime/nango-module.ts'

/** Nango's ActionError: throwing it fails the run with `payload.message`. */
export { ActionError } from './runtime/nango-module.ts'

export interface ProxyConfiguration {
  endpoint: string
  params?: Record<string, string | number | boolean | undefined>
  headers?: Record<string, string>
  data?: unknown
  /** Attempts after the first on 429, 5xx (or the provider's retry codes) and network errors; default 0, as Nango */
  retries?: number
  baseUrlOverride?: string
  /** How the body is read: JSON when it is JSON (default), 'text', or 'arraybuffer' (a Uint8Array) */
  responseType?: 'json' | 'text' | 'arraybuffer'
}

/** How nango.paginate pages (Nango's shape); merged over integration.json's `pagination`. */
import type { Pagination } from './runtime/protocol.ts'

export type { Pagination }

/** What a failed request throws (as Nango's): the answer's status, body and headers. */
export interface ProxyError extends Error {
  status: number
  response: ProxyResponse
}

export interface ProxyResponse<T = unknown> {
  status: number
  headers: Record<string, string>
  data: T
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json }

/** A record saved by a sync: an `id` (string or number) and any JSON fields. */
export interface SyncRecord {
  id: string | number
  [field: string]: unknown
}

/** The `nango` object a sync function receives (Nango's sync SDK, as syncstore implements it). */
export interface NangoSync<Models extends string = string> {
  readonly connectionId: string
  readonly providerConfigKey: string
  readonly variant: string
  readonly syncName: string
  /** Start of the last successful run; undefined on the first run and after a reset */
  readonly lastSyncDate: Date | undefined
  /** The integration's provider */
  readonly provider: string
  readonly ActionError: typeof ActionError
  batchSave<T extends SyncRecord>(records: T[], model: Models): Promise<boolean>
  batchUpdate<T extends SyncRecord>(
    records: Partial<T>[] & { id: string | number }[],
    model: Models,
  ): Promise<boolean>
  batchDelete<T extends SyncRecord>(records: Pick<T, 'id'>[], model: Models): Promise<boolean>
  trackDeletesStart(model: Models): Promise<void>
  trackDeletesEnd(model: Models): Promise<{ deletedKeys: string[] }>
  getCheckpoint<C extends Record<string, string | number | boolean>>(): Promise<C | null>
  saveCheckpoint(checkpoint: Record<string, string | number | boolean | Date>): Promise<void>
  clearCheckpoint(): Promise<void>
  getMetadata<M = Record<string, Json>>(): Promise<M>
  /** Replaces the connection's metadata */
  setMetadata(metadata: Record<string, unknown>): Promise<void>
  /** Merges into the connection's metadata (top-level keys) */
  updateMetadata(metadata: Record<string, unknown>): Promise<void>
  /** OAuth2: the access token; OAuth1: { oAuthToken, oAuthTokenSecret }; otherwise the credentials */
  getToken(): Promise<unknown>
  getIntegration(): Promise<{ unique_key: string; provider: string; display_name: string }>
  /** Records earlier runs saved, in the order GET /records returns them */
  listRecords<T = SyncRecord>(model: Models, options?: { cursor?: string }): AsyncGenerator<T>
  getRecordsByIds<K extends string | number, T = SyncRecord>(ids: K[], model: Models): Promise<Map<K, T>>
  setMergingStrategy(
    merging: { strategy: 'ignore_if_modified_after' | 'override' },
    model: Models,
  ): Promise<void>
  zodValidateInput<T>(args: {
    zodSchema: { safeParse(input: unknown): { success: boolean; data?: T } }
    input: unknown
  }): Promise<{ success: true; data: T }>
  getConnection(): Promise<Record<string, unknown>>
  getEnvironmentVariables(): Promise<{ name: string; value: string }[]>
  log(
    message: unknown,
    payload?: unknown,
    options?: { level?: 'debug' | 'info' | 'warn' | 'error' },
  ): Promise<void>
  proxy<T = unknown>(config: ProxyConfiguration & { method?: string }): Promise<ProxyResponse<T>>
  get<T = unknown>(config: ProxyConfiguration): Promise<ProxyResponse<T>>
  post<T = unknown>(config: ProxyConfiguration): Promise<ProxyResponse<T>>
  put<T = unknown>(config: ProxyConfiguration): Promise<ProxyResponse<T>>
  patch<T = unknown>(config: ProxyConfiguration): Promise<ProxyResponse<T>>
  delete<T = unknown>(config: ProxyConfiguration): Promise<ProxyResponse<T>>
  /** Pages of items: the call's `paginate` merged over the integration's default */
  paginate<T = unknown>(
    config: ProxyConfiguration & { method?: string; paginate?: Partial<Pagination> },
  ): AsyncGenerator<T[], undefined, void>
}

export interface SyncConfig<Models extends Record<string, object>> {
  description: string
  /** "every hour", "every 30 minutes", "2h"... from 30 seconds to 365 days */
  frequency: string
  /** Model name -> JSON Schema of its records (a TypeBox Type.Object is one); saved records are validated */
  models: Models
  /** false: the sync is created paused (default true) */
  autoStart?: boolean
  /** "incremental": lastSyncDate is set on runs after the first successful one */
  syncType?: 'full' | 'incremental'
  /** Deprecated (as in Nango): delete records not saved by each run */
  trackDeletes?: boolean
  exec(nango: NangoSync<Extract<keyof Models, string>>): Promise<void>
}

export function createSync<Models extends Record<string, object>>(
  config: SyncConfig<Models>,
): SyncConfig<Models> {
  return config
}
