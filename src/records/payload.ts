import type { Sealer } from '../crypto.ts'
import { isPlainObject, jsonProblem } from '../json.ts'

/** A record as stored: its external id, its JSON text (`id` first) and what is derived from it. */
export interface PreparedRecord {
  externalId: string
  /** JSON text of the record with `id` replaced by the external id and moved first */
  json: string
  fingerprint: string
  /** Upper bound of the bytes this record adds to a GET /records page */
  size: number
}

const MAX_ID_LENGTH = 255

// Bytes `_nango_metadata` can add to a record: four RFC 3339 timestamps (32 bytes each), a cursor
// (at most ~80 bytes of base64), the action and the key names come to under 400 bytes.
export const METADATA_BYTES = 400

/** Why a record was refused; names the record by its position (and id when it has one). */
export class RecordError extends Error {
  constructor(
    readonly index: number,
    readonly recordId: string | undefined,
    /** what is wrong, without the record's position */
    readonly reason: string,
  ) {
    super(`record ${index}${recordId === undefined ? '' : ` (id ${JSON.stringify(recordId)})`}: ${reason}`)
    this.name = 'RecordError'
  }
}

/**
 * The external id of a record: a string, or a number stored as its string, NUL characters
 * stripped (Postgres text cannot hold them), 1 to 255 characters.
 */
export function externalIdOf(value: unknown): string | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  if (typeof value !== 'string') return undefined
  const id = value.replaceAll('\0', '')
  return id.length >= 1 && id.length <= MAX_ID_LENGTH ? id : undefined
}

/**
 * Checks what every incoming record (full or partial) must be: a JSON object with a usable `id`
 * and nothing JSON cannot hold. Returns the id and the other fields, without `_nango_metadata`.
 */
export function recordFields(
  value: unknown,
  index: number,
): { externalId: string; fields: Record<string, unknown> } {
  if (!isPlainObject(value)) throw new RecordError(index, undefined, 'must be a JSON object')
  const externalId = externalIdOf(value.id)
  if (externalId === undefined) {
    throw new RecordError(index, undefined, 'needs an "id": a string of 1 to 255 characters, or a number')
  }
  const problem = jsonProblem(value)
  if (problem) throw new RecordError(index, externalId, problem)
  const { id: _id, _nango_metadata: _metadata, ...fields } = value
  return { externalId, fields }
}

/** Validates one incoming record and prepares what is stored; throws RecordError. */
export function prepareRecord(value: unknown, index: number, sealer: Sealer): PreparedRecord {
  const { externalId, fields: rest } = recordFields(value, index)
  let json: string
  try {
    // Spliced rather than `{ id, ...rest }`: JavaScript puts integer-like keys ("2024") first in
    // any object, which would push `id` out of first place.
    const fields = JSON.stringify(rest)
    json = `{"id":${JSON.stringify(externalId)}${fields === '{}' ? '}' : `,${fields.slice(1)}`}`
  } catch (err) {
    throw new RecordError(index, externalId, `is not serialisable as JSON: ${(err as Error).message}`)
  }
  return {
    externalId,
    json,
    fingerprint: sealer.fingerprint(json),
    size: Buffer.byteLength(json) + METADATA_BYTES,
  }
}
