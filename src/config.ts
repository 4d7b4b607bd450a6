import path from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * Everything the process reads from its environment, parsed once. Modules receive this object;
 * they never read `process.env` themselves.
 */
export interface Config {
  readonly port: number
  readonly host: string
  readonly database: DatabaseTarget
  /**
   * Where sync definitions are read from: SYNCSTORE_INTEGRATIONS_DIR, or ./integrations; with the
   * embedded database and no SYNCSTORE_INTEGRATIONS_DIR, also the bundled example integration.
   */
  readonly integrationsDirs: readonly string[]
  /** The bundled example is loaded (and its demo connection created) */
  readonly exampleIntegrations: boolean
  /** How this server is reached from outside (links in responses) */
  readonly publicUrl: string
  /** NANGO_SECRET_KEY_<ENV>: full-scope keys for environment <env> (lower-cased). */
  readonly bootstrapKeys: readonly { readonly environment: string; readonly key: string }[]
  /** 32-byte AES-256-GCM key, or null when data is stored in plain text. */
  readonly encryptionKey: Buffer | null
  readonly logLevel: LogLevel
  /** A GET /records response never exceeds this many bytes (at least one record is returned). */
  readonly maxPageBytes: number
  readonly bodyLimitBytes: number
  /**
   * GET /records bodies held in memory at once by this process, being read from the database or
   * waiting for their clients to take them; a page that does not fit waits briefly, then is 503.
   */
  readonly pageMemoryBytes: number
  readonly http: {
    /** A socket on which no byte moves either way for this long is destroyed (also a send timeout). */
    readonly idleTimeoutMs: number
    /** A request's headers and body must have arrived within this long of its first byte. */
    readonly requestTimeoutMs: number
    /** A kept-alive socket waits this long for its next request. */
    readonly keepAliveTimeoutMs: number
  }
  readonly shutdownGraceMs: number
  readonly runs: {
    /** Sync runs executing at once on this instance */
    readonly concurrency: number
    /** Wall-clock limit of one run */
    readonly timeoutMs: number
    /** Heap limit of the worker running a sync function */
    readonly memoryMb: number
    readonly heartbeatIntervalMs: number
    /** A run whose heartbeat is older than this is expired and its sync rescheduled */
    readonly heartbeatTimeoutMs: number
    /** How often an idle worker looks for due schedules (triggers wake it at once) */
    readonly pollMs: number
  }
  readonly retention: {
    /** Prune payloads of records not modified for this many days; 0 turns it off. */
    readonly pruneAfterDays: number
    /** Delete all records of a dataset whose sync has not run for this many days; 0 turns it off. */
    readonly deleteAfterDays: number
    readonly intervalMs: number
  }
}

export type DatabaseTarget =
  | { readonly kind: 'postgres'; readonly url: string }
  | { readonly kind: 'embedded'; readonly dataDir: string }

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
  }
}

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i
const ENV_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/

type Env = Readonly<Record<string, string | undefined>>

