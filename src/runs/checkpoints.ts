import { type Kysely, sql } from 'kysely'

import { type Sealer, openJson, sealJson } from '../crypto.ts'
import type { Database, Queryable } from '../db/database.ts'
import type { WriteGuard } from '../records/datasets.ts'
import type { NangoHandlers } from '../runtime/protocol.ts'

/**
 * A sync's checkpoint: one flat object per sync, sealed, with an optimistic version, so two runs
 * of one sync (an expired one still writing, and its successor) cannot overwrite each other.
 */

export interface Checkpoint {
  value: Record<string, unknown>
  version: number
}

async function readCheckpoint(db: Queryable, sealer: Sealer, syncId: string): Promise<Checkpoint | null> {
  const row = await db
    .selectFrom('checkpoints')
    .select(['checkpoint', 'version'])
    .where('sync_id', '=', syncId)
    .executeTakeFirst()
  return row
    ? { value: openJson<Record<string, unknown>>(sealer, row.checkpoint), version: row.version }
    : null
}

/** The checkpoints of many syncs in one query (GET /sync/status); a sync without one is absent. */
export async function readCheckpoints(
  db: Queryable,
  sealer: Sealer,
  syncIds: readonly string[],
): Promise<Map<string, Checkpoint>> {
  if (syncIds.length === 0) return new Map()
  const rows = await db
    .selectFrom('checkpoints')
    .select(['sync_id', 'checkpoint', 'version'])
    .where('sync_id', 'in', [...syncIds])
    .execute()
  return new Map(
    rows.map((r) => [
      r.sync_id,
      { value: openJson<Record<string, unknown>>(sealer, r.checkpoint), version: r.version },
    ]),
  )
}

/**
 * Writes a checkpoint if nobody wrote one since `expectedVersion` was read (null: none existed).
 * Returns the new version, or null on a conflict.
 */
async function writeCheckpoint(
  db: Queryable,
  sealer: Sealer,
  syncId: string,
  value: Record<string, unknown>,
  expectedVersion: number | null,
): Promise<number | null> {
  const sealed = sealJson(sealer, value)
  if (expectedVersion === null) {
    const row = await db
      .insertInto('checkpoints')
      .values({ sync_id: syncId, checkpoint: sealed, version: 1 })
      .onConflict((oc) => oc.column('sync_id').doNothing())
      .returning('version')
      .executeTakeFirst()
    return row?.version ?? null
  }
  const row = await db
    .updateTable('checkpoints')
    .set({ checkpoint: sealed, version: sql`version + 1`, updated_at: new Date() })
    .where('sync_id', '=', syncId)
    .where('version', '=', expectedVersion)
    .returning('version')
    .executeTakeFirst()
  return row?.version ?? null
}

export async function clearCheckpoint(db: Queryable, syncId: string): Promise<void> {
  await db.deleteFrom('checkpoints').where('sync_id', '=', syncId).execute()
}

/**
 * Checkpoints are flat objects (Nango's rules): at most 16 keys of up to 255 characters, each value
 * a string (up to 4,000 characters), a number or a boolean. Dates arrive as ISO strings.
 */
const MAX_CHECKPOINT_KEYS = 16

function checkpointProblem(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return 'a checkpoint must be an object'
  }
  const entries = Object.entries(value)
  if (entries.length > MAX_CHECKPOINT_KEYS) return `a checkpoint has at most ${MAX_CHECKPOINT_KEYS} keys`
  for (const [key, v] of entries) {
    if (key.length === 0 || key.length > 255) {
      return `checkpoint key "${key.slice(0, 40)}" must have 1 to 255 characters`
    }
    if (typeof v === 'string') {
      if (v.length > 4000) return `checkpoint value "${key}" is longer than 4000 characters`
    } else if (typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) {
      return `checkpoint value "${key}" must be a string, a number or a boolean (no nesting)`
    }
  }
  return null
}

/**
 * The run's nango.getCheckpoint / saveCheckpoint / clearCheckpoint. The run remembers the version
 * it last read or wrote, and a save expects it: a save that finds another version was written by
 * someone else (checkpoint_conflict). Writes check the lease first, like every write of a run.
 */
export function checkpointHandlers({
  db,
  sealer,
  syncId,
  guard,
}: {
  db: Kysely<Database>
  sealer: Sealer
  syncId: string
  guard: WriteGuard
}): Pick<NangoHandlers, 'getCheckpoint' | 'saveCheckpoint' | 'clearCheckpoint'> {
  // undefined: not read yet in this run; null: there is none
  let version: number | null | undefined

  return {
    async getCheckpoint() {
      const checkpoint = await readCheckpoint(db, sealer, syncId)
      version = checkpoint?.version ?? null
      return checkpoint?.value ?? null
    },

    async saveCheckpoint(value) {
      const problem = checkpointProblem(value)
      if (problem) throw new Error(`invalid_checkpoint_format: ${problem}`)
      if (version === undefined) version = (await readCheckpoint(db, sealer, syncId))?.version ?? null
      const expected = version
      const written = await db.transaction().execute(async (trx) => {
        await guard(trx)
        return writeCheckpoint(trx, sealer, syncId, value as Record<string, unknown>, expected)
      })
      if (written === null) {
        throw new Error('checkpoint_conflict: the checkpoint was changed by someone else since it was read')
      }
      version = written
      return null
    },

    async clearCheckpoint() {
      await db.transaction().execute(async (trx) => {
        await guard(trx)
        await clearCheckpoint(trx, syncId)
      })
      version = null
      return null
    },
  }
}
