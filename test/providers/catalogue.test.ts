import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { loadConfig } from '../../src/config.ts'
import { BUILT_IN } from '../../src/providers/catalogue.ts'
import { proxyRequest } from '../../src/providers/proxy.ts'
import { createProviders, loadProviders, loadProvidersFile } from '../../src/providers/registry.ts'
import { interpolate, variablesOf } from '../../src/providers/template.ts'
import { type FakeApi, startApi } from '../runtime/harness.ts'

type Answer = { status?: number; body?: unknown; headers?: Record<string, string> }
/**
 * The built-in catalogue, providers files, integration.json over them, templates, and the proxy's
 * rate-limit waits against a stand-in API.
 */

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-catalogue-'))
})
afterAll(() => rm(dir, { recursive: true, force: true }))

const file = async (name: string, text: string) => {
  const p = path.join(dir, name)
  await writeFile(p, text)
  return p
}

// The 30 providers the public templates target most (sync files per folder, ties by name)
const MOST_USED = [
  'pennylane', 'workable', 'pinterest', 'lever', 'shopify', 'mandrill',
  'microsoft-dynamics-365-finance-and-operations-cc', 'klaviyo', 'exact-online', 'sharepoint-online',
  'bamboohr-basic', 'zoho-books', 'twilio', 'quickbooks', 'posthog', 'datadog', 'zendesk', 'stripe',
  'ingenious-build', 'azure-devops', 'attio', 'shortcut', 'recruiterflow', 'okta', 'bigcommerce',
  'auth0-cc', 'active-campaign', 'acuity-scheduling', 'amplitude', 'chargebee',
] // prettier-ignore

describe('the built-in catalogue', () => {
  it('covers the 30 most used providers and the well-known OAuth APIs', () => {
    const names = Object.keys(BUILT_IN)
    expect(names).toEqual(expect.arrayContaining(MOST_USED))
    expect(names).toEqual(
      expect.arrayContaining(['github', 'slack', 'hubspot', 'salesforce', 'notion', 'jira']),
    )
  })

  it.each(Object.entries(BUILT_IN))(
    '%s: a base URL, an auth mode, and templates only of known variables',
    (_, p) => {
      expect(p.auth_mode).toBeTruthy()
      expect(p.proxy?.base_url).toBeTruthy()
      const templates = [
        p.proxy?.base_url ?? '',
        ...Object.values(p.proxy?.headers ?? {}),
        ...Object.values(p.proxy?.query ?? {}),
        ...Object.values(p.proxy?.body ?? {}),
        typeof p.token_url === 'string' ? p.token_url : '',
      ]
      for (const name of templates.flatMap(variablesOf)) {
        expect(name).toMatch(/^(connectionConfig|credentials|metadata)\.\w+$|^(accessToken|apiKey)$/)
      }
      if (p.auth_mode === 'OAUTH2' || p.auth_mode === 'OAUTH2_CC') expect(p.token_url).toBeTruthy()
    },
  )
})

describe('templates', () => {
  const values = { connectionConfig: { subdomain: 'acme', empty: '' }, metadata: {}, apiKey: 'k1' }

  it('fills variables and takes the first alternative whose variables are known', () => {
    expect(interpolate('https://${connectionConfig.subdomain}.zendesk.com', values, 'x')).toBe(
      'https://acme.zendesk.com',
    )
    expect(interpolate('https://${connectionConfig.hostname} || https://amplitude.com', values, 'x')).toBe(
      'https://amplitude.com',
    )
    expect(interpolate('Bearer ${apiKey}', values, 'x')).toBe('Bearer k1')
  })

  it('names the first missing variable (an empty value is missing)', () => {
    expect(() =>
      interpolate('${connectionConfig.instance_url}', values, 'The base URL of provider salesforce'),
    ).toThrow(
      'The base URL of provider salesforce needs ${connectionConfig.instance_url}, which the connection does not have',
    )
    expect(() => interpolate('https://${connectionConfig.empty}.x', values, 'y')).toThrow(
      'connectionConfig.empty',
    )
  })
})

