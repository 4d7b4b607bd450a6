import { randomBytes, randomUUID } from 'node:crypto'
import path from 'node:path'

import { describe, expect, it } from 'vitest'

import { ConfigError, loadConfig } from '../src/config.ts'

const CWD = path.resolve('/srv/syncstore')

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    loadConfig(env, CWD)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}

describe('loadConfig', () => {
  it('has defaults for everything, and is frozen', () => {
    const config = loadConfig({}, CWD)
    expect(config).toMatchObject({
      port: 3003,
      host: '127.0.0.1',
      database: { kind: 'embedded', dataDir: path.join(CWD, '.syncstore/data') },
      bootstrapKeys: [],
      encryptionKey: null,
      logLevel: 'info',
      maxPageBytes: 10 * 1024 * 1024,
      bodyLimitBytes: 1024 * 1024,
      pageMemoryBytes: 64 * 1024 * 1024,
      readAheadPages: 32,
      http: { idleTimeoutMs: 30_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 10_000 },
    })
    expect(Object.isFrozen(config)).toBe(true)
  })

  it('treats empty variables as unset', () => {
    const config = loadConfig(
      { PORT: '', DATABASE_URL: '', LOG_LEVEL: '', SYNCSTORE_ENCRYPTION_KEY: '' },
      CWD,
    )
    expect(config).toMatchObject({ port: 3003, database: { kind: 'embedded' }, logLevel: 'info' })
  })

  it('selects Postgres when DATABASE_URL is set', () => {
    for (const url of ['postgres://u:p@db:5432/app', 'postgresql://db/app?sslmode=require']) {
      expect(loadConfig({ DATABASE_URL: url }, CWD).database).toEqual({ kind: 'postgres', url })
    }
  })

  it('selects the embedded data folder when DATABASE_URL is absent, relative to the working directory', () => {
    expect(loadConfig({ SYNCSTORE_DATA_DIR: 'var/db' }, CWD).database).toEqual({
      kind: 'embedded',
      dataDir: path.join(CWD, 'var/db'),
    })
    expect(loadConfig({ SYNCSTORE_DATA_DIR: '/data' }, CWD).database).toEqual({
      kind: 'embedded',
      dataDir: path.resolve('/data'),
    })
  })

  it('reads valid values', () => {
    const key = randomBytes(32)
    const dev = randomUUID()
    const config = loadConfig(
      {
        PORT: '8080',
        HOST: '0.0.0.0',
        LOG_LEVEL: 'debug',
        SYNCSTORE_ENCRYPTION_KEY: key.toString('base64'),
        NANGO_SECRET_KEY_DEV: dev.toUpperCase(),
        NANGO_SECRET_KEY_STAGING: randomUUID(),
        SYNCSTORE_PAGE_MEMORY_BYTES: String(256 * 1024 * 1024),
        SYNCSTORE_READ_AHEAD_PAGES: '0',
        SYNCSTORE_IDLE_TIMEOUT_MS: '5000',
        SYNCSTORE_REQUEST_TIMEOUT_MS: '2000',
        SYNCSTORE_KEEP_ALIVE_TIMEOUT_MS: '65000',
      },
      CWD,
    )
    expect(config).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      logLevel: 'debug',
      pageMemoryBytes: 256 * 1024 * 1024,
      readAheadPages: 0,
      http: { idleTimeoutMs: 5000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 65_000 },
    })
    expect(config.encryptionKey?.equals(key)).toBe(true)
    expect(config.bootstrapKeys).toContainEqual({ environment: 'dev', key: dev })
    expect(config.bootstrapKeys.map((k) => k.environment).sort()).toEqual(['dev', 'staging'])
  })

  it('reports every invalid variable in one ConfigError', () => {
    const problems = problemsOf({
      PORT: 'abc',
      DATABASE_URL: 'mysql://db/app',
      SYNCSTORE_ENCRYPTION_KEY: randomBytes(16).toString('base64'),
      LOG_LEVEL: 'loud',
      NANGO_SECRET_KEY_DEV: 'not-a-uuid',
      SYNCSTORE_BODY_LIMIT_BYTES: '-1',
    })
    expect(problems).toHaveLength(6)
    for (const name of [
      'PORT',
      'DATABASE_URL',
      'SYNCSTORE_ENCRYPTION_KEY',
      'LOG_LEVEL',
      'NANGO_SECRET_KEY_DEV',
      'SYNCSTORE_BODY_LIMIT_BYTES',
    ]) {
      expect(
        problems.filter((p) => p.includes(name)),
        name,
      ).toHaveLength(1)
    }
  })

  it('SYNCSTORE_RECORD_VALIDATION is warn by default, strict or off when set, and nothing else', () => {
    expect(loadConfig({}, CWD).runs.recordValidation).toBe('warn')
    expect(loadConfig({ SYNCSTORE_RECORD_VALIDATION: 'strict' }, CWD).runs.recordValidation).toBe('strict')
    expect(loadConfig({ SYNCSTORE_RECORD_VALIDATION: 'off' }, CWD).runs.recordValidation).toBe('off')
    expect(problemsOf({ SYNCSTORE_RECORD_VALIDATION: 'loud' })).toEqual([
      expect.stringMatching(/^SYNCSTORE_RECORD_VALIDATION .*must be one of warn, strict, off/),
    ])
  })

  it('names every problem in the error message', () => {
    expect(() => loadConfig({ PORT: '70000', LOG_LEVEL: 'loud' }, CWD)).toThrow(
      /Invalid configuration:\n {2}- PORT .*70000.*\n {2}- LOG_LEVEL/,
    )
  })

  it.each([
    ['PORT', '3.5'],
    ['PORT', '-1'],
    ['PORT', '65536'],
    ['SYNCSTORE_ENCRYPTION_KEY', randomBytes(31).toString('base64')],
    ['SYNCSTORE_ENCRYPTION_KEY', randomBytes(33).toString('base64')],
    ['NANGO_SECRET_KEY_PROD', '123e4567-e89b-12d3-a456-426614174000'], // a UUID, but v1
    ['NANGO_SECRET_KEY_BAD!ENV', randomUUID()],
    ['SYNCSTORE_MAX_PAGE_BYTES', '1mb'],
    ['SYNCSTORE_PAGE_MEMORY_BYTES', '1000'],
    ['SYNCSTORE_IDLE_TIMEOUT_MS', '0'],
    ['SYNCSTORE_REQUEST_TIMEOUT_MS', '2.5s'],
    ['SYNCSTORE_KEEP_ALIVE_TIMEOUT_MS', '-1'],
  ])('rejects %s=%s', (name, value) => {
    expect(problemsOf({ [name]: value })).toEqual([expect.stringContaining(name)])
  })
})
