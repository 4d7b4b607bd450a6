/**
 * Record cursors: standard base64 of `<last_modified_at>||<internal id>`, where the timestamp is
 * RFC 3339 with microseconds as Postgres writes it in JSON (`2024-03-27T15:10:27.123456+00:00`).
 * Records are ordered by (last_modified_at, id); GET reads after a cursor, prune up to and
 * including it.
 */
export interface CursorPosition {
  /** RFC 3339, passed to Postgres as text so no precision is lost */
  modifiedAt: string
  id: number
}

export function encodeCursor(modifiedAt: string, id: number | string): string {
  return Buffer.from(`${modifiedAt}||${id}`).toString('base64')
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(Z|[+-](\d{2}):(\d{2}))$/i

/** Whether `text` is an RFC 3339 timestamp naming a real instant (no February 30th). */
function isRfc3339(text: string): boolean {
  const m = RFC3339.exec(text)
  if (!m) return false
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6] ?? '0'].map(
    Number,
  ) as number[]
  const date = new Date(Date.UTC(year!, month! - 1, day!))
  return (
    date.getUTCFullYear() === year &&
    date.getUTCMonth() === month! - 1 &&
    date.getUTCDate() === day &&
    hour! < 24 &&
    minute! < 60 &&
    second! < 60 &&
    (m[8] === undefined || (Number(m[8]) < 24 && Number(m[9]) < 60))
  )
}

/**
 * Whether Postgres can take `text` (an RFC 3339 / ajv date-time) as a timestamptz: it refuses
 * year 0 and UTC offsets beyond ±15:59, which would otherwise fail the query with a 500.
 */
export function isStorableTimestamp(text: string): boolean {
  const m = /^(\d{4})-.*?(?:z|[+-](\d\d)(?::?\d\d)?)$/i.exec(text)
  return m !== null && Number(m[1]) >= 1 && (m[2] === undefined || Number(m[2]) < 16)
}

/**
 * Decodes a cursor, or returns undefined for anything that is not one of ours. Like Node's own
 * decoder, URL-safe characters and missing padding are accepted.
 */
export function decodeCursor(cursor: string): CursorPosition | undefined {
  const text = Buffer.from(cursor, 'base64').toString('latin1')
  const parts = text.split('||')
  if (parts.length !== 2) return undefined
  const [modifiedAt, id] = parts as [string, string]
  // Ids are read into JS numbers: one past 2^53 would silently become its neighbour.
  if (
    !isRfc3339(modifiedAt) ||
    !isStorableTimestamp(modifiedAt) ||
    !/^[1-9]\d{0,15}$/.test(id) ||
    !Number.isSafeInteger(Number(id))
  ) {
    return undefined
  }
  return { modifiedAt, id: Number(id) }
}

/** Postgres' text output of a timestamptz in UTC (`2024-03-27 15:10:27.123456+00`) as RFC 3339. */
export function pgTimestampToRfc3339(text: string): string {
  return `${text.replace(' ', 'T')}:00`
}