/** Parses `env` (usually `process.env`) into a frozen Config, reporting every bad variable at once. */
export function loadConfig(env: Env, cwd: string = process.cwd()): Config {
  const problems: string[] = []
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name]
    if (raw === undefined || raw === '') return fallback
    const value = Number(raw)
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`)
      return fallback
    }
    return value
  }

  const port = int('PORT', 3003, 0, 65535)
  // Loopback unless told otherwise: a fresh `npm start` should not be reachable from the network.
  // The Docker image sets HOST=0.0.0.0.
  const host = env.HOST || '127.0.0.1'

  let database: DatabaseTarget
  const url = env.DATABASE_URL
  if (url) {
    if (!/^postgres(ql)?:\/\//.test(url)) {
      problems.push('DATABASE_URL must start with postgres:// or postgresql://')
    }
    database = { kind: 'postgres', url }
  } else {
    database = { kind: 'embedded', dataDir: path.resolve(cwd, env.SYNCSTORE_DATA_DIR || '.syncstore/data') }
  }

  const bootstrapKeys: { environment: string; key: string }[] = []
  for (const [name, value] of Object.entries(env)) {
    const match = /^NANGO_SECRET_KEY_(.+)$/.exec(name)
    if (!match?.[1] || value === undefined || value === '') continue
    const environment = match[1].toLowerCase()
    if (!ENV_NAME.test(environment)) {
      problems.push(`${name}: "${environment}" is not a valid environment name`)
    } else if (!UUID_V4.test(value)) {
      problems.push(`${name} must be a UUID v4, like the keys Nango issues`)
    } else {
      bootstrapKeys.push({ environment, key: value.toLowerCase() })
    }
  }

  let encryptionKey: Buffer | null = null
  if (env.SYNCSTORE_ENCRYPTION_KEY) {
    const decoded = Buffer.from(env.SYNCSTORE_ENCRYPTION_KEY, 'base64')
    if (decoded.length !== 32) {
      problems.push(
        'SYNCSTORE_ENCRYPTION_KEY must be 32 bytes, base64-encoded (try: openssl rand -base64 32)',
      )
    } else {
      encryptionKey = decoded
    }
  }

  const logLevel = (env.LOG_LEVEL || 'info') as LogLevel
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`)

  const explicitDir = env.SYNCSTORE_INTEGRATIONS_DIR
  const exampleIntegrations = !explicitDir && database.kind === 'embedded'
  const integrationsDirs = [
    ...(exampleIntegrations ? [fileURLToPath(new URL('../examples/integrations', import.meta.url))] : []),
    path.resolve(cwd, explicitDir || 'integrations'),
  ]
  const heartbeatIntervalMs = int('SYNCSTORE_HEARTBEAT_INTERVAL_MS', 10_000, 100, 600_000)

  const config: Config = {
    port,
    host,
    database,
    integrationsDirs,
    exampleIntegrations,
    publicUrl: (env.SYNCSTORE_PUBLIC_URL || `http://localhost:${port}`).replace(/\/+$/, ''),
    bootstrapKeys,
    encryptionKey,
    logLevel,
    // 10 MiB: Nango documents a per-response budget (its PR mentions 50 MiB) but ships it off;
    // 10 MiB keeps JSON.stringify-free splicing well under 100 ms on these machines.
    maxPageBytes: int('SYNCSTORE_MAX_PAGE_BYTES', 10 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    // Fastify's default; record payloads never arrive over HTTP, only metadata and small bodies.
    bodyLimitBytes: int('SYNCSTORE_BODY_LIMIT_BYTES', 1024 * 1024, 1024, 100 * 1024 * 1024),
    // 64 MiB: four full 10 MiB pages (a quarter is kept for small ones), or hundreds of ordinary
    // pages, at once. With 150 clients asking for 10 MiB pages and not reading, RSS grew 65-95 MB
    // (test/faults/slow-clients.test.ts); without this bound, by 1.1 GB.
    pageMemoryBytes: int('SYNCSTORE_PAGE_MEMORY_BYTES', 64 * 1024 * 1024, 1024 * 1024, 64 * 1024 ** 3),
    http: {
      // 30 s without a byte moving either way: longer than any request should take to answer (a
      // wait for a database connection ends at 10 s), and a reader that takes nothing for 30 s has
      // stopped; its page (up to 10 MiB) is freed with the socket.
      idleTimeoutMs: int('SYNCSTORE_IDLE_TIMEOUT_MS', 30_000, 1000, 3_600_000),
      // 30 s for headers and a body of at most SYNCSTORE_BODY_LIMIT_BYTES (1 MiB: 35 KB/s) is
      // ample for a real client and ends a slowloris request that trickles bytes to stay active.
      requestTimeoutMs: int('SYNCSTORE_REQUEST_TIMEOUT_MS', 30_000, 1000, 3_600_000),
      // Behind a proxy that keeps idle connections longer (an AWS ALB: 60 s), set this above it.
      keepAliveTimeoutMs: int('SYNCSTORE_KEEP_ALIVE_TIMEOUT_MS', 10_000, 1000, 3_600_000),
    },
    shutdownGraceMs: int('SYNCSTORE_SHUTDOWN_GRACE_MS', 10_000, 100, 600_000),
    runs: {
      concurrency: int('SYNCSTORE_RUN_CONCURRENCY', 4, 1, 256),
      timeoutMs: int('SYNCSTORE_RUN_TIMEOUT_MS', 3_600_000, 1000, 7 * 86_400_000),
      memoryMb: int('SYNCSTORE_RUN_MEMORY_MB', 512, 32, 65_536),
      heartbeatIntervalMs,
      // Several missed heartbeats before a run is declared dead: a busy event loop is not a crash.
      heartbeatTimeoutMs: int(
        'SYNCSTORE_HEARTBEAT_TIMEOUT_MS',
        Math.max(60_000, heartbeatIntervalMs * 3),
        300,
        3_600_000,
      ),
      pollMs: int('SYNCSTORE_POLL_INTERVAL_MS', 1000, 10, 600_000),
    },
    retention: {
      pruneAfterDays: int('SYNCSTORE_PRUNE_AFTER_DAYS', 30, 0, 36500),
      deleteAfterDays: int('SYNCSTORE_DELETE_AFTER_DAYS', 60, 0, 36500),
      intervalMs: int('SYNCSTORE_RETENTION_INTERVAL_MS', 60_000, 1000, 86_400_000),
    },
  }

  if (config.runs.heartbeatTimeoutMs <= config.runs.heartbeatIntervalMs) {
    problems.push('SYNCSTORE_HEARTBEAT_TIMEOUT_MS must be longer than SYNCSTORE_HEARTBEAT_INTERVAL_MS')
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return Object.freeze(config)
}
