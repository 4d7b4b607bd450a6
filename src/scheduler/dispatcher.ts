import { randomBytes } from 'node:crypto'
import os from 'node:os'

import type { Kysely } from 'kysely'

import type { Database } from '../db/database.ts'
import { sqlState, withRetries } from '../db/errors.ts'
import { inTransaction } from '../db/transaction.ts'
import type { Logger } from '../logger.ts'
import { type Loop, startLoop } from '../loop.ts'
import type { Metrics, RunEnd } from '../metrics/metrics.ts'
import { completeRuns, type RunEnded } from '../runs/complete.ts'
import type { RunExecutor } from '../runs/execute.ts'
import { type ClaimedRun, expireRuns, heartbeat } from '../runs/lease.ts'
import type { RunOutcome } from '../runs/states.ts'
import { claimDueRuns, requestRun } from './run-queue.ts'
import type { Wakeups } from './wakeups.ts'

export interface DispatcherOptions {
  db: Kysely<Database>
  wakeups: Wakeups
  executor: RunExecutor
  logger: Logger
  /** Runs executing at once on this instance */
  concurrency: number
  /** How often to look for due schedules when nothing wakes the worker */
  pollMs: number
  heartbeatIntervalMs: number
  heartbeatTimeoutMs: number
  maxRunMs: number
  /** Counts runs by outcome, their durations and the records they wrote */
  metrics?: Metrics | undefined
}

/** A run's end waiting to be recorded, and what to tell its run once it is. */
interface Ending {
  run: ClaimedRun
  outcome: RunOutcome
  resolve: (ended: RunEnd) => void
  reject: (err: unknown) => void
}

/**
 * The worker of one instance: claims due runs (SKIP LOCKED, so every instance can run one),
 * launches them (runs/execute.ts), records their end (runs/complete.ts), renews their heartbeats
 * and expires runs whose worker died anywhere.
 */
export class Dispatcher {
  readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  /** Claimed runs of this instance; `ended` once exec has returned and the outcome is being recorded. */
  private readonly active = new Map<
    number,
    { run: ClaimedRun; controller: AbortController; done: Promise<void>; ended: boolean }
  >()
  /** Runs of `active` whose executor has not returned: what `concurrency` bounds. */
  private executing = 0
  /** Runs whose executor returned, waiting for recordEnds to record their end; `recording` while it does. */
  private readonly ending: Ending[] = []
  private recording = false
  private stopping = false
  private wake: (() => void) | undefined
  private pending = false
  private loop: Promise<void> | undefined
  private unsubscribe: (() => Promise<void>) | undefined
  private loops: Loop[] = []

