import type { Kysely } from 'kysely'

import type { Database } from '../db/database.ts'

/** A run's log: what its function wrote with nango.log, and why it failed (`syncstore runs logs`). */

type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const LEVELS: readonly string[] = ['debug', 'info', 'warn', 'error']

// One log line is for people; cap what a runaway function can store per line.
const MAX_MESSAGE = 10_000

async function appendRunLog(
  db: Kysely<Database>,
  runId: number,
  seq: number,
  level: string,
  message: string,
  payload?: unknown,
): Promise<void> {
  await db
    .insertInto('run_logs')
    .values({
      run_id: runId,
      seq,
      level: (LEVELS.includes(level) ? level : 'info') as LogLevel,
      message: message.replaceAll('\0', '').slice(0, MAX_MESSAGE),
      payload: JSON.stringify(payload ?? null).replaceAll('\\u0000', ''),
    })
    .execute()
}

/**
 * Appends to one run's log, numbering its lines: a function's concurrent nango.log calls may land
 * in any order, the number keeps the order it made them in.
 */
export function runLogger(db: Kysely<Database>, runId: number) {
  let seq = 0
  return async (level: string, message: string, payload?: unknown): Promise<null> => {
    seq += 1
    await appendRunLog(db, runId, seq, level, message, payload)
    return null
  }
}

export interface RunLogLine {
  seq: number
  level: string
  message: string
  payload: unknown
  createdAt: Date
}

export async function listRunLogs(db: Kysely<Database>, runId: number): Promise<RunLogLine[]> {
  const rows = await db
    .selectFrom('run_logs')
    .select(['seq', 'level', 'message', 'payload', 'created_at'])
    .where('run_id', '=', runId)
    .orderBy('seq')
    .execute()
  return rows.map((r) => ({
    seq: r.seq,
    level: r.level,
    message: r.message,
    payload: r.payload,
    createdAt: r.created_at,
  }))
}
