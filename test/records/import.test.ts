import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer } from '../../src/crypto.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { BASE_VARIANT, recordCount } from '../../src/records/datasets.ts'
import { IMPORT_BATCH_BYTES, IMPORT_BATCH_SIZE } from '../../src/records/import.ts'
import { readPage } from '../../src/records/read.ts'
import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli } from '../helpers/process.ts'
import { expectOneLineError } from '../helpers/cli-output.ts'

/**
 * `syncstore records import` through the real binary, one process per step, against a database of
 * its own (embedded folder or Postgres, whichever this project tests).
 */

let database: ProcessDatabase
let dir: string
const sealer = createSealer(null)
const MODEL = 'Contact'

beforeAll(async () => {
  database = await createProcessDatabase()
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-import-'))
  await createConnections()
})
afterAll(async () => {
  await killAll()
  await database?.destroy()
  await rm(dir, { recursive: true, force: true })
})

const cli = (...args: string[]) => runCli(['records', 'import', ...args], database.env)

/** A connection of its own for each test, so no test sees another's records; made in one go. */
const CONNECTIONS = ['batches', 'large', 'broken', 'blanks', 'variant', 'missing', 'usage'] as const
const conn = {} as Record<(typeof CONNECTIONS)[number], string>

async function createConnections(): Promise<void> {
  await database.withDb(async (db) => {
    const env = (await findEnvironment(db.kysely, 'dev'))!
    for (const name of CONNECTIONS) {
      conn[name] = `${name}-${randomBytes(4).toString('hex')}`
      await upsertConnection(db.kysely, sealer, env.id, {
        providerConfigKey: 'crm',
        connectionId: conn[name],
      })
    }
  })
}

async function writeNdjson(name: string, lines: string[]): Promise<string> {
  const file = path.join(dir, name)
  await writeFile(file, lines.join('\n') + '\n')
  return file
}

const recordLine = (n: number) => JSON.stringify({ id: `r${n}`, n, name: `Contact ${n}`, tags: ['import'] })
const numbered = (count: number) => Array.from({ length: count }, (_, i) => recordLine(i + 1))

interface WireRecord {
  id: string
  _nango_metadata: { last_modified_at: string }
}

/** What GET /records would return for the dataset, and the dataset's record_count. */
async function stored(connectionId: string, variant = BASE_VARIANT) {
  return database.withDb(async (db) => {
    const env = (await findEnvironment(db.kysely, 'dev'))!
    const target = { environmentId: env.id, providerConfigKey: 'crm', connectionId, model: MODEL, variant }
    const page = await readPage(db, sealer, target, { limit: 10_000, maxBytes: 1 << 30 })
    const wire = (JSON.parse(page!.body.toString()) as { records: WireRecord[] }).records
    const records = wire.map(({ _nango_metadata: meta, ...fields }) => ({
      externalId: fields.id,
      fields,
      lastModifiedAt: meta.last_modified_at,
    }))
    const ref = await db.kysely
      .selectFrom('connections')
      .select('id')
      .where('connection_id', '=', connectionId)
      .executeTakeFirstOrThrow()
    const count = await recordCount(db.kysely, { connectionPk: ref.id, model: MODEL, variant })
    return { records, ids: new Set(records.map((r) => r.externalId)), count }
  })
}

const target = (connectionId: string) => [
  '--env',
  'dev',
  '--integration',
  'crm',
  '--connection-id',
  connectionId,
]