  constructor(private readonly o: DispatcherOptions) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.o.wakeups.subscribe(() => this.poke())
    this.loops.push(
      startLoop({
        name: 'heartbeat',
        intervalMs: this.o.heartbeatIntervalMs,
        logger: this.o.logger,
        run: () => this.renewHeartbeats(),
      }),
      startLoop({
        name: 'expiry',
        // Often enough that a dead worker's run is expired soon after its timeout.
        intervalMs: Math.max(250, Math.min(5000, this.o.heartbeatTimeoutMs / 4)),
        logger: this.o.logger,
        run: () => this.expire(),
      }),
    )
    this.loop = this.claimLoop()
  }

  /** Wakes the claim loop now (a run was requested or one finished). */
  poke(): void {
    this.pending = true
    this.wake?.()
  }

  private async claimLoop(): Promise<void> {
    while (!this.stopping) {
      this.pending = false
      let claimedAll = false
      const free = this.o.concurrency - this.executing
      if (free > 0) {
        try {
          // Only as many due schedules become runs as this instance can start now: turning a
          // backlog of thousands into runs on every claim made each claim as slow as the backlog.
          const claimed = await withRetries(() => claimDueRuns(this.o.db, this.owner, free))
          for (const run of claimed) this.launch(run)
          claimedAll = claimed.length === free
        } catch (err) {
          // 23505: another instance started a sync whose waiting run this claim took (claimDueRuns),
          // a rare race; the claim changed nothing, and the next one (a run's end or the poll) skips
          // that sync.
          if (sqlState(err) === '23505') this.o.logger.info({ err }, 'claim raced another instance')
          else this.o.logger.error({ err }, 'claiming runs failed')
        }
      }
      // Capacity filled: more may be due, look again as soon as a run finishes (it pokes).
      if (this.pending || (claimedAll && this.executing < this.o.concurrency)) continue
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.o.pollMs)
        this.wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.wake = undefined
    }
  }

  private launch(run: ClaimedRun): void {
    const controller = new AbortController()
    const entry = { run, controller, done: Promise.resolve(), ended: false }
    const launched = performance.now()
    entry.done = (async () => {
      let outcome: RunOutcome
      try {
        outcome = await this.o.executor.execute(run, controller.signal)
      } catch (err) {
        outcome = { state: 'FAILED', error: (err as Error).message }
      }
      entry.ended = true
      this.executing -= 1
      // Its slot is free: the next runs are claimed while this one's end is being recorded.
      this.poke()
      if (outcome.result) this.o.metrics?.recordsWritten(outcome.result)
      if (controller.signal.aborted && this.stopping) return // released by stop()
      const ended = await new Promise<RunEnd>((resolve, reject) =>
        this.queueEnd({ run, outcome, resolve, reject }),
      )
      this.o.metrics?.runEnded(ended, (performance.now() - launched) / 1000)
    })()
      .catch((err: unknown) =>
        this.o.logger.error({ err, runId: run.id }, 'could not record the end of a run'),
      )
      .finally(() => {
        this.active.delete(run.id)
        this.poke()
      })
    this.active.set(run.id, entry)
    this.executing += 1
  }

  private queueEnd(end: Ending): void {
    this.ending.push(end)
    if (this.recording) return
    this.recording = true
    // From the next turn of the event loop, so that runs ending together (those one claim
    // launched, say) are recorded together.
    setImmediate(() => void this.recordEnds())
  }

  /**
   * Records the ends of runs in one transaction: those that ended together, then all those that
   * came in while they were being recorded. A no-op run then costs a share of one statement, not
   * a transaction of its own.
   */
  private async recordEnds(): Promise<void> {
    try {
      while (this.ending.length > 0) {
        const batch = this.ending.splice(0)
        if (batch.length > 1) {
          try {
            await this.settle(batch, await this.complete(batch))
            continue
          } catch {
            // One run's end (queueing its webhooks, say) must not fail the others': each on its own.
          }
        }
        await Promise.all(batch.map((e) => this.recordAlone(e)))
      }
    } finally {
      this.recording = false
    }
  }

  private async recordAlone(end: Ending): Promise<void> {
    try {
      await this.settle([end], await this.complete([end]))
    } catch (err) {
      // The success could not be recorded (stamping it or queueing its webhooks failed): say so,
      // rather than leave the run STARTED until it expires and runs again.
      this.o.logger.error({ err, runId: end.run.id }, 'could not record the end of a run')
      const failed: Ending = {
        ...end,
        outcome: { state: 'FAILED', error: `Could not record the run's end: ${(err as Error).message}` },
      }
      try {
        await this.settle([failed], await this.complete([failed]))
      } catch (failedToo) {
        end.reject(failedToo)
      }
    }
  }

  private complete(ends: readonly Ending[]): Promise<Map<number, RunEnded>> {
    // Through an outage as long as the heartbeat timeout: past it, the run is expired and run
    // again anyway (the compare-and-set in completeRuns then refuses this late end).
    return inTransaction(this.o.db, (trx) => completeRuns(trx, ends), {
      outageMs: this.o.heartbeatTimeoutMs,
    })
  }

  /**
   * Tells each run how its end was recorded, and wakes every instance if a follow-up is waiting
   * (a missed wake-up only delays it to the next poll, so that failure is logged, not thrown).
   */
  private async settle(ends: readonly Ending[], ended: Map<number, RunEnded>): Promise<void> {
    let followUp = false
    for (const { run, outcome, resolve } of ends) {
      const recorded = ended.get(run.id)
      if (!recorded) {
        this.o.logger.warn({ runId: run.id }, 'run ended after losing its lease; its result was discarded')
      }
      followUp ||= recorded?.followUp ?? false
      resolve(recorded ? (outcome.state.toLowerCase() as Lowercase<RunOutcome['state']>) : 'lost')
    }
    // A follow-up of a sync was waiting for its run to end: any instance may start it now.
    if (followUp) {
      await this.o.wakeups
        .notify()
        .catch((err: unknown) => this.o.logger.error({ err }, 'could not wake the instances for a follow-up'))
    }
  }

  private async renewHeartbeats(): Promise<void> {
    const held = [...this.active.values()].filter((a) => !a.ended)
    if (held.length === 0) return
    const alive = await heartbeat(
      this.o.db,
      held.map((a) => a.run),
    )
    for (const entry of held) {
      // A run that ended meanwhile is not alive because its end was recorded, not because it was lost.
      if (!alive.has(entry.run.id) && !entry.ended) {
        this.o.logger.warn({ runId: entry.run.id }, 'run lost its lease (expired or cancelled); stopping it')
        entry.controller.abort(new Error('The run was cancelled or expired'))
      }
    }
  }

  private async expire(): Promise<void> {
    const expired = await expireRuns(this.o.db, {
      heartbeatTimeoutMs: this.o.heartbeatTimeoutMs,
      maxRunMs: this.o.maxRunMs,
    })
    if (expired.length > 0) {
      this.o.metrics?.runsExpired(expired.length)
      this.o.logger.warn({ runs: expired.map((r) => r.id) }, 'expired runs whose worker stopped reporting')
      await this.o.wakeups.notify()
    }
  }

  /**
   * Stops claiming, lets running runs finish for up to `graceMs`, then aborts the rest and
   * releases them: each is marked CANCELLED ("interrupted") and asked for again, so another instance
   * (or this one after a restart) runs it.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true
    // poke, not just wake: a claim in flight has no wake to call, and without `pending` the loop
    // would then sleep a whole poll interval before it saw `stopping`.
    this.poke()
    await this.loop
    await this.unsubscribe?.()
    const deadline = new Promise((resolve) => setTimeout(resolve, graceMs).unref())
    await Promise.race([Promise.all([...this.active.values()].map((a) => a.done)), deadline])
    for (const { run, controller } of this.active.values()) {
      controller.abort(new Error('The server is shutting down'))
      await this.release(run).catch((err: unknown) =>
        this.o.logger.error({ err, runId: run.id }, 'could not release run'),
      )
    }
    await Promise.all(this.loops.map((l) => l.stop()))
  }

  private async release(run: ClaimedRun): Promise<void> {
    await this.o.db.transaction().execute(async (trx) => {
      const released = await completeRuns(trx, [
        { run, outcome: { state: 'CANCELLED', error: 'Interrupted: the server shut down; run again' } },
      ])
      if (released.has(run.id)) {
        this.o.metrics?.runEnded('cancelled')
        await requestRun(trx, {
          syncId: run.syncId,
          connectionPk: run.connectionPk,
          reason: run.reason,
          reset: run.reset,
          emptyCache: run.emptyCache,
        })
      }
    })
  }

  /** Runs executing on this instance now (for status and tests). */
  get running(): number {
    return this.active.size
  }
}
