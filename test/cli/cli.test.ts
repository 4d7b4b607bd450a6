import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { findConnection } from '../../src/connections/store.ts'
import { createSealer, sha256Hex } from '../../src/crypto.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { findActiveKey } from '../../src/keys/store.ts'
import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli, UUID_V4 } from '../helpers/process.ts'
import { expectOneLineError } from '../helpers/cli-output.ts'

/**
 * The `syncstore` command as a user runs it: the real binary, one process per command, against a
 * database of its own (embedded folder or Postgres, whichever this project tests).
 */

let database: ProcessDatabase
const databases: ProcessDatabase[] = []

beforeAll(async () => {
  database = await createProcessDatabase()
  databases.push(database)
})
afterAll(async () => {
  await killAll()
  await Promise.all(databases.map((d) => d.destroy()))
})

const cli = (...args: string[]) => runCli(args, database.env)

async function createKey(...args: string[]): Promise<string> {
  const result = await cli('keys', 'create', ...args)
  expect(result.code, result.stderr).toBe(0)
  return result.stdout.trim()
}

const principalOf = (secret: string) => database.withDb((db) => findActiveKey(db.kysely, sha256Hex(secret)))

// One process per step, and on the embedded database one at a time (they share its lock).
describe('syncstore keys', { timeout: 180_000 }, () => {
  it('keys create prints exactly one UUID v4 on stdout, and the key is stored for its environment', async () => {
    const result = await cli('keys', 'create', '--env', 'dev')
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toMatch(/^[^\n]+\n$/)
    const secret = result.stdout.trim()
    expect(secret).toMatch(UUID_V4)
    expect(result.stderr).toMatch(/Created key [0-9a-f-]{36} for environment dev with scopes environment:\*/)
    expect(result.stderr).not.toContain(secret)

    expect(await principalOf(secret)).toMatchObject({ environment: 'dev', scopes: ['environment:*'] })
  })

  it('keys create --scopes gives the key exactly those scopes', async () => {
    const secret = await createKey('--scopes', 'environment:records:read')
    expect(await principalOf(secret)).toMatchObject({
      environment: 'dev',
      scopes: ['environment:records:read'],
    })
  })

  it('an unknown scope is a usage error (exit 2)', async () => {
    expectOneLineError(await cli('keys', 'create', '--scopes', 'environment:nope'), 2, /environment:nope/)
  })

  it('keys list shows the key prefix but never the secret, in both formats', async () => {
    const secret = await createKey('--env', 'dev')
    const prefix = secret.slice(0, 8)

    const table = await cli('keys', 'list', '--env', 'dev')
    expect(table.code, table.stderr).toBe(0)
    expect(table.stdout).toMatch(/^ID\s+KEY\s+STATUS\s+SCOPES/)
    expect(table.stdout).toContain(`${prefix}…`)
    expect(table.stdout + table.stderr).not.toContain(secret)

    const json = await cli('keys', 'list', '--env', 'dev', '--json')
    expect(json.code, json.stderr).toBe(0)
    expect(json.stdout).not.toContain(secret)
    const keys = JSON.parse(json.stdout) as { keyPrefix: string; environment: string; revokedAt: unknown }[]
    expect(keys.find((k) => k.keyPrefix === prefix)).toMatchObject({ environment: 'dev', revokedAt: null })
  })

  it('keys revoke marks the key revoked; revoking it again fails with exit 1', async () => {
    const created = await cli('keys', 'create')
    const secret = created.stdout.trim()
    const id = /Created key ([0-9a-f-]{36})/.exec(created.stderr)![1]!

    const revoked = await cli('keys', 'revoke', id)
    expect(revoked.code, revoked.stderr).toBe(0)
    expect(revoked.stderr).toContain(`Revoked key ${id}`)

    const table = await cli('keys', 'list')
    expect(table.stdout.split('\n').find((line) => line.startsWith(id))).toMatch(/\brevoked\b/)
    expect(await principalOf(secret)).toBeUndefined()

    expectOneLineError(await cli('keys', 'revoke', id), 1, /no active key/)
  })
})

describe('syncstore env-vars', { timeout: 180_000 }, () => {
  it('sets, lists (table and JSON) and unsets a variable', async () => {
    const set = await cli('env-vars', 'set', 'API_BASE', 'https://example.test/v1', '--env', 'dev')
    expect(set.code, set.stderr).toBe(0)

    const table = await cli('env-vars', 'list', '--env', 'dev')
    expect(table.code, table.stderr).toBe(0)
    expect(table.stdout).toMatch(/^NAME\s+VALUE\n/)
    expect(table.stdout).toMatch(/^API_BASE\s+https:\/\/example\.test\/v1$/m)

    const json = await cli('env-vars', 'list', '--json')
    expect(JSON.parse(json.stdout)).toContainEqual({ name: 'API_BASE', value: 'https://example.test/v1' })

    const unset = await cli('env-vars', 'unset', 'API_BASE')
    expect(unset.code, unset.stderr).toBe(0)
    const after = await cli('env-vars', 'list', '--json')
    expect(JSON.parse(after.stdout)).not.toContainEqual(expect.objectContaining({ name: 'API_BASE' }))

    expectOneLineError(await cli('env-vars', 'unset', 'API_BASE'), 1, /no variable API_BASE/)
  })
})

