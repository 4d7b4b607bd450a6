/**
 * What sync definition files import: `import { createSync } from 'syncstore'` (resolved to this
 * file from anywhere on disk when syncstore loads them). createSync only adds types; a plain
 * object default export works the same.
 */

export interface ProxyConfiguration {
  endpoint: string
  params?: Record<string, string | number | boolean | undefined>
  headers?: Record<string, string>
  data?: unknown
  /** Attempts after the first on 429, 5xx and network errors (default 3 for GET and HEAD, 0 otherwise) */
  retries?: number
  baseUrlOverride?: string
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