// One process at a time: on the embedded database they share its lock.
describe('syncstore records import', { timeout: 240_000 }, () => {
  it('imports a 5,000-line file in batches of 2,000, and a re-import reports everything unchanged', async () => {
    expect(IMPORT_BATCH_SIZE).toBe(2000)
    const connectionId = conn.batches
    const file = await writeNdjson('contacts.ndjson', numbered(5000))

    const first = await cli(...target(connectionId), '--model', MODEL, file)
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toBe('')
    expect(first.stderr).toContain(
      `Imported 5000 records into ${MODEL} (base): 5000 added, 0 updated, 0 unchanged.`,
    )

    const after = await stored(connectionId)
    expect(after.records).toHaveLength(5000)
    expect(after.count).toBe(5000)
    expect(after.ids).toEqual(new Set(Array.from({ length: 5000 }, (_, i) => `r${i + 1}`)))
    const r1234 = after.records.find((r) => r.externalId === 'r1234')!
    expect(r1234.fields).toEqual({ id: 'r1234', n: 1234, name: 'Contact 1234', tags: ['import'] })
    // Three batches, three timestamps, in file order.
    const stamps = [...new Set(after.records.map((r) => r.lastModifiedAt))]
    expect(stamps).toHaveLength(3)
    expect(after.records[0]!.externalId).toBe('r1')
    expect(after.records[4999]!.externalId).toBe('r5000')

    const again = await cli(...target(connectionId), '--model', MODEL, file)
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toContain(
      'Imported 5000 records into Contact (base): 0 added, 0 updated, 5000 unchanged.',
    )
    const reimported = await stored(connectionId)
    expect(reimported.records.map((r) => [r.externalId, r.lastModifiedAt])).toEqual(
      after.records.map((r) => [r.externalId, r.lastModifiedAt]),
    )
    expect(reimported.count).toBe(5000)
  })

  it('cuts a batch of large records at IMPORT_BATCH_BYTES of JSON, however few they are', async () => {
    const connectionId = conn.large
    // 12 records of about 512 KiB: each batch closes at the record that reaches 2 MiB, the 4th.
    const big = 'x'.repeat(IMPORT_BATCH_BYTES / 4)
    const lines = Array.from({ length: 12 }, (_, i) => JSON.stringify({ id: `big${i + 1}`, big }))
    expect(lines[0]!.length).toBeGreaterThan(IMPORT_BATCH_BYTES / 4)
    const file = await writeNdjson('large.ndjson', lines)

    const result = await cli(...target(connectionId), '--model', MODEL, file)
    expect(result.code, result.stderr).toBe(0)
    expect(result.stderr).toContain('Imported 12 records into Contact (base): 12 added')
    const after = await stored(connectionId)
    expect(after.records.map((r) => r.externalId)).toEqual(lines.map((_, i) => `big${i + 1}`))
    // Three batches of four, three timestamps.
    const stamps = after.records.map((r) => r.lastModifiedAt)
    expect(new Set(stamps).size).toBe(3)
    expect(stamps.slice(0, 4).every((s) => s === stamps[0])).toBe(true)
    expect(stamps[4]).not.toBe(stamps[3])
  })

  it('stops at a bad line with its number and the file name, keeping earlier batches and nothing of its own', async () => {
    const connectionId = conn.broken
    const lines = numbered(5000)
    lines[3599] = '{"id": "r3600", "name": "broken'
    const file = await writeNdjson('broken-at-3600.ndjson', lines)

    const result = await cli(...target(connectionId), '--model', MODEL, file)
    const message = expectOneLineError(result, 1, /\bline 3600\b/)
    expect(message).toContain('broken-at-3600.ndjson')

    const after = await stored(connectionId)
    expect(after.ids).toEqual(new Set(Array.from({ length: 2000 }, (_, i) => `r${i + 1}`)))
    expect(after.count).toBe(2000)
  })

  it('counts blank lines in line numbers but skips them, and refuses an invalid record by its line', async () => {
    const connectionId = conn.blanks
    const ok = await writeNdjson('blanks.ndjson', [
      recordLine(1),
      '',
      '   ',
      recordLine(2),
      '',
      recordLine(3),
    ])
    const imported = await cli(...target(connectionId), '--model', MODEL, ok)
    expect(imported.code, imported.stderr).toBe(0)
    expect(imported.stderr).toContain('Imported 3 records into Contact (base): 3 added')

    const badRecord = await writeNdjson('no-id.ndjson', [
      recordLine(10),
      '',
      recordLine(11),
      '{"name":"no id"}',
      recordLine(12),
    ])
    expectOneLineError(
      await cli(...target(connectionId), '--model', MODEL, badRecord),
      1,
      /no-id\.ndjson line 4\b.*"id"/,
    )
    // Past the first 100 records of a batch, which are checked in a later turn of the event loop.
    const late = numbered(150).map((line, i) => (i === 129 ? '{"name":"no id either"}' : line))
    expectOneLineError(
      await cli(...target(connectionId), '--model', MODEL, await writeNdjson('late.ndjson', late)),
      1,
      /late\.ndjson line 130\b.*"id"/,
    )
    const deep = await writeNdjson('deep.ndjson', [
      recordLine(20),
      `{"id":"deep",${'"a":{'.repeat(100)}${'}'.repeat(100)}}`,
    ])
    expectOneLineError(
      await cli(...target(connectionId), '--model', MODEL, deep),
      1,
      /deep\.ndjson line 2\b.*"deep".*nested/,
    )

    const after = await stored(connectionId)
    expect(after.ids).toEqual(new Set(['r1', 'r2', 'r3']))
    expect(after.count).toBe(3)
  })

  it('imports into the variant given, leaving the base variant alone', async () => {
    const connectionId = conn.variant
    const file = await writeNdjson('variant.ndjson', numbered(5))
    const result = await cli(...target(connectionId), '--model', MODEL, '--variant', 'eu-1', file)
    expect(result.code, result.stderr).toBe(0)
    expect(result.stderr).toContain('Imported 5 records into Contact (eu-1): 5 added')
    expect((await stored(connectionId, 'eu-1')).count).toBe(5)
    expect((await stored(connectionId)).records).toHaveLength(0)
  })

  it('an unknown connection, environment or file is exit 1 and writes nothing', async () => {
    const file = await writeNdjson('orphan.ndjson', numbered(3))
    expectOneLineError(
      await cli(...target('no-such-connection'), '--model', MODEL, file),
      1,
      /no-such-connection/,
    )
    const connectionId = conn.missing
    expectOneLineError(
      await cli(
        '--env',
        'nope',
        '--integration',
        'crm',
        '--connection-id',
        connectionId,
        '--model',
        MODEL,
        file,
      ),
      1,
      /environment "nope"/,
    )
    expectOneLineError(
      await cli(...target(connectionId), '--model', MODEL, path.join(dir, 'missing.ndjson')),
      1,
      /missing\.ndjson/,
    )
    expect((await stored(connectionId)).count).toBe(0)
  })

  it('missing options, a bad model or variant, a missing file argument or an unknown option is a usage error (exit 2)', async () => {
    const connectionId = conn.usage
    const file = await writeNdjson('usage.ndjson', numbered(2))
    const cases: [string[], RegExp][] = [
      [[...target(connectionId), file], /--model/],
      [
        ['--connection-id', connectionId, '--model', MODEL, file],
        /--integration, --connection-id and --model/,
      ],
      [[...target(connectionId), '--model', 'contact', file], /--model/],
      [[...target(connectionId), '--model', 'C', file], /--model/],
      [[...target(connectionId), '--model', MODEL, '--variant', 'eu/1', file], /--variant/],
      [[...target(connectionId), '--model', MODEL], /expected <file>/],
      [[...target(connectionId), '--model', MODEL, '--bogus', file], /bogus/],
    ]
    // Arguments are checked before the database is opened, so these can run side by side.
    const results = await Promise.all(cases.map(([args]) => cli(...args)))
    results.forEach((result, i) => expectOneLineError(result, 2, cases[i]![1]))
    expect((await stored(connectionId)).count).toBe(0)
  })
})
