import { readFile } from 'node:fs/promises'

import { Type } from 'typebox'
import { parse as parseYaml } from 'yaml'

import type { IntegrationConfig } from '../syncs/definitions.ts'
import { validateJson } from '../validation.ts'
import { BUILT_IN } from './catalogue.ts'
import type { Provider, Providers } from './types.ts'

const Strings = Type.Record(Type.String(), Type.String())

/**
 * What a providers.yaml entry must look like for syncstore to act on it. Only the fields we use
 * are checked; everything else of Nango's format (docs, categories, connection_config schemas...)
 * passes through untouched.
 */
const ProviderEntrySchema = Type.Object({
  alias: Type.Optional(Type.String({ minLength: 1 })),
  auth_mode: Type.Optional(Type.String({ minLength: 1 })),
  token_url: Type.Optional(Type.Union([Type.String(), Strings])),
  refresh_url: Type.Optional(Type.String()),
  token_params: Type.Optional(Strings),
  refresh_params: Type.Optional(Strings),
  proxy: Type.Optional(
    Type.Object({
      base_url: Type.Optional(Type.String()),
      headers: Type.Optional(Strings),
      query: Type.Optional(Strings),
      body: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      retry: Type.Optional(
        Type.Object({
          at: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])),
          after: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])),
          remaining: Type.Optional(Type.String()),
          error_code: Type.Optional(Type.Array(Type.String())),
        }),
      ),
      paginate: Type.Optional(Type.Object({ type: Type.String() })),
    }),
  ),
})

/**
 * Reads a file in Nango's providers.yaml format (a map of provider name to description); throws
 * with the file, the provider and the field at fault when an entry is not usable.
 */
export async function loadProvidersFile(file: string): Promise<Record<string, Provider>> {
  let parsed: unknown
  try {
    parsed = parseYaml(await readFile(file, 'utf8'))
  } catch (err) {
    throw new Error(`SYNCSTORE_PROVIDERS_FILE ${file}: ${(err as Error).message}`, { cause: err })
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error(`SYNCSTORE_PROVIDERS_FILE ${file}: expected a map of provider name to provider`)
  }
  const entries: Record<string, Provider> = {}
  for (const [name, entry] of Object.entries(parsed)) {
    const issue = validateJson(ProviderEntrySchema, entry)[0]
    if (issue) {
      const where = [name, ...issue.path].join('.')
      throw new Error(`SYNCSTORE_PROVIDERS_FILE ${file}: ${where}: ${issue.message}`)
    }
    entries[name] = entry as Provider
  }
  return entries
}

/**
 * The providers a server knows: the built-in catalogue, with the file's entries (if any) replacing
 * or adding whole providers, as a team's own providers.yaml describes each one completely.
 */
export function createProviders(fileEntries: Record<string, Provider> = {}): Providers {
  const raw: Record<string, Provider> = { ...BUILT_IN, ...fileEntries }
  const get = (name: string): Provider | undefined => {
    if (!Object.hasOwn(raw, name)) return undefined
    const entry = raw[name]!
    // Nango's alias: the aliased provider's top-level fields, this entry's own winning (one level)
    if (!entry.alias || !Object.hasOwn(raw, entry.alias)) return entry
    const { alias, ...own } = entry
    const { alias: _, ...base } = raw[alias]!
    return { ...base, ...own }
  }
  return {
    get,
    resolve: (name, integration) => withIntegration(get(name), integration),
  }
}

/** Loads SYNCSTORE_PROVIDERS_FILE (when set) over the built-in catalogue; once, at start. */
export async function loadProviders(file: string | null): Promise<Providers> {
  return createProviders(file ? await loadProvidersFile(file) : {})
}

/**
 * integration.json over the provider: its base_url, headers and pagination win, and its `auth`
 * (how credentials are sent) becomes a header or query template.
 */
function withIntegration(
  provider: Provider | undefined,
  integration?: IntegrationConfig,
): Provider | undefined {
  if (!integration) return provider
  const { base_url, headers, pagination, auth } = integration
  if (!provider && !base_url && !headers && !pagination && !auth) return undefined
  const proxy = { ...provider?.proxy }
  if (base_url) proxy.base_url = base_url
  if (headers) proxy.headers = { ...lowerKeys(proxy.headers), ...lowerKeys(headers) }
  if (pagination) proxy.paginate = pagination
  if (auth) {
    // integration.json's own placeholders: {token} is the token or key, {field} a credential field
    const template = (auth.format ?? '{token}').replace(/\{(\w+)\}/g, (_, field: string) =>
      field === 'token' ? '${accessToken}' : `\${credentials.${field}}`,
    )
    if (auth.in === 'header') {
      proxy.headers = { ...lowerKeys(proxy.headers), [auth.name.toLowerCase()]: template }
    } else {
      proxy.query = { ...proxy.query, [auth.name]: template }
    }
  }
  return { ...provider, proxy }
}

const lowerKeys = (headers: Record<string, string> | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]))
