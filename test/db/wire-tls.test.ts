import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer } from '../../src/crypto.ts'
import { type Db, openDatabase } from '../../src/db/connect.ts'
import { migrateToLatest } from '../../src/db/migrate.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createLogger } from '../../src/logger.ts'
import { decodeCursor, type CursorPosition } from '../../src/records/cursor.ts'
import { type PageTarget, readPage } from '../../src/records/read.ts'
import { type Cluster, postgresBinDir, startCluster } from '../helpers/cluster.ts'
import { batchSave } from '../helpers/records.ts'

/**
 * src/db/wire.ts reads a plain connection's socket into one buffer it reuses for every read, and a
 * TLS connection's stream the way pg does. Both must read the same pages, here from a cluster of
 * the test's own with ssl on, records larger than the read buffer among them.
 */

const onPostgresBinaries = describe.skipIf(
  process.env.SYNCSTORE_TEST_DB === 'postgres' || postgresBinDir() === undefined,
)

onPostgresBinaries('WireClient', () => {
  let cluster: Cluster
  beforeAll(async () => {
    cluster = await startCluster({ tls: true })
  })
  afterAll(() => cluster?.destroy())

  it('reads the same pages over TLS as over a plain socket', async () => {
    const logger = createLogger('silent')
    const plain = await openDatabase({ kind: 'postgres', url: cluster.url() }, { logger })
    const tls = await openDatabase(
      { kind: 'postgres', url: `${cluster.url()}?sslmode=no-verify` },
      { logger },
    )
    try {
      await migrateToLatest(plain.kysely)
      const sealer = createSealer(null)
      const env = await ensureEnvironment(plain.kysely, 'dev')
      const input = { providerConfigKey: 'crm', connectionId: 'c1' }
      const connectionPk = (await upsertConnection(plain.kysely, sealer, env.id, input)).connection.id
      // Every 50th record is 200 KB, past the plain connection's 128 KiB read buffer.
      const records = Array.from({ length: 300 }, (_, i) => ({
        id: `r${i}`,
        text: 'é'.repeat(i % 50 === 7 ? 100_000 : i),
      }))
      await batchSave(plain.kysely, sealer, { connectionPk, model: 'M', variant: 'base' }, records)

      const ssl = async (db: Db) => {
        let on: string | null = null
        await db.eachRow('SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()', [], (row) => {
          on = row.text(0)
        })
        return on
      }
      expect(await ssl(tls)).toBe('true')
      expect(await ssl(plain)).toBe('false')

      const target: PageTarget = { environmentId: env.id, ...input, model: 'M', variant: 'base' }
      const pages = async (db: Db) => {
        const bodies: string[] = []
        let after: CursorPosition | undefined
        for (;;) {
          const page = (await readPage(db, sealer, target, { after, limit: 40, maxBytes: 1 << 26 }))!
          bodies.push(page.body.toString())
          if (page.nextCursor === null) return bodies
          after = decodeCursor(page.nextCursor)!
        }
      }
      const viaPlain = await pages(plain)
      expect(await pages(tls)).toEqual(viaPlain)
      const read = viaPlain.flatMap(
        (body) => (JSON.parse(body) as { records: { id: string; text: string }[] }).records,
      )
      expect(new Map(read.map((r) => [r.id, r.text]))).toEqual(new Map(records.map((r) => [r.id, r.text])))
    } finally {
      await plain.close()
      await tls.close()
    }
  })
})
