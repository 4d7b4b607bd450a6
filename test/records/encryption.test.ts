import { createHash, randomBytes } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer, DecryptionError } from '../../src/crypto.ts'
import { BASE_VARIANT, type Dataset } from '../../src/records/datasets.ts'
import { readPage } from '../../src/records/read.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import { batchDelete, batchSave, batchUpdate } from '../helpers/records.ts'

/** Record payloads at rest with SYNCSTORE_ENCRYPTION_KEY: sealed in the table, plaintext through GET. */

/** Distinctive plaintexts, so a search of the raw rows cannot miss them. */
const SECRET = 'rec-PLAINTEXT-5e7a'
const LATER = 'upd-PLAINTEXT-c3d9'

let t: TestApp
const plain = createSealer(null)

beforeAll(async () => {
  t = await startTestApp({ env: { SYNCSTORE_ENCRYPTION_KEY: randomBytes(32).toString('base64') } })
})
afterAll(() => t.close())

const db = () => t.db.kysely
const MODEL = 'Contact'

async function newDataset(): Promise<{ ds: Dataset; connectionId: string }> {
  const connectionId = `conn-${randomBytes(4).toString('hex')}`
  const { connection } = await upsertConnection(db(), t.sealer, t.envIds.dev, {
    providerConfigKey: 'crm',
    connectionId,
  })
  return { ds: { connectionPk: connection.id, model: MODEL, variant: BASE_VARIANT }, connectionId }
}

async function raw(ds: Dataset) {
  const { rows } = await sql<{ external_id: string; payload: string | null; payload_hash: string }>`
    SELECT external_id, payload, payload_hash FROM records
    WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
    ORDER BY external_id`.execute(db())
  return rows
}

/** GET /records through the app configured with the key. */
async function get(connectionId: string) {
  const res = await t.app.inject({
    url: `/records?model=${MODEL}`,
    headers: { ...bearer(t.keys.dev), 'connection-id': connectionId, 'provider-config-key': 'crm' },
  })
  expect(res.statusCode, res.body).toBe(200)
  return (res.json() as { records: Record<string, unknown>[] }).records
}

const sha256 = (text: string, encoding: 'hex' | 'base64') =>
  createHash('sha256').update(text).digest(encoding)

