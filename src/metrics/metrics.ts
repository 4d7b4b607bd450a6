import type { Kysely } from 'kysely'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

import type { Db } from '../db/connect.ts'
import type { Database } from '../db/database.ts'
import type { Logger } from '../logger.ts'
import { READ_AHEAD_OUTCOMES, type ReadAheadOutcome } from '../records/read-ahead.ts'
import type { ModelCounts, RunOutcome } from '../runs/states.ts'
import { dueUnstarted } from '../scheduler/schedules.ts'
import { deliveryBacklog } from '../webhooks/store.ts'

/** How a run ended, as counted: its final state, or `lost` when it ended after losing its lease. */
export type RunEnd = Lowercase<RunOutcome['state']> | 'lost'
const RUN_ENDS: readonly RunEnd[] = ['succeeded', 'failed', 'cancelled', 'expired', 'lost']

/**
 * The metrics of one server, in a registry of its own (never prom-client's global one), so that
 * several servers in one process (the tests) each count their own. Counters and histograms are
 * updated as things happen; what lives in the database (due schedules, the webhook backlog) and
 * the pool are read when scraped.
 */
export class Metrics {
  readonly registry = new Registry()
  private readonly requests: Histogram<'method' | 'route' | 'status_code'>
  private readonly runs: Counter<'outcome'>
  private readonly runSeconds: Histogram<'outcome'>
  private readonly written: Counter<'action'>
  private readonly read: Counter
  private readonly readAhead: Counter<'outcome'>
  private readonly refreshes: Counter<'outcome'>

  constructor(db: Db, logger: Logger) {
    const registers = [this.registry]
    // Node's own metrics under their usual names (process_*, nodejs_*, event-loop lag among them),
    // so the common Node.js dashboards read them as they are.
    collectDefaultMetrics({ register: this.registry })

    this.requests = new Histogram({
      name: 'syncstore_http_request_duration_seconds',
      help: 'HTTP requests by method, route pattern and status code, and how long each took to answer',
      labelNames: ['method', 'route', 'status_code'],
      // Down to 1 ms: an ordinary GET /records page is answered in about that.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.runs = new Counter({
      name: 'syncstore_runs_total',
      help: 'Sync runs ended, by outcome (lost: ended after it was cancelled or expired elsewhere)',
      labelNames: ['outcome'],
      registers,
    })
    this.runSeconds = new Histogram({
      name: 'syncstore_run_duration_seconds',
      help: 'How long the sync runs of this instance took, from claim to recorded end, by outcome',
      labelNames: ['outcome'],
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
      registers,
    })
    this.written = new Counter({
      name: 'syncstore_records_written_total',
      help: "Records written by this instance's sync runs, by action (as each run reports when it ends)",
      labelNames: ['action'],
      registers,
    })
    this.read = new Counter({
      name: 'syncstore_records_read_total',
      help: 'Records returned by GET /records',
      registers,
    })
    this.readAhead = new Counter({
      name: 'syncstore_records_read_ahead_total',
      help:
        'GET /records pages read ahead (read), then served, read again because the dataset had changed ' +
        '(changed), or dropped unasked (unused)',
      labelNames: ['outcome'],
      registers,
    })
    this.refreshes = new Counter({
      name: 'syncstore_oauth_refreshes_total',
      help: 'OAuth credential refreshes asked of providers, by outcome',
      labelNames: ['outcome'],
      registers,
    })
    // Every label value known from the start, so a rate over them exists before the first event.
    for (const outcome of RUN_ENDS) this.runs.inc({ outcome }, 0)
    for (const outcome of ['success', 'failure']) this.refreshes.inc({ outcome }, 0)
    for (const action of ['added', 'updated', 'deleted']) this.written.inc({ action }, 0)
    for (const outcome of READ_AHEAD_OUTCOMES) this.readAhead.inc({ outcome }, 0)
    refreshCounters.set(db.kysely, this.refreshes)

    this.databaseGauges(db, logger)
    if (db.poolStats) this.poolGauges(db.poolStats)
  }

  /** One answered request; `route` is the pattern (`/records`), never the URL. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.requests.observe({ method, route, status_code: status }, seconds)
  }

  runEnded(outcome: RunEnd, seconds?: number): void {
    this.runs.inc({ outcome })
    if (seconds !== undefined) this.runSeconds.observe({ outcome }, seconds)
  }

  /** Runs this instance expired (any instance's; how long they ran is not known here). */
  runsExpired(count: number): void {
    this.runs.inc({ outcome: 'expired' }, count)
  }

