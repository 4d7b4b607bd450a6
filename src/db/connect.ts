import { createHash } from 'node:crypto'

import { Kysely, PGliteDialect, PostgresDialect } from 'kysely'
import pg from 'pg'

import type { DatabaseTarget } from '../config.ts'
import type { Logger } from '../logger.ts'
import type { Database } from './database.ts'
import { DatabaseUnavailableError, sqlState } from './errors.ts'
import { PREPARED } from './prepared.ts'
import { type EachRow, type Row, type RowReader, rowsVia, TextRow } from './rows.ts'
import { type RowTap, tapOf, WireClient, WireRow } from './wire.ts'

export interface Db extends RowReader {
  readonly kind: DatabaseTarget['kind']
  /** Closes the pool (Postgres) or the embedded instance; safe to call twice. */
  close(): Promise<void>
  /** The Postgres pool now (GET /metrics); the embedded database has no pool. */
  poolStats?(): PoolStats
}

export interface PoolStats {
  readonly max: number
  /** Connections open, idle among them, and callers waiting for one */
  readonly total: number
  readonly idle: number
  readonly waiting: number
  /** Connections handed out since the start, and the seconds callers spent waiting for them */
  readonly acquired: number
  readonly waitSeconds: number
}

export interface OpenOptions {
  readonly logger: Logger
  readonly applicationName?: string
  /** Postgres pool size; the embedded database has exactly one connection. */
  readonly poolMax?: number
}

// Both drivers return int8 (counts, record ids) as JavaScript numbers: every int8 we store stays far
// below 2^53, and one representation keeps stores identical on both databases.
const pgTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8) return (value: string) => Number(value)
    return pg.types.getTypeParser(oid, format)
  },
}

export async function openDatabase(target: DatabaseTarget, options: OpenOptions): Promise<Db> {
  return target.kind === 'postgres' ? openPostgres(target.url, options) : openEmbedded(target.dataDir)
}

function openPostgres(url: string, { logger, applicationName = 'syncstore', poolMax = 10 }: OpenOptions): Db {
  const pool = new pg.Pool({
    connectionString: url,
    application_name: applicationName,
    max: poolMax,
    types: pgTypes,
    Client: WireClient,
    // Fail fast instead of queueing forever when Postgres is unreachable or the pool is exhausted.
    connectionTimeoutMillis: 10_000,
    // Nango's records database uses 60 s; nothing we run legitimately takes longer.
    statement_timeout: 60_000,
    idle_in_transaction_session_timeout: 60_000,
    // force_generic_plan: only the PREPARED statements below are cached, and their generic plans are
    // the right ones; without it Postgres re-plans each of their first executions and may keep doing so.
    options: '-c TimeZone=UTC -c DateStyle=ISO,MDY -c plan_cache_mode=force_generic_plan',
  })
  // Without a listener, an idle client's backend error (Postgres restart) crashes the process.
  // One line, not the error: pg hangs the whole client object on it, kilobytes per connection.
  pool.on('error', (err) =>
    logger.warn({ code: sqlState(err), reason: err.message }, 'idle database connection lost'),
  )
  const waits = { acquired: 0, ms: 0 }
  const preparing = preparingPool(pool, waits)
  const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool: preparing }) })
  let closed: Promise<void> | undefined
  return {
    kysely,
    eachRow: async (text, values, onRow) => {
      const client = await preparing.connect()
      try {
        await client.eachRow(text, values, onRow)
      } finally {
        client.release()
      }
    },
    kind: 'postgres',
    close: () => (closed ??= kysely.destroy()),
    poolStats: () => ({
      max: poolMax,
      total: pool.totalCount,
      idle: pool.idleCount,
      waiting: pool.waitingCount,
      acquired: waits.acquired,
      waitSeconds: waits.ms / 1000,
    }),
  }
}

function preparingPool(pool: pg.Pool, waits: { acquired: number; ms: number }) {
  const wrapped = new WeakMap<pg.PoolClient, RowClient>()
  const wrap = (client: pg.PoolClient): RowClient => {
    let proxy = wrapped.get(client)
    if (!proxy) {
      // pg emits 'error' on a client whose backend dies while no query is running (FATAL 57P01 from
      // a restart or pg_terminate_backend). The pool listens only while the client is idle in it; a
      // client checked out between two statements of a transaction had no listener, and the event
      // crashed the process. This one stays for the client's life; the next statement then fails
      // and the pool discards the client on release (it is no longer queryable).
      // Not logged here: while idle the pool's listener logs it, and while checked out the statement
      // that fails next reports it.
      let broken = false
      client.on('error', () => (broken = true))
      const query = async (text: unknown, values?: unknown[]) => {
        try {
          return typeof text === 'string' && text.startsWith(PREPARED)
            ? await client.query({ name: statementName(text), text, values: values ?? [] })
            : await client.query(text as string, values)
        } catch (err) {
          // A statement that failed because its connection broke carries no SQLSTATE ("Connection
          // terminated unexpectedly", "... not queryable"): it is a 08006 (connection failure).
          throw broken && !sqlState(err) ? new DatabaseUnavailableError('08006', err) : err
        }
      }
      const eachRow: EachRow = (text, values, onRow) =>
        new Promise<void>((resolve, reject) => {
          const statement = new RowStatement(
            {
              ...(text.startsWith(PREPARED) ? { name: statementName(text) } : {}),
              text,
              values: [...values],
            },
            onRow,
          )
          statement.on('error', (err: Error) =>
            reject(broken && !sqlState(err) ? new DatabaseUnavailableError('08006', err) : err),
          )
          statement.on('end', () => (statement.thrown ? reject(statement.thrown.error) : resolve()))
          client.query(statement)
        })
      proxy = new Proxy(client as RowClient, {
        get(target, prop, receiver) {
          if (prop === 'query') return query
          if (prop === 'eachRow') return eachRow
          const value = Reflect.get(target, prop, receiver) as unknown
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
        },
      })
      wrapped.set(client, proxy)
    }
    return proxy
  }
  return {
    connect: async (): Promise<RowClient> => {
      const asked = performance.now()
      try {
        const client = await pool.connect()
        waits.acquired++
        waits.ms += performance.now() - asked
        return wrap(client)
      } catch (err) {
        // Refused, timed out, reset: no SQLSTATE, but the same fact as 08001 (cannot connect).
        throw sqlState(err) ? err : new DatabaseUnavailableError('08001', err)
      }
    },
    end: () => pool.end(),
    Client: pg.Client,
    options: pool.options,
  }
}

