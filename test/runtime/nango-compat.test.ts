import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import { connect, type FakeApi, integrationJson, records, startApi } from './harness.ts'

/**
 * What a function written for Nango gets that a clone across the worker boundary would change, and
 * the members of Nango's SDK that need nothing from the server: bytes as a Buffer (and a stream),
 * log values as Nango keeps them (errors, cycles, functions), setLogger,
 * modelFullName, getFieldMapping / setFieldMapping, uncontrolledFetch, and a clear error for
 * another connection. Each sync is written as Nango's users write them: createSync from 'nango',
 * zod models.
 */

const sync = (body: string) => `
  import { createSync } from 'nango'
  import * as z from 'zod'

  const Report = z.object({ id: z.string() }).passthrough()

  export default createSync({
    description: 'test',
    version: '1.0.0',
    frequency: 'every day',
    autoStart: true,
    syncType: 'full',
    models: { Report },
    exec: async (nango) => {
      ${body}
    },
  })`

const save = (what: string) => `await nango.batchSave([{ id: 'out', ...(${what}) }], 'Report')`

const files = (base: string): Record<string, string> => ({
  'bytes/integration.json': integrationJson(base),
  'bytes/syncs/bytes.ts': sync(`
    const file = await nango.get({ endpoint: '/file.csv', responseType: 'arraybuffer', retries: 3 })
    const stream = await nango.get({ endpoint: '/file.csv', responseType: 'stream' })
    const chunks = []
    for await (const chunk of stream.data) chunks.push(chunk)
    let failed
    try {
      await nango.get({ endpoint: '/gone.csv', responseType: 'arraybuffer' })
    } catch (err) {
      failed = { status: err.response.status, isBuffer: Buffer.isBuffer(err.response.data), text: err.response.data.toString('utf8') }
    }
    ${save(`{
      isBuffer: Buffer.isBuffer(file.data),
      text: file.data.toString('utf8'),
      fromStream: Buffer.concat(chunks).toString('utf8'),
      failed,
    }`)}`),
  'logs/integration.json': integrationJson(base),
  'logs/syncs/logs.ts': sync(`
    const parsed = z.object({ name: z.string() }).safeParse({ name: 7 })
    await nango.log('zod', { error: parsed.error })
    try {
      await nango.get({ endpoint: '/gone.csv' })
    } catch (error) {
      await nango.log('request failed', { error }, { level: 'error' })
    }
    const loop = { name: 'loop', headers: { Authorization: 'Bearer secret' } }
    loop.self = loop
    await nango.log(loop)
    await nango.log('with a function', { keep: 1, callback: () => 1, big: 10n })
    await nango.log('array', ['a', 'b'])
    nango.setLogger({ level: 'warn' })
    await nango.log('dropped', { level: 'info' })
    await nango.log('kept', { level: 'warn' })
    nango.setLogger({ level: 'off' })
    nango.setLogger({ level: 'debug' })
    await nango.log('off stays off', { level: 'error' })
    ${save(`{ done: true }`)}`),
  'sdk/integration.json': integrationJson(base),
  'sdk/syncs/sdk.ts': sync(`
    await nango.setFieldMapping({ fieldMapping: { title: 'name' } })
    const mapping = await nango.getFieldMapping()
    const response = await nango.uncontrolledFetch({ url: new URL('${base}/plain'), method: 'POST', headers: { 'x-from': 'fn' }, body: 'hi' })
    const fetched = { status: response.status, body: await response.text() }
    const own = await nango.getConnection(nango.providerConfigKey, nango.connectionId)
    const refused = []
    for (const attempt of [
      () => nango.getConnection('other', 'conn-x'),
      () => nango.get({ endpoint: '/plain', connectionId: 'conn-x' }),
    ]) {
      try {
        await attempt()
        refused.push('no error')
      } catch (err) {
        refused.push(err.message)
      }
    }
    ${save(`{ mapping, model: nango.modelFullName('Report'), fetched, own: own.connection_id, refused }`)}`),
})

