import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'

import { type Kysely, sql } from 'kysely'
import pg from 'pg'

import type { Database, Queryable } from '../db/database.ts'
import type { Logger } from '../logger.ts'

/**
 * "Runs may be ready": lets a trigger start its run within milliseconds instead of a poll
 * interval. On Postgres this is LISTEN/NOTIFY, so every instance hears it; on the embedded
 * database (one process by construction) it is an in-process event. Notifications are hints:
 * workers still poll, so a lost one only costs latency.
 */
export interface Wakeups {
  /** Call after the transaction that made runs ready has committed. */
  notify(): Promise<void>
  /** Calls `fn` on each notification (and after a reconnect) until the returned stop is called. */
  subscribe(fn: () => void): Promise<() => Promise<void>>
}

const CHANNEL = 'syncstore_runs'

/**
 * Wakes the dispatchers of every instance on Postgres when the transaction that made runs ready
 * commits, whichever process (a server, the CLI) wrote it. On the embedded database workers see
 * the runs at their next poll.
 */
export async function notifyRunsReady(trx: Queryable): Promise<void> {
  await sql`SELECT pg_notify(${CHANNEL}, '')`.execute(trx)
}

export function localWakeups(): Wakeups {
  const events = new EventEmitter()
  return {
    notify: async () => void events.emit(CHANNEL),
    subscribe: async (fn) => {
      events.on(CHANNEL, fn)
      return async () => void events.off(CHANNEL, fn)
    },
  }
}

export function postgresWakeups(db: Kysely<Database>, url: string, logger: Logger): Wakeups {
  const local = localWakeups()
  return {
    async notify() {
      await sql`SELECT pg_notify(${CHANNEL}, '')`.execute(db)
    },
    async subscribe(fn) {
      let stopped = false
      let client: pg.Client | undefined
      const stopLocal = await local.subscribe(fn)
      // One dedicated connection LISTENs; if it drops (Postgres restart), reconnect with backoff
      // and wake the worker once, since notifications sent meanwhile were lost.
      const connect = async (reconnecting: boolean) => {
        for (let attempt = 0; !stopped; attempt++) {
          const c = new pg.Client({ connectionString: url, application_name: 'syncstore-listen' })
          // Listened to from the start: an 'error' event with no listener would crash the process.
          // Only a connection that was listening reconnects from here; one that fails earlier is
          // retried by the loop below.
          let listening = false
          c.on('error', (err) => {
            void c.end().catch(() => undefined)
            if (!listening) return
            listening = false
            logger.warn({ err }, 'wake-up listener lost its connection; reconnecting')
            if (!stopped) void connect(true)
          })
          try {
            await c.connect()
            c.on('notification', () => fn())
            await c.query(`LISTEN ${CHANNEL}`)
            if (stopped) return void (await c.end())
            listening = true
            client = c
            if (reconnecting || attempt > 0) fn()
            return
          } catch (err) {
            await c.end().catch(() => undefined)
            logger.warn({ err, attempt }, 'could not listen for wake-ups; retrying')
            // Capped at 5 s: notifications are lost until it is back, and polling alone is slower.
            await sleep(Math.min(5_000, 500 * 2 ** attempt))
          }
        }
      }
      await connect(false)
      return async () => {
        stopped = true
        await stopLocal()
        await client?.end().catch(() => undefined)
      }
    },
  }
}
