import { afterAll, beforeAll, expect, it } from 'vitest'

import { setVariable } from '../../src/environments/variables-store.ts'
import { listRunLogs, type RunLogLine } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import { connect, records, type RunRow, status } from './harness.ts'

/**
 * The rest of the `nango` object, from inside a sync function: schema validation of batchSave,
 * undeclared models, batchUpdate / batchDelete, getConnection, getEnvironmentVariables,
 * checkpoints, log levels and order; and how a run's counts and committed batches are kept.
 */

const FILES = {
  'kit/syncs/everything.ts': `
    import { createSync } from 'syncstore'
    export default createSync({
      description: 'Exercises the nango object', frequency: 'every hour',
      models: {
        Item: {
          type: 'object',
          properties: { id: { type: 'string' }, n: { type: 'integer' }, tag: { type: 'string' } },
          required: ['id', 'n'],
        },
        Note: { type: 'object', properties: { id: { type: 'string' }, text: { type: 'string' } }, required: ['id'] },
      },
      async exec(nango) {
        // Reports what a call threw instead of failing the run.
        const attempt = async (label: string, call: () => Promise<unknown>) => {
          try {
            await call()
            await nango.log(label + ': no error')
          } catch (err) {
            await nango.log(label + ': ' + (err as Error).message, { level: 'warn' })
          }
        }
        await nango.log('starting', { variant: nango.variant, connectionId: nango.connectionId }, { level: 'debug' })
        await nango.batchSave([{ id: 'a', n: 1 }, { id: 'b', n: 2 }, { id: 'c', n: 3 }], 'Item')
        await attempt('invalid', () => nango.batchSave([{ id: 'd', n: 4 }, { id: 'e', n: 'five' }], 'Item'))
        await attempt('undeclared', () => nango.batchSave([{ id: 'x' }], 'Invoice'))
        await attempt('nested checkpoint', () => nango.saveCheckpoint({ cursor: { page: 2 } } as never))
        await nango.batchUpdate([{ id: 'a', tag: 'edited' }], 'Item')
        await nango.batchDelete([{ id: 'b' }], 'Item')
        await nango.batchSave([{ id: 'n1', text: 'hello' }], 'Note')
        const connection = await nango.getConnection()
        await nango.log('connection', { id: connection.connection_id, credentials: connection.credentials })
        await nango.log('variables', await nango.getEnvironmentVariables())
        await nango.saveCheckpoint({ page: 3, done: true, at: new Date('2024-05-01T00:00:00Z') })
        await nango.log('checkpoint', await nango.getCheckpoint())
        await nango.log('done', { level: 'error' })
      },
    })`,
  'partial/syncs/halfway.ts': `
    import { createSync } from 'syncstore'
    export default createSync({
      description: 'Fails on its third page', frequency: 'every hour',
      models: { Row: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
      async exec(nango) {
        for (let page = 1; page <= 3; page++) {
          if (page === 3) throw new Error('page 3 could not be fetched')
          await nango.batchSave([{ id: 'p' + page + '-1' }, { id: 'p' + page + '-2' }], 'Row')
        }
      },
    })`,
}

let t: TestServer
let run: RunRow
let logs: RunLogLine[]

beforeAll(async () => {
  // strict: the batch with an invalid record fails (the default, warn, is in validation.test.ts)
  t = await startTestServer(FILES, { SYNCSTORE_RECORD_VALIDATION: 'strict' })
  await setVariable(t.database.db.kysely, t.sealer, t.envId, 'REGION', 'eu-west-1')
  await setVariable(t.database.db.kysely, t.sealer, t.envId, 'API_HOST', 'api.example.com')
  run = (
    await connect(t, 'kit', 'conn-1', ['everything'], {
      credentials: { type: 'API_KEY', apiKey: 'key-123456789' },
    })
  ).everything!
  logs = await listRunLogs(t.database.db.kysely, run.id)
})
afterAll(() => t?.close())

const logged = (prefix: string) => logs.find((l) => l.message.startsWith(prefix))