describe('syncstore connections', { timeout: 180_000 }, () => {
  it('creates, lists and deletes a connection, never printing its credentials', async () => {
    const created = await cli(
      'connections',
      'create',
      '--integration',
      'github',
      '--connection-id',
      'cli-conn-1',
      '--metadata',
      '{"team":"core"}',
      '--credentials',
      '{"type":"API_KEY","apiKey":"sk-cli-secret"}',
    )
    expect(created.code, created.stderr).toBe(0)
    expect(created.stderr).toContain('Created connection cli-conn-1 of integration github')

    const table = await cli('connections', 'list')
    expect(table.stdout).toMatch(/^INTEGRATION\s+CONNECTION\s+CREATED\n/)
    expect(table.stdout).toMatch(/^github\s+cli-conn-1\s+\d{4}-/m)

    const json = await cli('connections', 'list', '--json', '--integration', 'github')
    expect(json.code, json.stderr).toBe(0)
    expect(json.stdout).not.toContain('sk-cli-secret')
    expect(JSON.parse(json.stdout)).toContainEqual(
      expect.objectContaining({
        providerConfigKey: 'github',
        connectionId: 'cli-conn-1',
        metadata: { team: 'core' },
      }),
    )

    const deleted = await cli(
      'connections',
      'delete',
      '--integration',
      'github',
      '--connection-id',
      'cli-conn-1',
    )
    expect(deleted.code, deleted.stderr).toBe(0)
    const after = await cli('connections', 'list', '--json')
    expect(JSON.parse(after.stdout)).not.toContainEqual(
      expect.objectContaining({ connectionId: 'cli-conn-1' }),
    )
  })

  it('imports a connection as POST /connections does: OAuth credentials keep their raw copy', async () => {
    const credentials = { type: 'OAUTH2', access_token: 'tok-cli', refresh_token: 'ref-cli' }
    const args = ['--integration', 'github', '--connection-id', 'cli-oauth']
    const created = await cli('connections', 'create', ...args, '--credentials', JSON.stringify(credentials))
    expect(created.code, created.stderr).toBe(0)
    const stored = await database.withDb(async (db) => {
      const env = await findEnvironment(db.kysely, 'dev')
      return findConnection(db.kysely, createSealer(null), env!.id, 'github', 'cli-oauth')
    })
    expect(stored?.credentials).toEqual({ ...credentials, raw: credentials })
  })

  it('rejects invalid JSON, a wrong credentials shape and a missing --integration with exit 2', async () => {
    const base = ['connections', 'create', '--integration', 'github', '--connection-id', 'bad-1']
    expectOneLineError(await cli(...base, '--metadata', '{"team":'), 2, /--metadata is not valid JSON/)
    expectOneLineError(await cli(...base, '--credentials', '{"type":"API_KEY"}'), 2, /credentials/)
    expectOneLineError(
      await cli('connections', 'create', '--connection-id', 'bad-1'),
      2,
      /--integration is required/,
    )
    const json = await cli('connections', 'list', '--json')
    expect(JSON.parse(json.stdout)).not.toContainEqual(expect.objectContaining({ connectionId: 'bad-1' }))
  })
})

describe('syncstore commands and environments', { timeout: 180_000 }, () => {
  it('an unknown command is a usage error (exit 2)', async () => {
    expectOneLineError(await cli('frobnicate'), 2, /unknown command "frobnicate"/)
  })

  it('a run number beyond a safe integer is a usage error (exit 2), not a database error', async () => {
    for (const id of ['1e20', '9007199254740993']) {
      expectOneLineError(await cli('runs', 'logs', id), 2, /RUN_ID must be a run number/)
    }
  })

  it('an unknown environment fails with exit 1', async () => {
    expectOneLineError(await cli('keys', 'list', '--env', 'nowhere'), 1, /unknown environment "nowhere"/)
  })

  it('environments create adds an environment that keys can then be created in', async () => {
    const created = await cli('environments', 'create', 'staging')
    expect(created.code, created.stderr).toBe(0)
    expect((await cli('environments', 'list')).stdout).toMatch(/^\d+\s+staging$/m)

    const secret = await createKey('--env', 'staging')
    expect(secret).toMatch(UUID_V4)
    expect(await principalOf(secret)).toMatchObject({ environment: 'staging', scopes: ['environment:*'] })
  })

  it('migrate applies every migration to an empty database, then finds it up to date', async () => {
    const empty = await createProcessDatabase({ empty: true })
    databases.push(empty)

    const first = await runCli(['migrate'], empty.env)
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toMatch(/^Applied 0001_foundation(, \d{4}_\w+)*\.$/m)

    const second = await runCli(['migrate'], empty.env)
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr.trim()).toBe('The database is up to date.')
  })
})
