import type { Queryable } from '../db/database.ts'

export interface Environment {
  id: number
  name: string
}

export const ENVIRONMENT_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/

export async function findEnvironment(db: Queryable, name: string): Promise<Environment | undefined> {
  return db.selectFrom('environments').select(['id', 'name']).where('name', '=', name).executeTakeFirst()
}

export async function listEnvironments(db: Queryable): Promise<Environment[]> {
  return db.selectFrom('environments').select(['id', 'name']).orderBy('id').execute()
}

/** Creates the environment if it does not exist; safe when several instances start at once. */
export async function ensureEnvironment(db: Queryable, name: string): Promise<Environment> {
  await db
    .insertInto('environments')
    .values({ name })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute()
  const env = await findEnvironment(db, name)
  if (!env) throw new Error(`environment ${name} vanished while being created`)
  return env
}