/** A pool client that can also stream a statement's rows (EachRow). */
interface RowClient extends pg.PoolClient {
  eachRow: EachRow
}

/**
 * A statement whose rows go to `onRow` one by one, as their protocol messages arrived (WireRow) on
 * a WireClient's connection, as pg's strings (TextRow) on any other: pg's own Query would look up
 * a type parser per column, run each value through it and emit a 'row' event holding a Result,
 * then parse the command tag. pg hands a statement (a Submittable) each RowDescription, DataRow
 * and CommandComplete message; the rest (prepare, bind, errors, 'end') is pg.Query's.
 */
class RowStatement extends (pg.Query as unknown as QueryBase) {
  thrown: { error: unknown } | undefined
  private tap: RowTap | undefined
  private readonly wire = new WireRow()
  private readonly strings = new TextRow()

  constructor(
    config: pg.QueryConfig,
    private readonly onRow: (row: Row) => void,
  ) {
    super(config)
  }

  /** pg sends the statement here, and handles an error returned (a statement it could not send). */
  override submit(connection: pg.Connection): Error | null {
    this.tap = tapOf(connection)
    if (this.tap) this.tap.onRow = (message, start) => this.take(this.wire, message, start)
    return super.submit(connection)
  }

  /** The columns' types: nothing to look up, the values are handed over as text. */
  override handleRowDescription(): void {}

  /** The command tag (`SELECT 101`): nobody reads the row count it carries. */
  override handleCommandComplete(): void {}

  override handleDataRow(message: { fields: (string | null)[] }): void {
    this.strings.values = message.fields
    this.take(this.strings)
  }

  override handleReadyForQuery(connection: pg.Connection): void {
    this.untap()
    super.handleReadyForQuery(connection)
  }

  override handleError(err: Error, connection: pg.Connection): void {
    this.untap()
    super.handleError(err, connection)
  }

  private take(row: WireRow, message: Buffer, start: number): void
  private take(row: TextRow): void
  private take(row: WireRow | TextRow, message?: Buffer, start?: number): void {
    if (this.thrown) return
    try {
      if (row instanceof WireRow) row.read(message!, start!)
      this.onRow(row)
    } catch (error) {
      this.thrown = { error }
    }
  }

  private untap(): void {
    if (this.tap) this.tap.onRow = null
    this.tap = undefined
  }
}

/** pg.Query's methods RowStatement overrides (pg 8: lib/query.js); @types/pg declares few of them. */
interface QueryMethods {
  submit(connection: pg.Connection): Error | null
  handleRowDescription(message: unknown): void
  handleDataRow(message: { fields: (string | null)[] }): void
  handleCommandComplete(message: unknown, connection: pg.Connection): void
  handleReadyForQuery(connection: pg.Connection): void
  handleError(err: Error, connection: pg.Connection): void
}
type QueryBase = new (config: pg.QueryConfig) => Omit<pg.Query, keyof QueryMethods> & QueryMethods

/** Named statements by their text: a hash of a page statement's 2 KB text per request is not free. */
const statementNames = new Map<string, string>()
function statementName(text: string): string {
  let name = statementNames.get(text)
  if (name === undefined) {
    name = `s_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`
    statementNames.set(text, name)
  }
  return name
}

async function openEmbedded(dataDir: string): Promise<Db> {
  // Imported only here: PGlite's module alone is ~45 MB of resident memory a Postgres setup never uses.
  const { PGlite } = await import('@electric-sql/pglite')
  const pglite = await PGlite.create(dataDir)
  await pglite.exec(`SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'`)
  const kysely = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) })
  let closed: Promise<void> | undefined
  return {
    ...rowsVia(kysely),
    kind: 'embedded',
    close: () => (closed ??= kysely.destroy().then(() => (pglite.closed ? undefined : pglite.close()))),
  }
}
