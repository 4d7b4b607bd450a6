import { Readable } from 'node:stream'

import type { ProxyConfig, RunInfo } from './protocol.ts'

/**
 * Values as Nango's runner hands them to a sync function, or takes them from it, where what
 * crosses the worker boundary (a structured clone) would otherwise differ from what a function
 * written for Nango expects.
 */

/**
 * A response body as axios in Node gives it: bytes (responseType 'arraybuffer' or 'blob') are a
 * Buffer, so `data.toString('utf8')` and `Buffer.isBuffer(data)` hold as on Nango, where a clone
 * arrives as a plain Uint8Array; 'stream' is a readable stream of them. Anything else as it came.
 */
export function axiosBody(data: unknown, responseType: ProxyConfig['responseType']): unknown {
  if (!(data instanceof Uint8Array)) return data
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  return responseType === 'stream' ? Readable.from([bytes]) : bytes
}

// Keys Nango leaves out of a logged value (agents, traces) or masks.
const LEFT_OUT = new Set(['httpAgent', 'httpsAgent', 'trace', '_sessionCache', 'stack'])
const MASKED = new Set(['authorization', 'Authorization'])

/**
 * A logged value as JSON, as Nango's runner sends it to its log store: never throws (a cycle is
 * "[Circular]", a function is left out, a bigint is its digits, bytes are "[Buffer]"), masks an
 * Authorization, and keeps an error's name and message, which JSON.stringify alone drops. A clone
 * would instead fail the run on a function and keep nothing of an error but its message.
 */
export function logText(value: unknown): string {
  // The objects from the root to the one being written: a value among them is a cycle.
  const path: unknown[] = []
  return (
    JSON.stringify(value, function (this: unknown, key: string, v: unknown) {
      if (LEFT_OUT.has(key)) return undefined
      if (MASKED.has(key)) return '[Redacted]'
      if (typeof v === 'bigint') return v.toString()
      // `this[key]`: JSON.stringify has already applied Buffer's toJSON to `v`.
      if ((this as Record<string, unknown>)[key] instanceof Uint8Array) return '[Buffer]'
      if (v === null || typeof v !== 'object') return v
      while (path.length > 0 && path.at(-1) !== this) path.pop()
      if (path.includes(v)) return '[Circular]'
      path.push(v)
      if (!(v instanceof Error)) return v
      const error = { ...v, name: v.name, message: v.message }
      path.push(error)
      return error
    }) ?? String(value)
  )
}

/**
 * A log line's payload as JSON, none as null (Nango's rule: `payload || undefined`). An array stays
 * one (Nango's log store turns it into an object of its items; syncstore's keeps arrays).
 */
export function logPayload(payload: unknown): unknown {
  return payload ? (JSON.parse(logText(payload)) as unknown) : null
}

/**
 * Records are stored as JSON, so they cross to the server as JSON would see them: a Date becomes
 * its ISO string (and validates as a date-time string), undefined fields disappear. Done here, in
 * the worker, to keep that work off the server's thread.
 */
export function asJson(records: unknown[]): unknown {
  return Array.isArray(records) ? (JSON.parse(JSON.stringify(records)) as unknown) : records
}

/** Dates in a checkpoint are stored as ISO strings (Nango's rule). */
export function normaliseCheckpoint(checkpoint: Record<string, unknown>): unknown {
  if (checkpoint === null || typeof checkpoint !== 'object') return checkpoint
  return Object.fromEntries(
    Object.entries(checkpoint).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]),
  )
}

/**
 * Nango lets a function read another connection (getConnection's arguments, a request's
 * `connectionId` / `providerConfigKey`); syncstore serves only the run's own, so any other is a
 * clear error rather than the run's own connection's data or credentials.
 */
export function ownConnection(
  run: RunInfo,
  what: string,
  providerConfigKey?: unknown,
  connectionId?: unknown,
) {
  const other =
    (providerConfigKey && providerConfigKey !== run.providerConfigKey) ||
    (connectionId && connectionId !== run.connectionId)
  if (other) {
    throw new Error(
      `${what}: syncstore serves only the run's own connection (${run.providerConfigKey}/${run.connectionId}), ` +
        `not ${String(providerConfigKey ?? run.providerConfigKey)}/${String(connectionId ?? run.connectionId)}`,
    )
  }
}
