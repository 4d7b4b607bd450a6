import type { Config } from '../config.ts'
import { sha256Hex } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'
import { ensureEnvironment, findEnvironment } from '../environments/store.ts'
import { FULL_ACCESS } from './scopes.ts'
import { createKey } from './store.ts'

/** A bootstrap key from NANGO_SECRET_KEY_<ENV>, resolved to its environment at start-up. */
export interface BootstrapKey {
  keyHash: string
  environmentId: number
  environment: string
}

/** NANGO_SECRET_KEY_<ENV> keys, with their environments created if missing. */
export async function resolveBootstrapKeys(db: Queryable, config: Config): Promise<BootstrapKey[]> {
  const keys: BootstrapKey[] = []
  for (const { environment, key } of config.bootstrapKeys) {
    const env = await ensureEnvironment(db, environment)
    keys.push({ keyHash: sha256Hex(key), environmentId: env.id, environment: env.name })
  }
  return keys
}

/**
 * On the very first start of an installation, issue a full-access dev key so curl works at once.
 * The marker row makes this happen once, even with several instances starting together.
 */
export async function issueFirstDevKey(db: Queryable): Promise<string | null> {
  const marker = await db
    .insertInto('instance_markers')
    .values({ name: 'first_dev_key' })
    .onConflict((oc) => oc.column('name').doNothing())
    .returning('name')
    .executeTakeFirst()
  if (!marker) return null
  const dev = await findEnvironment(db, 'dev')
  if (!dev) return null
  const { secret } = await createKey(db, dev.id, FULL_ACCESS)
  return secret
}
