import { readFile } from 'node:fs/promises'

import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse } from 'yaml'

import { openApiYaml } from '../../src/http/openapi.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'

/**
 * openapi.yaml is generated from the route schemas (`npm run openapi`); these tests keep the
 * committed file equal to what the routes generate, and the document honest about what the app
 * does. They are generic: nothing here names a particular route.
 */

const OPENAPI_FILE = new URL('../../openapi.yaml', import.meta.url)
const OPERATION_KEYS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']

interface Operation {
  tags?: string[]
  summary?: string
  operationId?: string
  security?: Record<string, string[]>[]
  responses: Record<string, { $ref?: string; content?: Record<string, { schema?: { $ref?: string } }> }>
}
interface Document {
  openapi: string
  tags?: { name: string }[]
  security?: Record<string, string[]>[]
  paths: Record<string, Record<string, unknown>>
}

const text = await readFile(OPENAPI_FILE, 'utf8')
const doc = parse(text) as Document

let t: TestApp
beforeAll(async () => {
  t = await startTestApp()
})
afterAll(() => t.close())

/**
 * Every (method, path) the router knows, from Fastify's route tree printed one method at a time
 * (one line per tree node, routes or not: a child's segment continues its parent's; a wildcard is
 * `{*}`, as the document names it). Fastify adds HEAD for every GET; neither HEAD nor OPTIONS is
 * part of the API.
 */
function registeredOperations(app: FastifyInstance): string[] {
  const ops = new Set<string>()
  for (const method of app.supportedMethods) {
    if (method === 'HEAD' || method === 'OPTIONS') continue
    const parents: string[] = []
    for (const line of app.printRoutes({ method }).split('\n')) {
      const match = /^((?:│ {3}| {4})*)[├└]── (\S+)( \()?/.exec(line)
      if (!match) continue
      parents.length = match[1]!.length / 4
      parents.push(match[2]!)
      if (!match[3]) continue
      const path = parents.join('').replace(/(.)\/$/, '$1')
      ops.add(`${method} ${path.replace(/:(\w+)/g, '{$1}').replace(/\*$/, '{*}')}`)
    }
  }
  return [...ops].sort()
}

function documentedOperations(): { key: string; path: string; method: string; op: Operation }[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    OPERATION_KEYS.filter((m) => m in item).map((m) => ({
      key: `${m.toUpperCase()} ${path}`,
      path,
      method: m.toUpperCase(),
      op: item[m] as Operation,
    })),
  )
}

/** Scopes that grant the operation (any one is enough); none for a public operation. */
function scopesOf(op: Operation): string[] {
  const security = op.security ?? doc.security ?? []
  return security.flatMap((requirement) => requirement.bearerAuth ?? [])
}
const isPublic = (op: Operation) => (op.security ?? doc.security ?? []).length === 0

function resolve(ref: string): unknown {
  expect(ref, `only local references: ${ref}`).toMatch(/^#\//)
  return ref
    .slice(2)
    .split('/')
    .reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], doc)
}

describe('openapi.yaml', () => {
  it('is what the route schemas generate (run `npm run openapi` after changing a route)', async () => {
    await t.app.ready()
    // Compared line by line so that a failure shows the lines that differ.
    expect(text.split('\n')).toEqual(openApiYaml(t.app).split('\n'))
  })

  it('is an OpenAPI 3.1 document served as-is by GET /openapi.yaml, without a key', async () => {
    expect(doc.openapi).toMatch(/^3\.1\./)
    const res = await t.app.inject({ method: 'GET', url: '/openapi.yaml' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/yaml/)
    expect(res.body).toBe(text)
  })

  it('describes exactly the routes the app registers', () => {
    const registered = registeredOperations(t.app)
    // Guards the route-tree parsing itself: the app always has these two.
    expect(registered).toEqual(expect.arrayContaining(['GET /health', 'GET /openapi.yaml']))
    expect(
      documentedOperations()
        .map((o) => o.key)
        .sort(),
    ).toEqual(registered)
  })

  it('gives every operation a unique operationId, a summary and a declared tag', () => {
    const tags = (doc.tags ?? []).map((tag) => tag.name)
    const ids = documentedOperations().map(({ key, op }) => {
      expect(op.summary, `${key} summary`).toBeTruthy()
      expect(op.tags?.length, `${key} tags`).toBeGreaterThan(0)
      for (const tag of op.tags ?? []) expect(tags, `${key} tag ${tag}`).toContain(tag)
      return op.operationId
    })
    expect(ids.every(Boolean)).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
  })

  it('resolves every $ref', () => {
    const refs: string[] = []
    const collect = (node: unknown): void => {
      if (node === null || typeof node !== 'object') return
      for (const [key, value] of Object.entries(node)) {
        if (key === '$ref' && typeof value === 'string') refs.push(value)
        else collect(value)
      }
    }
    collect(doc)
    expect(refs.length).toBeGreaterThan(0)
    for (const ref of refs) expect(resolve(ref), ref).toBeDefined()
  })

  it('answers every error status with the StdError schema', () => {
    for (const { key, op } of documentedOperations()) {
      expect(
        Object.keys(op.responses).some((s) => /^2\d\d$/.test(s)),
        `${key} success`,
      ).toBe(true)
      for (const [status, response] of Object.entries(op.responses)) {
        if (!/^[45]/.test(status)) continue
        const resolved = (response.$ref ? resolve(response.$ref) : response) as Operation['responses'][string]
        expect(resolved.content?.['application/json']?.schema, `${key} ${status}`).toEqual({
          $ref: '#/components/schemas/StdError',
        })
      }
    }
  })
})

describe.each(documentedOperations())('$key security', ({ method, path, op }) => {
  // Authentication and scopes are checked before validation, so any parameter value will do.
  const url = path.replace(/\{\w+\}/g, 'x')

  it('documents whether a key is needed, as the app enforces it', async () => {
    const res = await t.app.inject({ method: method as 'GET', url })
    if (isPublic(op)) {
      expect(res.statusCode).not.toBe(401)
    } else {
      expect(res.statusCode).toBe(401)
      expect(res.json().error.code).toBe('missing_auth_header')
      for (const status of ['401', '403']) expect(op.responses).toHaveProperty([status])
    }
  })

  it.skipIf(isPublic(op))('documents the scopes the app requires', async () => {
    const key = await t.keyWith(['environment:logs:read'])
    const res = await t.app.inject({ method: method as 'GET', url, headers: bearer(key) })
    expect(res.statusCode).toBe(403)
    const scopes = scopesOf(op)
    const required =
      scopes.length === 1 ? `Required: ${scopes[0]}` : `Required one of: ${scopes.join(' or ')}`
    expect(res.json().error.message).toBe(`Insufficient scope. ${required}`)
  })
})