describe('with SYNCSTORE_ENCRYPTION_KEY', () => {
  it('stores payloads sealed, with no plaintext in the raw column, and GET returns the plaintext', async () => {
    const { ds, connectionId } = await newDataset()
    const record = { id: 'r1', note: SECRET, nested: { list: [SECRET] } }
    expect((await batchSave(db(), t.sealer, ds, [record])).added).toEqual(['r1'])

    const [stored] = await raw(ds)
    expect(stored!.payload).toMatch(/^enc:v1:[A-Za-z0-9+/]+=*$/)
    expect(stored!.payload).not.toContain(SECRET)
    expect(stored!.payload).not.toContain('note')
    expect(t.sealer.open(stored!.payload!)).toBe(JSON.stringify(record))

    const records = await get(connectionId)
    expect(records).toHaveLength(1)
    expect(records[0]).toMatchObject({ ...record, _nango_metadata: { last_action: 'ADDED' } })
    expect(Object.keys(records[0]!)).toEqual(['id', 'note', 'nested', '_nango_metadata'])
  })

  it('fingerprints are keyed, not plain SHA-256, and stable, so identical re-saves are still unchanged', async () => {
    const { ds } = await newDataset()
    const record = { id: 'f1', note: SECRET }
    const json = JSON.stringify(record)
    await batchSave(db(), t.sealer, ds, [record])
    const [first] = await raw(ds)
    expect(first!.payload_hash).not.toBe(sha256(json, 'base64'))
    expect(first!.payload_hash).not.toBe(sha256(json, 'hex'))
    expect(first!.payload_hash).toBe(t.sealer.fingerprint(json))
    expect(first!.payload_hash).not.toBe(createSealer(randomBytes(32)).fingerprint(json))

    expect((await batchSave(db(), t.sealer, ds, [record])).unchanged).toEqual(['f1'])
    expect(await raw(ds)).toEqual([first])
    expect((await batchSave(db(), t.sealer, ds, [{ ...record, more: 1 }])).updated).toEqual(['f1'])
  })

  it('seals the same record differently each time (random nonce)', async () => {
    const a = await newDataset()
    const b = await newDataset()
    await batchSave(db(), t.sealer, a.ds, [{ id: 'same', note: SECRET }])
    await batchSave(db(), t.sealer, b.ds, [{ id: 'same', note: SECRET }])
    const [[ra], [rb]] = [await raw(a.ds), await raw(b.ds)]
    expect(ra!.payload).not.toBe(rb!.payload)
    expect(ra!.payload_hash).toBe(rb!.payload_hash)
  })

  it('batchUpdate merges into the sealed payload and batchDelete keeps it sealed', async () => {
    const { ds, connectionId } = await newDataset()
    await batchSave(db(), t.sealer, ds, [{ id: 'u1', note: SECRET, meta: { a: 1 } }])
    expect((await batchUpdate(db(), t.sealer, ds, [{ id: 'u1', meta: { b: LATER } }])).updated).toEqual([
      'u1',
    ])
    let [stored] = await raw(ds)
    expect(stored!.payload).not.toContain(SECRET)
    expect(stored!.payload).not.toContain(LATER)
    expect((await get(connectionId))[0]).toMatchObject({ id: 'u1', note: SECRET, meta: { a: 1, b: LATER } })

    expect((await batchDelete(db(), ds, [{ id: 'u1' }])).deleted).toEqual(['u1'])
    ;[stored] = await raw(ds)
    expect(stored!.payload).toMatch(/^enc:v1:/)
    expect((await get(connectionId))[0]).toMatchObject({
      id: 'u1',
      note: SECRET,
      _nango_metadata: { last_action: 'DELETED' },
    })
  })

  it('cannot be read without the key, nor with another key', async () => {
    const { ds, connectionId } = await newDataset()
    await batchSave(db(), t.sealer, ds, [{ id: 'k1', note: SECRET }])
    const target = {
      environmentId: t.envIds.dev,
      providerConfigKey: 'crm',
      connectionId,
      model: MODEL,
      variant: 'base',
    }
    const query = { limit: 100, maxBytes: 1 << 20 }
    await expect(readPage(t.db, plain, target, query)).rejects.toThrow(DecryptionError)
    await expect(readPage(t.db, createSealer(randomBytes(32)), target, query)).rejects.toThrow(
      DecryptionError,
    )
    const page = await readPage(t.db, t.sealer, target, query)
    const { records } = JSON.parse(page!.body.toString()) as { records: { _nango_metadata: unknown }[] }
    expect(records.map(({ _nango_metadata, ...record }) => record)).toEqual([{ id: 'k1', note: SECRET }])
  })
})

describe('records written before a key was configured', () => {
  it('stay readable through GET, can be updated, and are sealed when written again', async () => {
    const { ds, connectionId } = await newDataset()
    await batchSave(db(), plain, ds, [
      { id: 'old-1', note: SECRET },
      { id: 'old-2', note: SECRET, meta: { a: 1 } },
      { id: 'old-3', note: SECRET },
    ])
    const before = await raw(ds)
    expect(before.every((r) => r.payload!.startsWith('{"id":'))).toBe(true)
    expect(before[0]!.payload_hash).toBe(sha256(before[0]!.payload!, 'base64'))

    // Now the app holds a key: the plaintext rows read as they are.
    const records = await get(connectionId)
    expect(records.map((r) => r.id).sort()).toEqual(['old-1', 'old-2', 'old-3'])
    expect(records.every((r) => r.note === SECRET)).toBe(true)

    // A write with the key seals the row (the keyed fingerprint differs from the old one, so the
    // re-save counts as a change; never as an addition).
    const saved = await batchSave(db(), t.sealer, ds, [{ id: 'old-1', note: SECRET }])
    expect(saved.added).toEqual([])
    expect((await batchUpdate(db(), t.sealer, ds, [{ id: 'old-2', meta: { b: 2 } }])).updated).toEqual([
      'old-2',
    ])
    const after = await raw(ds)
    expect(after.map((r) => r.payload!.startsWith('enc:v1:'))).toEqual([true, true, false])
    expect(after.some((r) => r.external_id !== 'old-3' && r.payload!.includes(SECRET))).toBe(false)

    const again = await get(connectionId)
    expect(again.find((r) => r.id === 'old-1')).toMatchObject({ note: SECRET })
    expect(again.find((r) => r.id === 'old-2')).toMatchObject({ note: SECRET, meta: { a: 1, b: 2 } })
    expect(again.find((r) => r.id === 'old-3')).toMatchObject({ note: SECRET })
  })
})