describe('providers files and integration.json', () => {
  it("loads Nango's format: alias over a file or built-in entry, a file entry replacing a built-in one", async () => {
    const providers = await loadProviders(
      await file(
        'ok.yaml',
        `
zendesk:
    auth_mode: OAUTH2
    proxy:
        base_url: https://support.example.com
my-zendesk:
    alias: zendesk
    display_name: Mine
my-notion:
    alias: notion
    docs: https://example.com
`,
      ),
    )
    expect(providers.get('zendesk')).toEqual({
      auth_mode: 'OAUTH2',
      proxy: { base_url: 'https://support.example.com' },
    })
    expect(providers.get('my-zendesk')).toMatchObject({
      display_name: 'Mine',
      proxy: { base_url: 'https://support.example.com' },
    })
    expect(providers.get('my-notion')?.proxy?.headers).toEqual({ 'notion-version': '2022-06-28' })
    expect(providers.get('github')).toBe(BUILT_IN.github)
    expect(providers.get('nope')).toBeUndefined()
  })

  it('refuses a file it cannot use, naming the file, the provider and the field', async () => {
    const bad = await file('bad.yaml', 'crm:\n    proxy:\n        headers:\n            x-key: [1, 2]\n')
    await expect(loadProvidersFile(bad)).rejects.toThrow(
      `SYNCSTORE_PROVIDERS_FILE ${bad}: crm.proxy.headers.x-key`,
    )
    const list = await file('list.yaml', '- github\n')
    await expect(loadProvidersFile(list)).rejects.toThrow('expected a map of provider name to provider')
    const broken = await file('broken.yaml', 'crm: {proxy: [\n')
    await expect(loadProvidersFile(broken)).rejects.toThrow(`SYNCSTORE_PROVIDERS_FILE ${broken}`)
    await expect(loadProvidersFile(path.join(dir, 'absent.yaml'))).rejects.toThrow('ENOENT')
  })

  it('SYNCSTORE_PROVIDERS_FILE is resolved from the working directory', () => {
    expect(loadConfig({ SYNCSTORE_PROVIDERS_FILE: 'conf/providers.yaml' }, '/srv/app').providersFile).toBe(
      '/srv/app/conf/providers.yaml',
    )
    expect(loadConfig({}, '/srv/app').providersFile).toBeNull()
  })

  it("puts integration.json's base_url, headers, pagination and auth over the provider", () => {
    const providers = createProviders()
    const notion = providers.resolve('notion', {
      base_url: 'http://127.0.0.1:1',
      headers: { 'Notion-Version': '2025-09-03', 'X-Extra': '1' },
      auth: { in: 'query', name: 'key' },
    })
    expect(notion?.proxy).toMatchObject({
      base_url: 'http://127.0.0.1:1',
      headers: { 'notion-version': '2025-09-03', 'x-extra': '1' },
      query: { key: '${accessToken}' },
      paginate: { type: 'cursor', cursor_name_in_request: 'start_cursor' },
    })
    expect(providers.resolve('unknown-api', {})).toBeUndefined()
    expect(providers.resolve('unknown-api', { base_url: 'http://x.test' })?.proxy?.base_url).toBe(
      'http://x.test',
    )
  })
})

describe('rate limits', () => {
  let stand: FakeApi
  let calls = 0
  beforeAll(async () => {
    stand = await startApi((req): Answer => {
      calls += 1
      if (req.path === '/far') return { status: 429, headers: { 'retry-after': '30' }, body: {} }
      // GitHub's primary limit: 403 with the window's end in epoch seconds, nothing left
      if (req.path === '/reset' && calls % 2 === 1) {
        const reset = String(Math.ceil(Date.now() / 1000) + 1)
        return {
          status: 403,
          headers: { 'x-ratelimit-reset': reset, 'x-ratelimit-remaining': '0' },
          body: {},
        }
      }
      return { body: { ok: true } }
    })
  })
  afterAll(() => stand.close())

  const target = (deadline: number) => ({
    provider: createProviders().resolve('github', { base_url: stand.url }),
    providerName: 'github',
    connection: { credentials: { type: 'OAUTH2', access_token: 't' }, connectionConfig: {}, metadata: null },
    deadline,
  })

  it("waits until the provider's reset time, then retries", async () => {
    calls = 0
    const started = Date.now()
    const res = await proxyRequest({ endpoint: '/reset', retries: 1 }, target(Date.now() + 10_000))
    expect(res.data).toEqual({ ok: true })
    expect(calls).toBe(2)
    // the reset is at least a second away
    expect(Date.now() - started).toBeGreaterThanOrEqual(900)
  })

  it('does not wait past the deadline (the run time limit): the 429 fails at once, saying why', async () => {
    calls = 0
    const started = Date.now()
    await expect(proxyRequest({ endpoint: '/far', retries: 3 }, target(Date.now() + 5_000))).rejects.toThrow(
      'proxy GET /far answered 429 (the API asked to wait 30 s, past the time limit)',
    )
    expect(calls).toBe(1)
    expect(Date.now() - started).toBeLessThan(2_000)
  })
})
