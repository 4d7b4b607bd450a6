import type { Pagination, ProxyConfig, ProxyResponse } from './protocol.ts'

/**
 * nango.paginate, as Nango's runner pages: the call's `paginate` merged over the integration's
 * default, then cursor, link or offset paging over the function's own proxy calls. It runs in the
 * worker: each page is one proxy call to the server, the paging itself needs nothing from it.
 */

type Proxy = (config: ProxyConfig) => Promise<ProxyResponse>
/** Nango's `on_page`: called after each page with the next page's cursor, link or offset */
type OnPage = (state: {
  nextPageParam?: string | number | undefined
  response: ProxyResponse
}) => Promise<void>
export type PaginateConfig = ProxyConfig & { paginate?: Partial<Pagination> & { on_page?: OnPage } }

function validatePagination(p: Partial<Pagination>): asserts p is Pagination {
  if (!p.type) throw new Error('Pagination type is required')
  if (p.type === 'cursor') {
    if (!p.cursor_name_in_request) {
      throw new Error('Param cursor_name_in_request is required for cursor pagination')
    }
    if (!p.cursor_path_in_response) {
      throw new Error('Param cursor_path_in_response is required for cursor pagination')
    }
    if (p.limit && !p.limit_name_in_request) {
      throw new Error('Param limit_name_in_request is required for cursor pagination when limit is set')
    }
  } else if (p.type === 'link') {
    if (!p.link_rel_in_response_header && !p.link_path_in_response_body) {
      throw new Error(
        'Either param link_rel_in_response_header or link_path_in_response_body is required for link pagination',
      )
    }
  } else if (p.type === 'offset') {
    if (!p.offset_name_in_request) {
      throw new Error('Param offset_name_in_request is required for offset pagination')
    }
  } else {
    throw new Error(
      `Pagination type ${String(p.type)} is not supported. Only cursor, link and offset pagination types are supported.`,
    )
  }
}

export async function* paginate<T>(
  config: PaginateConfig,
  fallback: Pagination | null,
  proxy: Proxy,
): AsyncGenerator<T[], undefined, void> {
  if (!fallback && !config.paginate?.type) {
    throw new Error('There was no pagination configuration for this integration or configuration passed in.')
  }
  const p: Partial<Pagination> = { ...fallback, ...config.paginate }
  validatePagination(p)
  const onPage = config.paginate?.on_page
  const { paginate: _, ...rest } = config
  const request: ProxyConfig = { ...rest, method: config.method ?? 'GET' }
  const inBody = config.paginate?.in_body ?? ['POST', 'PUT', 'PATCH'].includes(request.method!.toUpperCase())
  // Paging parameters are added to the call's own params (or body), as Nango does.
  const own = (inBody ? request.data : request.params) as Record<string, unknown> | undefined
  const state: Record<string, unknown> = { ...own }
  if (p.limit && p.limit_name_in_request) state[p.limit_name_in_request] = p.limit
  const apply = () => {
    if (inBody) {
      const body: Record<string, unknown> = {}
      for (const [key, value] of Object.entries(state)) setPath(body, key, value)
      request.data = body
    } else {
      request.params = state as ProxyConfig['params']
    }
  }
  const itemsOf = (res: ProxyResponse) =>
    (p.response_path ? getPath(res.data, p.response_path) : res.data) as T[]

  if (p.type === 'cursor') {
    let next: unknown
    do {
      if (next !== undefined) state[p.cursor_name_in_request!] = next
      apply()
      const res = await proxy(request)
      const items = itemsOf(res)
      if (!items || !Array.isArray(items) || items.length === 0) return
      yield items
      next = getPath(res.data, p.cursor_path_in_response!)
      if (typeof next === 'string') next = next.trim() || undefined
      else if (typeof next !== 'number') next = undefined
      await onPage?.({ nextPageParam: next as string | number | undefined, response: res })
    } while (next !== undefined)
    return
  }

  if (p.type === 'link') {
    apply()
    let previous: string | undefined
    for (;;) {
      const res = await proxy(request)
      yield itemsOf(res)
      const next = nextLink(p, res)
      await onPage?.({ nextPageParam: next, response: res })
      if (!next || next === previous) return
      previous = next
      if (URL.canParse(next)) {
        // A full URL may be on another host than the base URL: it replaces both.
        const url = new URL(next)
        request.baseUrlOverride = url.origin
        request.endpoint = url.pathname + url.search
      } else {
        request.endpoint = next
      }
      delete request.params
    }
  }

  // offset
  const byPage = p.offset_calculation_method === 'per-page'
  let offset = p.offset_start_value ?? 0
  for (;;) {
    state[p.offset_name_in_request!] = inBody ? offset : String(offset)
    apply()
    const res = await proxy(request)
    const items = itemsOf(res)
    if (!items || !Array.isArray(items) || items.length === 0) return
    yield items
    if (p.limit && items.length < Number(p.limit)) return
    await onPage?.({ nextPageParam: offset, response: res })
    offset += byPage ? 1 : items.length
  }
}

function nextLink(p: Pagination, res: ProxyResponse): string | undefined {
  let next: string | undefined
  if (p.link_rel_in_response_header) {
    next = parseLinkHeader(res.headers.link)[p.link_rel_in_response_header]
  }
  if (!next && p.link_path_in_response_body) {
    const found = getPath(res.data, p.link_path_in_response_body)
    if (typeof found === 'string' && found !== '') next = found
  }
  return next
}

/** RFC 8288 `Link: <url>; rel="next", <url>; rel="last"` -> { next: url, last: url } */
function parseLinkHeader(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  if (!header) return out
  for (const part of header.split(/,\s*(?=<)/)) {
    const match = /^\s*<([^>]*)>(.*)$/.exec(part)
    if (!match) continue
    const rel = /;\s*rel\s*=\s*"?([^";]+)"?/i.exec(match[2]!)
    for (const name of rel?.[1]?.trim().split(/\s+/) ?? []) out[name] ??= match[1]!
  }
  return out
}

/** `a.b[0].c` of a value, or undefined (lodash `get` paths). */
function getPath(value: unknown, path: string): unknown {
  let current = value
  for (const key of pathKeys(path)) {
    if (current === null || typeof current !== 'object') return undefined
    current = (current as Record<string, unknown>)[key]
  }
  return current
}

/** Sets `a.b.c` in an object, creating the objects on the way (a body's nested paging parameter). */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = pathKeys(path)
  let current = target
  keys.slice(0, -1).forEach((key) => {
    const next = current[key]
    current = (current[key] = next !== null && typeof next === 'object' ? next : {}) as Record<
      string,
      unknown
    >
  })
  current[keys.at(-1)!] = value
}

const pathKeys = (path: string): string[] =>
  path
    .replace(/\[(\w+)\]/g, '.$1')
    .split('.')
    .filter((k) => k !== '' && k !== '__proto__' && k !== 'constructor' && k !== 'prototype')