  recordsWritten(counts: ModelCounts): void {
    for (const c of Object.values(counts)) {
      if (c.added) this.written.inc({ action: 'added' }, c.added)
      if (c.updated) this.written.inc({ action: 'updated' }, c.updated)
      if (c.deleted) this.written.inc({ action: 'deleted' }, c.deleted)
    }
  }

  recordsRead(count: number): void {
    this.read.inc(count)
  }

  pageReadAhead(outcome: ReadAheadOutcome): void {
    this.readAhead.inc({ outcome })
  }

  /** Read at each scrape, in two cheap indexed queries; NaN (and a warning) when the database fails. */
  private databaseGauges(db: Db, logger: Logger): void {
    this.gaugesOf('due schedules', () => dueUnstarted(db.kysely), logger, {
      syncstore_schedules_due_unstarted: {
        help: 'Syncs whose run is due (schedule or request) and not started, no run of theirs executing',
        value: (r) => r.count,
      },
      syncstore_schedules_due_oldest_seconds: {
        help: 'How long the longest-waiting due-but-unstarted sync has been due (0 when none is)',
        value: (r) => r.oldestSeconds,
      },
    })
    this.gaugesOf('the webhook backlog', () => deliveryBacklog(db.kysely), logger, {
      syncstore_webhook_deliveries_pending: {
        help: 'Webhook deliveries not yet made (due now, or waiting out a retry backoff)',
        value: (r) => r.pending,
      },
      syncstore_webhook_deliveries_due: {
        help: 'Pending webhook deliveries whose next attempt is due now',
        value: (r) => r.due,
      },
    })
  }

  /**
   * Gauges read from one query at each scrape: prom-client collects every metric at once, so their
   * collects share the query in flight rather than each running it (or one showing the last scrape's).
   */
  private gaugesOf<T>(
    what: string,
    read: () => Promise<T>,
    logger: Logger,
    gauges: Record<string, { help: string; value: (row: T) => number }>,
  ): void {
    let inFlight: Promise<T | undefined> | undefined
    const once = () =>
      (inFlight ??= read()
        .catch((err: unknown) => {
          logger.warn({ err }, `metrics: could not read ${what}`)
          return undefined
        })
        .finally(() => (inFlight = undefined)))
    for (const [name, { help, value }] of Object.entries(gauges)) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          const row = await once()
          this.set(row === undefined ? NaN : value(row))
        },
      })
    }
  }

  private poolGauges(stats: NonNullable<Db['poolStats']>): void {
    const registers = [this.registry]
    const gauge = (name: string, help: string, read: (s: ReturnType<typeof stats>) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(stats()))
        },
      })
    const counter = (name: string, help: string, read: (s: ReturnType<typeof stats>) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          // The pool keeps the running total; the counter shows it.
          this.reset()
          this.inc(read(stats()))
        },
      })
    gauge('syncstore_db_pool_max', 'Connections the Postgres pool may open', (s) => s.max)
    gauge('syncstore_db_pool_connections', 'Connections the Postgres pool holds open', (s) => s.total)
    gauge('syncstore_db_pool_idle', 'Open pool connections not in use', (s) => s.idle)
    gauge('syncstore_db_pool_waiting', 'Queries waiting for a pool connection now', (s) => s.waiting)
    counter('syncstore_db_pool_acquires_total', 'Connections handed out by the pool', (s) => s.acquired)
    counter(
      'syncstore_db_pool_acquire_wait_seconds_total',
      'Time spent waiting for a pool connection, summed over every acquire',
      (s) => s.waitSeconds,
    )
  }
}

/**
 * The refresh counter of the server using each database. OAuth refreshes happen deep in
 * src/credentials/refresh.ts, which is handed the database by every caller but no server object;
 * keyed by the Kysely instance (as refresh.ts keys its in-flight refreshes), each server of a process
 * still counts its own.
 */
const refreshCounters = new WeakMap<Kysely<Database>, Counter<'outcome'>>()

/** Counts one refresh asked of a provider: nothing when the server keeps no metrics. */
export function countRefresh(db: Kysely<Database>, outcome: 'success' | 'failure'): void {
  refreshCounters.get(db)?.inc({ outcome })
}