let external: FakeApi
let t: TestServer

beforeAll(async () => {
  external = await startApi(({ method, path, headers, body }) => {
    if (path === '/file.csv') return { body: 'id,name\n1,ada' }
    if (path === '/plain' && method === 'POST') return { body: { got: body, from: headers['x-from'] } }
    return { status: 410, body: { error: 'gone' } }
  })
  t = await startTestServer(files(external.url))
})
afterAll(async () => {
  await t?.close()
  await external?.close()
})

const report = async (pck: string, connection: string) =>
  (await records(t, pck, connection, 'Report')).get('out') as Record<string, unknown> | undefined

it('hands bytes over as a Buffer (and a stream), as axios does, for an answer and a failed request', async () => {
  const { bytes } = await connect(t, 'bytes', 'conn-bytes', ['bytes'])
  expect(bytes).toMatchObject({ state: 'SUCCEEDED' })
  // The API answers JSON text, which the proxy reads as bytes when asked to
  const text = JSON.stringify('id,name\n1,ada')
  expect(await report('bytes', 'conn-bytes')).toMatchObject({
    isBuffer: true,
    text,
    fromStream: text,
    failed: { status: 410, isBuffer: true, text: '{"error":"gone"}' },
  })
})

it('logs what Nango logs: errors with their fields, cycles, no functions; setLogger filters', async () => {
  const { logs: run } = await connect(t, 'logs', 'conn-logs', ['logs'])
  expect(run).toMatchObject({ state: 'SUCCEEDED' })
  const lines = await listRunLogs(t.database.db.kysely, run!.id)
  expect(lines.map((l) => [l.level, l.message])).toEqual([
    ['info', 'zod'],
    ['error', 'request failed'],
    ['info', expect.stringContaining('"name":"loop"')],
    ['info', 'with a function'],
    ['info', 'array'],
    ['warn', 'kept'],
  ])
  const [zod, failed, loop, fn, array] = lines
  // A clone keeps nothing of an error here; JSON (Nango's) keeps its name and message, the issues
  const zodError = (zod!.payload as { error: { name: string; message: string } }).error
  expect(zodError.name).toBe('ZodError')
  expect(JSON.parse(zodError.message)).toMatchObject([{ code: 'invalid_type', path: ['name'] }])
  expect(failed!.payload).toMatchObject({
    error: { status: 410, response: { status: 410, data: { error: 'gone' } } },
  })
  expect((failed!.payload as { error: { message: string } }).error.message).toMatch(/answered 410/)
  expect(JSON.parse(loop!.message)).toEqual({
    name: 'loop',
    headers: { Authorization: '[Redacted]' },
    self: '[Circular]',
  })
  expect(fn!.payload).toEqual({ keep: 1, big: '10' })
  expect(array!.payload).toEqual(['a', 'b'])
})

it("has Nango's field mapping, modelFullName and uncontrolledFetch; another connection is a clear error", async () => {
  const { sdk } = await connect(t, 'sdk', 'conn-sdk', ['sdk'], { metadata: { old: true } })
  expect(sdk).toMatchObject({ state: 'SUCCEEDED' })
  const out = await report('sdk', 'conn-sdk')
  expect(out).toMatchObject({
    mapping: { title: 'name' },
    model: 'Report',
    fetched: { status: 200, body: JSON.stringify({ got: 'hi', from: 'fn' }) },
    own: 'conn-sdk',
  })
  expect(out!.refused).toEqual([
    expect.stringMatching(
      /^nango\.getConnection: syncstore serves only the run's own connection \(sdk\/conn-sdk\), not other\/conn-x$/,
    ),
    expect.stringMatching(/^nango\.proxy \/plain: .* not sdk\/conn-x$/),
  ])
  // The request to another connection never left
  expect(external.requests.filter((r) => r.path === '/plain')).toHaveLength(1)
})
