import { execFile, spawn } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { killAll, ROOT, type ServerProcess, startServer } from './helpers/process.ts'

/**
 * The README's commands, run as a new user would run them: a first start on an empty embedded
 * database, the printed key, the curl and CLI lines of "The first five minutes", then the files and
 * commands of "Write your own sync". Only the port (and `npx syncstore`, which becomes the same
 * binary by path) differ from the text. Each `# <status> <code>` comment is an expected error.
 */
const README = await readFile(path.join(ROOT, 'README.md'), 'utf8')
const BIN = path.join(ROOT, 'bin', 'syncstore.js')
const run = promisify(execFile)

function blocks(marker: RegExp): { tag: string; body: string }[] {
  const found = []
  const re = /<!-- (readme-(?:test|file)[^>]*) -->\n+```\w*\n([\s\S]*?)```/g
  for (const m of README.matchAll(re)) if (marker.test(m[1]!)) found.push({ tag: m[1]!, body: m[2]! })
  return found
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

const embedded = process.env.SYNCSTORE_TEST_DB !== 'postgres'
let dir: string
let env: Record<string, string>
let server: ServerProcess
let key: string

async function start(): Promise<ServerProcess> {
  return startServer(env, { cwd: dir })
}

/** Runs a README shell block against the running server; returns its output. */
async function shell(body: string): Promise<string> {
  const script = body
    .replaceAll('localhost:3003', `localhost:${server.port}`)
    .replaceAll('npx syncstore', `node ${BIN}`)
  const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', script], {
    cwd: dir,
    env: { ...env, PATH: process.env.PATH ?? '', KEY: key },
    timeout: 120_000,
  })
  return stdout
}

beforeAll(async () => {
  if (!embedded) return
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-readme-'))
  // The README's defaults, in a folder of its own: ./.syncstore/data and ./integrations.
  env = { SYNCSTORE_DATA_DIR: path.join(dir, '.syncstore', 'data'), PORT: String(await freePort()) }
  server = await start()
  key = (await server.waitForStderr(/^\s+([0-9a-f-]{36})$/m))[1]!
})

afterAll(async () => {
  await killAll()
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe.skipIf(!embedded)('README', () => {
  it('finds the README blocks it runs (a formatting change must not silently skip them)', () => {
    expect(blocks(/^readme-test$/).length).toBeGreaterThanOrEqual(5)
    expect(blocks(/^readme-file: /)).toHaveLength(2)
    expect(blocks(/^readme-test: tutorial$/)).toHaveLength(1)
  })

  it('first start prints a dev key and a curl line that works as written', async () => {
    const curl = (await server.waitForStderr(/^\s+(curl .*)$/m))[1]!
    expect(JSON.parse(await shell(curl))).toEqual([])
  })

  it.each(blocks(/^readme-test$/).map((b, i) => [i + 1, b.body]))(
    'first five minutes, block %i works as written',
    async (_, body) => {
      // The demo sync runs at start-up; its first records may take a moment.
      for (let i = 0; i < 100; i++) {
        const records = await shell(blocks(/^readme-test$/)[0]!.body)
        if ((JSON.parse(records) as { records: unknown[] }).records.length > 0) break
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      const output = await shell(body)
      const expected = [...body.matchAll(/# \d{3} (\w+)/g)].map((m) => m[1]!)
      for (const code of expected) expect(output).toContain(`"code":"${code}"`)
      if (expected.length === 0) expect(output).not.toContain('"error"')
    },
  )

  // A restart and three CLI runs (tsx start-up each): 25 s on a loaded 2-core machine.
  it('"Write your own sync" works as written', { timeout: 120_000 }, async () => {
    const apiPort = await freePort()
    const api = spawn(process.execPath, [path.join(ROOT, 'examples/tutorial/tickets-api.mjs')], {
      env: { ...process.env, PORT: String(apiPort) },
      stdio: 'ignore',
    })
    try {
      for (const { tag, body } of blocks(/^readme-file: /)) {
        const file = path.join(dir, tag.replace('readme-file: ', ''))
        await mkdir(path.dirname(file), { recursive: true })
        await writeFile(file, body.replaceAll('127.0.0.1:4010', `127.0.0.1:${apiPort}`))
      }
      server.kill('SIGTERM')
      expect((await server.waitForExit(30_000)).code).toBe(0)
      server = await start()
      const [tutorial] = blocks(/^readme-test: tutorial$/)
      const output = await shell(tutorial!.body)
      expect(output).not.toContain('"error"')
      let page: { records: { id: string; status: string }[] } = { records: [] }
      for (let i = 0; i < 100 && page.records.length < 12; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200))
        page = JSON.parse(await shell(tutorial!.body.split('\n').slice(-4, -2).join('\n'))) as typeof page
      }
      expect(page.records.map((r) => r.id)).toHaveLength(12)
      expect(await shell('npx syncstore runs list --integration tickets')).toContain('SUCCEEDED')
    } finally {
      api.kill()
    }
  })
})
