import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { Ajv, type ErrorObject } from 'ajv'
import { type Static, type TSchema, Type } from 'typebox'

import { PACKAGE_ROOT } from './paths.ts'

/**
 * Everything the process reads from its environment, parsed once. Modules receive this object;
 * they never read `process.env` themselves.
 */
export interface Config {
  readonly port: number
  readonly host: string
  /**
   * SYNCSTORE_METRICS_PORT: GET /metrics (Prometheus text format) on a listener of its own, on
   * HOST; null (unset): no metrics are kept and nothing listens.
   */
  readonly metricsPort: number | null
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
  /**
   * SYNCSTORE_PROVIDERS_FILE: providers in Nango's providers.yaml format, over the built-in
   * catalogue (src/providers/); read once at start.
   */
  readonly providersFile: string | null
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
  /** GET /records pages read ahead for readers that page with next_cursor (0: off). */
  readonly readAheadPages: number
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
    /** A saved record that fails its model's schema: saved and logged (warn), refused (strict), not checked (off) */
    readonly recordValidation: 'warn' | 'strict' | 'off'
  }
  readonly retention: {
    /** Prune payloads of records not modified for this many days; 0 turns it off. */
    readonly pruneAfterDays: number
    /** Delete all records of a dataset whose sync has not run for this many days; 0 turns it off. */
    readonly deleteAfterDays: number
    readonly intervalMs: number
  }
  /** A paired environment's connections are reconciled with its Nango this often (SPEC 6.5). */
  readonly nango: { readonly reconcileMs: number }
}

export type DatabaseTarget =
  | { readonly kind: 'postgres'; readonly url: string }
  | { readonly kind: 'embedded'; readonly dataDir: string }

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
const RECORD_VALIDATION = ['warn', 'strict', 'off'] as const

const BOOTSTRAP_PREFIX = 'NANGO_SECRET_KEY_'

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
  }
}

const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000

/** An integer variable: its range, and the value it takes when unset. */
const integer = (fallback: number, minimum: number, maximum: number) =>
  Type.Integer({ minimum, maximum, default: fallback })

/** A variable checked by pattern, with what to tell the operator when it does not match. */
const matching = (pattern: string, problem: string) => Type.String({ pattern, problem })

/**
 * The variables read, their rules and their defaults (unset and empty are the same). What a schema
 * cannot say is checked in loadConfig: environment names taken from variable names, the decoded
 * length of the encryption key, and one variable measured against another.
 */