it('the run succeeds and stores its log lines in order, with their levels and payloads', () => {
  expect(run.state, run.error ?? '').toBe('SUCCEEDED')
  expect(logs.map((l) => [l.seq, l.level, l.message.split(':')[0]])).toEqual([
    [1, 'debug', 'starting'],
    [2, 'warn', 'invalid'],
    [3, 'warn', 'undeclared'],
    [4, 'warn', 'nested checkpoint'],
    [5, 'info', 'connection'],
    [6, 'info', 'variables'],
    [7, 'info', 'checkpoint'],
    [8, 'error', 'done'],
  ])
  expect(logs[0]!.payload).toEqual({ variant: 'base', connectionId: 'conn-1' })
  // Nango's two-argument form log(message, { level }): the object is the options, not a payload.
  expect(logs[7]!.payload).toBeNull()
  expect(logged('invalid')!.payload).toBeNull()
})

it('strict: batchSave of a record that breaks the schema fails, naming the record and the violation, and writes nothing of that batch', async () => {
  expect(logged('invalid')!.message).toBe('invalid: Invalid Item record e: /n must be integer')
  const items = await records(t, 'kit', 'conn-1', 'Item')
  expect(items.has('d')).toBe(false)
  expect(items.has('e')).toBe(false)
})

it('batchSave to a model the sync does not declare fails', () => {
  expect(logged('undeclared')!.message).toBe(
    "undeclared: The model 'Invoice' is not included in the declared sync models: Item, Note",
  )
})

it('a nested checkpoint is refused; a flat one is saved, dates as ISO strings', async () => {
  expect(logged('nested checkpoint')!.message).toMatch(/^nested checkpoint: invalid_checkpoint_format: /)
  const expected = { page: 3, done: true, at: '2024-05-01T00:00:00.000Z' }
  expect(logged('checkpoint')!.payload).toEqual(expected)
  expect((await status(t, 'kit', 'conn-1', 'everything')).checkpoint).toEqual(expected)
})

it('batchUpdate merges into a record, batchDelete deletes one', async () => {
  const items = await records(t, 'kit', 'conn-1', 'Item')
  expect(items.get('a')).toMatchObject({
    id: 'a',
    n: 1,
    tag: 'edited',
    _nango_metadata: { last_action: 'UPDATED' },
  })
  expect(items.get('b')!._nango_metadata).toMatchObject({ last_action: 'DELETED' })
  expect(items.get('c')).toMatchObject({ n: 3, _nango_metadata: { last_action: 'ADDED' } })
})

it('getConnection returns the connection with its credentials', () => {
  expect(logged('connection')!.payload).toEqual({
    id: 'conn-1',
    credentials: expect.objectContaining({ type: 'API_KEY', apiKey: 'key-123456789' }),
  })
})

it('getEnvironmentVariables returns the environment variables', () => {
  expect(logged('variables')!.payload).toEqual([
    { name: 'API_HOST', value: 'api.example.com' },
    { name: 'REGION', value: 'eu-west-1' },
  ])
})

it('latestResult counts what the run added, updated and deleted, per model', async () => {
  const expected = {
    Item: { added: 3, updated: 1, deleted: 1 },
    Note: { added: 1, updated: 0, deleted: 0 },
  }
  expect(run.result).toEqual(expected)
  expect(await status(t, 'kit', 'conn-1', 'everything')).toMatchObject({
    status: 'SUCCESS',
    latestResult: expected,
    recordCount: { Item: 2, Note: 1 },
  })
})

it('a failed run keeps the batches it committed before failing', async () => {
  const { halfway } = await connect(t, 'partial', 'conn-1', ['halfway'])
  expect(halfway!.state).toBe('FAILED')
  expect(halfway!.error).toBe('Error: page 3 could not be fetched')
  expect(halfway!.result).toEqual({ Row: { added: 4, updated: 0, deleted: 0 } })
  const rows = await records(t, 'partial', 'conn-1', 'Row')
  expect([...rows.keys()].sort()).toEqual(['p1-1', 'p1-2', 'p2-1', 'p2-2'])
  expect(await status(t, 'partial', 'conn-1', 'halfway')).toMatchObject({
    status: 'ERROR',
    latestExecutionStatus: 'STOPPED',
    recordCount: { Row: 4 },
  })
})
