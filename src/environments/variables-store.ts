import { type Sealer, openJson, sealJson } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'

export interface EnvironmentVariable {
  name: string
  value: string
}

export async function setVariable(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  name: string,
  value: string,
): Promise<void> {
  const sealed = sealJson(sealer, value)
  await db
    .insertInto('environment_variables')
    .values({ environment_id: environmentId, name, value: sealed })
    .onConflict((oc) =>
      oc.columns(['environment_id', 'name']).doUpdateSet({ value: sealed, updated_at: new Date() }),
    )
    .execute()
}

export async function listVariables(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
): Promise<EnvironmentVariable[]> {
  const rows = await db
    .selectFrom('environment_variables')
    .select(['name', 'value'])
    .where('environment_id', '=', environmentId)
    .orderBy('name')
    .execute()
  return rows.map((row) => ({ name: row.name, value: openJson<string>(sealer, row.value) }))
}

/** Returns whether a variable was removed. */
export async function unsetVariable(db: Queryable, environmentId: number, name: string): Promise<boolean> {
  const result = await db
    .deleteFrom('environment_variables')
    .where('environment_id', '=', environmentId)
    .where('name', '=', name)
    .executeTakeFirst()
  return result.numDeletedRows > 0n
}