const Env = Type.Object(
  {
    PORT: integer(3003, 0, 65535),
    // Loopback unless told otherwise: a fresh `npm start` should not be reachable from the network.
    // The Docker image sets HOST=0.0.0.0.
    HOST: Type.String({ default: '127.0.0.1' }),
    // Unset: no metrics listener. A port of its own rather than an API scope: metrics describe the
    // instance (every environment at once), while a key belongs to one environment.
    SYNCSTORE_METRICS_PORT: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
    DATABASE_URL: Type.Optional(
      matching('^postgres(ql)?://', 'must start with postgres:// or postgresql://'),
    ),
    SYNCSTORE_DATA_DIR: Type.String({ default: '.syncstore/data' }),
    SYNCSTORE_INTEGRATIONS_DIR: Type.Optional(Type.String()),
    SYNCSTORE_PUBLIC_URL: Type.Optional(Type.String()),
    SYNCSTORE_PROVIDERS_FILE: Type.Optional(Type.String({ minLength: 1 })),
    SYNCSTORE_ENCRYPTION_KEY: Type.Optional(Type.String()),
    LOG_LEVEL: Type.Enum(LOG_LEVELS, { default: 'info', problem: `must be one of ${LOG_LEVELS.join(', ')}` }),
    // 10 MiB: Nango documents a per-response budget (its PR mentions 50 MiB) but ships it off;
    // 10 MiB keeps JSON.stringify-free splicing well under 100 ms on these machines.
    SYNCSTORE_MAX_PAGE_BYTES: integer(10 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    // Fastify's default; record payloads never arrive over HTTP, only metadata and small bodies.
    SYNCSTORE_BODY_LIMIT_BYTES: integer(1024 * 1024, 1024, 100 * 1024 * 1024),
    // 64 MiB: four full 10 MiB pages (a quarter is kept for small ones), or hundreds of ordinary
    // pages, at once. With 150 clients asking for 10 MiB pages and not reading, RSS grew 65-95 MB
    // (test/faults/slow-clients.test.ts); without this bound, by 1.1 GB.
    SYNCSTORE_PAGE_MEMORY_BYTES: integer(64 * 1024 * 1024, 1024 * 1024, 64 * 1024 ** 3),
    // 32 readers paging in order at once get their next page read ahead; held pages also count
    // against SYNCSTORE_PAGE_MEMORY_BYTES and are dropped after 5 s.
    SYNCSTORE_READ_AHEAD_PAGES: integer(32, 0, 10_000),
    // 30 s without a byte moving either way: longer than any request should take to answer (a
    // wait for a database connection ends at 10 s), and a reader that takes nothing for 30 s has
    // stopped; its page (up to 10 MiB) is freed with the socket.
    SYNCSTORE_IDLE_TIMEOUT_MS: integer(30_000, 1000, 3_600_000),
    // 30 s for headers and a body of at most SYNCSTORE_BODY_LIMIT_BYTES (1 MiB: 35 KB/s) is
    // ample for a real client and ends a slowloris request that trickles bytes to stay active.
    SYNCSTORE_REQUEST_TIMEOUT_MS: integer(30_000, 1000, 3_600_000),
    // Behind a proxy that keeps idle connections longer (an AWS ALB: 60 s), set this above it.
    SYNCSTORE_KEEP_ALIVE_TIMEOUT_MS: integer(10_000, 1000, 3_600_000),
    SYNCSTORE_SHUTDOWN_GRACE_MS: integer(10_000, 100, 600_000),
    SYNCSTORE_RUN_CONCURRENCY: integer(4, 1, 256),
    SYNCSTORE_RUN_TIMEOUT_MS: integer(3_600_000, 1000, 7 * 86_400_000),
    SYNCSTORE_RUN_MEMORY_MB: integer(512, 32, 65_536),
    SYNCSTORE_HEARTBEAT_INTERVAL_MS: integer(DEFAULT_HEARTBEAT_INTERVAL_MS, 100, 600_000),
    // Unset: a multiple of the interval (loadConfig).
    SYNCSTORE_HEARTBEAT_TIMEOUT_MS: Type.Optional(Type.Integer({ minimum: 300, maximum: 3_600_000 })),
    SYNCSTORE_POLL_INTERVAL_MS: integer(1000, 10, 600_000),
    // warn: as Nango's production runner, which saves a record that fails its model (only
    // `nango dryrun --validation` refuses it), so a migrated sync keeps working.
    SYNCSTORE_RECORD_VALIDATION: Type.Enum(RECORD_VALIDATION, {
      default: 'warn',
      problem: `must be one of ${RECORD_VALIDATION.join(', ')}`,
    }),
    SYNCSTORE_PRUNE_AFTER_DAYS: integer(30, 0, 36500),
    SYNCSTORE_DELETE_AFTER_DAYS: integer(60, 0, 36500),
    SYNCSTORE_RETENTION_INTERVAL_MS: integer(60_000, 1000, 86_400_000),
    // 5 minutes: webhooks carry changes at once; the reconcile only repairs a lost one, and each pass
    // lists every connection of the paired Nango.
    SYNCSTORE_NANGO_RECONCILE_MS: integer(300_000, 1000, 86_400_000),
  },
  {
    // NANGO_SECRET_KEY_<ENV>: a full-scope key for environment <env>.
    patternProperties: {
      [`^${BOOTSTRAP_PREFIX}.`]: matching(
        '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$',
        'must be a UUID v4, like the keys Nango issues',
      ),
    },
  },
)

// Scalars arrive as text and are coerced; defaults fill what is unset. `problem` is an annotation.
const validateEnv = new Ajv({
  coerceTypes: true,
  useDefaults: true,
  allErrors: true,
  verbose: true,
  keywords: ['problem'],
}).compile<Static<typeof Env>>(Env)

const ENV_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/

type RawEnv = Readonly<Record<string, string | undefined>>

/** Parses `env` (usually `process.env`) into a frozen Config, reporting every bad variable at once. */
export function loadConfig(rawEnv: RawEnv, cwd: string = process.cwd()): Config {
  const given = Object.fromEntries(
    Object.entries(rawEnv).filter(
      (entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== '',
    ),
  )
  /** One problem per variable, the first found. */
  const problems = new Map<string, string>()

  const bootstrapKeys: { environment: string; key: string }[] = []
  for (const name of Object.keys(given)) {
    if (!name.startsWith(BOOTSTRAP_PREFIX) || name === BOOTSTRAP_PREFIX) continue
    const environment = name.slice(BOOTSTRAP_PREFIX.length).toLowerCase()
    if (ENV_NAME.test(environment)) bootstrapKeys.push({ environment, key: given[name]!.toLowerCase() })
    else problems.set(name, `${name}: "${environment}" is not a valid environment name`)
  }

  const env = { ...given } as unknown as Static<typeof Env>
  if (!validateEnv(env)) {
    for (const error of validateEnv.errors ?? []) {
      const name = error.instancePath.split('/')[1]
      if (name && !problems.has(name)) problems.set(name, `${name} ${problemOf(error, given[name])}`)
    }
  }

  let encryptionKey: Buffer | null = null
  if (env.SYNCSTORE_ENCRYPTION_KEY !== undefined) {
    encryptionKey = Buffer.from(env.SYNCSTORE_ENCRYPTION_KEY, 'base64')
    if (encryptionKey.length !== 32) {
      problems.set(
        'SYNCSTORE_ENCRYPTION_KEY',
        'SYNCSTORE_ENCRYPTION_KEY must be 32 bytes, base64-encoded (try: openssl rand -base64 32)',
      )
    }
  }

  // A bad interval is reported, and the timeout is still measured against the default one.
  const heartbeatIntervalMs = problems.has('SYNCSTORE_HEARTBEAT_INTERVAL_MS')
    ? DEFAULT_HEARTBEAT_INTERVAL_MS
    : env.SYNCSTORE_HEARTBEAT_INTERVAL_MS
  // Several missed heartbeats before a run is declared dead: a busy event loop is not a crash.
  const heartbeatTimeoutMs = env.SYNCSTORE_HEARTBEAT_TIMEOUT_MS ?? Math.max(60_000, heartbeatIntervalMs * 3)
  if (!problems.has('SYNCSTORE_HEARTBEAT_TIMEOUT_MS') && heartbeatTimeoutMs <= heartbeatIntervalMs) {
    problems.set(
      'SYNCSTORE_HEARTBEAT_TIMEOUT_MS',
      'SYNCSTORE_HEARTBEAT_TIMEOUT_MS must be longer than SYNCSTORE_HEARTBEAT_INTERVAL_MS',
    )
  }
  const metricsPort = env.SYNCSTORE_METRICS_PORT ?? null
  if (
    !problems.has('SYNCSTORE_METRICS_PORT') &&
    metricsPort !== null &&
    metricsPort !== 0 &&
    metricsPort === env.PORT
  ) {
    problems.set('SYNCSTORE_METRICS_PORT', 'SYNCSTORE_METRICS_PORT must differ from PORT')
  }
  if (problems.size > 0) throw new ConfigError([...problems.values()])

  const database: DatabaseTarget = env.DATABASE_URL
    ? { kind: 'postgres', url: env.DATABASE_URL }
    : { kind: 'embedded', dataDir: path.resolve(cwd, env.SYNCSTORE_DATA_DIR) }
  const exampleIntegrations = !env.SYNCSTORE_INTEGRATIONS_DIR && database.kind === 'embedded'
  return Object.freeze({
    port: env.PORT,
    host: env.HOST,
    metricsPort,
    database,
    integrationsDirs: [
      ...(exampleIntegrations ? [fileURLToPath(new URL('examples/integrations', PACKAGE_ROOT))] : []),
      path.resolve(cwd, env.SYNCSTORE_INTEGRATIONS_DIR ?? 'integrations'),
    ],
    exampleIntegrations,
    providersFile: env.SYNCSTORE_PROVIDERS_FILE ? path.resolve(cwd, env.SYNCSTORE_PROVIDERS_FILE) : null,
    publicUrl: (env.SYNCSTORE_PUBLIC_URL ?? `http://localhost:${env.PORT}`).replace(/\/+$/, ''),
    bootstrapKeys,
    encryptionKey,
    logLevel: env.LOG_LEVEL,
    maxPageBytes: env.SYNCSTORE_MAX_PAGE_BYTES,
    bodyLimitBytes: env.SYNCSTORE_BODY_LIMIT_BYTES,
    pageMemoryBytes: env.SYNCSTORE_PAGE_MEMORY_BYTES,
    readAheadPages: env.SYNCSTORE_READ_AHEAD_PAGES,
    http: {
      idleTimeoutMs: env.SYNCSTORE_IDLE_TIMEOUT_MS,
      requestTimeoutMs: env.SYNCSTORE_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: env.SYNCSTORE_KEEP_ALIVE_TIMEOUT_MS,
    },
    shutdownGraceMs: env.SYNCSTORE_SHUTDOWN_GRACE_MS,
    runs: {
      concurrency: env.SYNCSTORE_RUN_CONCURRENCY,
      timeoutMs: env.SYNCSTORE_RUN_TIMEOUT_MS,
      memoryMb: env.SYNCSTORE_RUN_MEMORY_MB,
      heartbeatIntervalMs,
      heartbeatTimeoutMs,
      pollMs: env.SYNCSTORE_POLL_INTERVAL_MS,
      recordValidation: env.SYNCSTORE_RECORD_VALIDATION,
    },
    retention: {
      pruneAfterDays: env.SYNCSTORE_PRUNE_AFTER_DAYS,
      deleteAfterDays: env.SYNCSTORE_DELETE_AFTER_DAYS,
      intervalMs: env.SYNCSTORE_RETENTION_INTERVAL_MS,
    },
    nango: { reconcileMs: env.SYNCSTORE_NANGO_RECONCILE_MS },
  })
}

/** What is wrong with a variable, said from its rule: its `problem`, or its integer range. */
function problemOf(error: ErrorObject, raw: string | undefined): string {
  const rule = error.parentSchema as TSchema & { problem?: string; minimum?: number; maximum?: number }
  if (rule.problem) return rule.problem
  return `must be an integer from ${rule.minimum} to ${rule.maximum} (got ${JSON.stringify(raw)})`
}
