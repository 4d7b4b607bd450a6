import { randomBytes } from 'node:crypto'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { createSealer } from '../../src/crypto.ts'
import { type Db, openDatabase } from '../../src/db/connect.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createLogger } from '../../src/logger.ts'
import { reconcileDue } from '../../src/nango/reconcile.ts'
import { deletePairing, pairingOf, pairingStatuses, savePairing } from '../../src/nango/store.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { type NangoStandIn, startNangoStandIn } from './nango-api.ts'

/**
 * The reconcile as two server processes run it: each pass claims what is due, and a paired
 * environment is reconciled by one of them at a time (decided by Postgres, not by a process).
 */

const sealer = createSealer(randomBytes(32))
let database: TestDatabase
/** A second connection pool, as another process has (the embedded database has exactly one). */
let other: Db
let nango: NangoStandIn

beforeAll(async () => {
  database = await createTestDatabase()
  other =
    database.target.kind === 'postgres'
      ? await openDatabase(database.target, { logger: createLogger('silent') })
      : database.db
  nango = await startNangoStandIn('reconcile-key')
})
afterAll(async () => {
  if (other !== database.db) await other.close()
  await database.destroy()
  await nango.close()
})

it('stores the secret key and webhook secret encrypted, and opens them for pairingOf', async () => {
  const env = await ensureEnvironment(database.db.kysely, `sealed-${randomBytes(3).toString('hex')}`)
  await savePairing(
    database.db.kysely,
    sealer,
    { environmentId: env.id, url: nango.url, secretKey: 'the-key', webhookSecret: 'the-secret' },
    { leaseMs: 0, intervalMs: 0 },
  )
  const row = await database.db.kysely
    .selectFrom('nango_pairings')
    .select(['secret_key', 'webhook_secret'])
    .where('environment_id', '=', env.id)
    .executeTakeFirstOrThrow()
  for (const stored of [row.secret_key, row.webhook_secret!]) {
    expect(stored).toMatch(/^enc:v1:/)
    expect(stored).not.toContain('the-')
  }
  expect(await pairingOf(database.db.kysely, sealer, env.id)).toEqual({
    environmentId: env.id,
    url: nango.url,
    secretKey: 'the-key',
    webhookSecret: 'the-secret',
  })
  expect(await deletePairing(database.db.kysely, env.id)).toBe(true)
  expect(await pairingOf(database.db.kysely, sealer, env.id)).toBeUndefined()
})

it('two processes reconciling at once: one does it, once; the next is due an interval later', async () => {
  const env = await ensureEnvironment(database.db.kysely, `twice-${randomBytes(3).toString('hex')}`)
  for (let i = 0; i < 5; i++) {
    nango.put({ connection_id: `c-${i}`, provider_config_key: 'acme', provider: 'acme-api' })
  }
  // Due and free at once, as after a pairing whose command died.
  await savePairing(
    database.db.kysely,
    sealer,
    { environmentId: env.id, url: nango.url, secretKey: 'reconcile-key', webhookSecret: null },
    { leaseMs: 0, intervalMs: 0 },
  )
  const before = nango.requests.length
  const pass = (db: Db) => reconcileDue(db.kysely, sealer, { intervalMs: 60_000 })
  const [a, b] = await Promise.all([pass(database.db), pass(other)])
  const outcomes = [...a!, ...b!].filter((o) => o.counts.listed > 0 || o.error)
  expect(outcomes).toEqual([{ counts: { listed: 5, added: 5, deleted: 0, kept: 0 }, error: null }])
  // One listing (pages of two, then the empty page), one read per new connection.
  const requests = nango.requests.slice(before)
  expect(requests.filter((r) => r.startsWith('GET /connections?'))).toHaveLength(4)
  expect(requests.filter((r) => r.startsWith('GET /connections/'))).toHaveLength(5)

  // Not due again for a minute, whoever asks.
  expect([...(await pass(database.db)), ...(await pass(other))]).toEqual([])
  const [status] = await pairingStatuses(database.db.kysely, env.id)
  expect(status!.lastReconcile).toMatchObject({
    outcome: 'succeeded',
    counts: { listed: 5, added: 5, deleted: 0, kept: 0 },
  })
  const count = await database.db.kysely
    .selectFrom('connections')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('environment_id', '=', env.id)
    .executeTakeFirstOrThrow()
  expect(Number(count.n)).toBe(5)
})
