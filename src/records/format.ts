import { encodeCursor, pgTimestampToRfc3339 } from './cursor.ts'
import type { Page, RecordRow } from './read.ts'

/**
 * GET /records bodies are spliced from the stored JSON text instead of parsed and re-serialised:
 * each record is its stored text (`id` first) with `_nango_metadata` appended, in Nango's key
 * order. The response is `{"next_cursor": ..., "records": [...]}`, Nango's key order.
 */
export function renderPage(page: Page): string {
  let records = ''
  let lastCursor: string | null = null
  for (const row of page.records) {
    const modified = pgTimestampToRfc3339(row.lastModifiedAt)
    lastCursor = encodeCursor(modified, row.id)
    const head = row.json === null ? `{"id":${JSON.stringify(row.externalId)}` : row.json.slice(0, -1)
    records +=
      (records === '' ? '' : ',') +
      head +
      ',"_nango_metadata":{"first_seen_at":"' +
      pgTimestampToRfc3339(row.firstSeenAt) +
      '","last_modified_at":"' +
      modified +
      '","last_action":"' +
      lastAction(row) +
      '","deleted_at":' +
      optionalTime(row.deletedAt) +
      ',"pruned_at":' +
      optionalTime(row.prunedAt) +
      ',"cursor":"' +
      lastCursor +
      '"}}'
  }
  const next = page.hasMore && lastCursor !== null ? `"${lastCursor}"` : 'null'
  return `{"next_cursor":${next},"records":[${records}]}`
}

function lastAction(row: RecordRow): 'ADDED' | 'UPDATED' | 'DELETED' {
  if (row.deletedAt !== null) return 'DELETED'
  return row.firstSeenAt === row.lastModifiedAt ? 'ADDED' : 'UPDATED'
}

const optionalTime = (text: string | null) => (text === null ? 'null' : `"${pgTimestampToRfc3339(text)}"`)
