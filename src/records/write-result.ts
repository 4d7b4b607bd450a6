/** What a write did, by external id. Every id given appears in exactly one list. */
export interface WriteResult {
  added: string[]
  updated: string[]
  deleted: string[]
  unchanged: string[]
  /** Ids given more than once in the batch: the first occurrence was used, the rest ignored. */
  duplicates: string[]
  /** Ids the operation does not apply to (batchUpdate: unknown, deleted or pruned; batchDelete: unknown). */
  ignored: string[]
}

export const emptyResult = (): WriteResult => ({
  added: [],
  updated: [],
  deleted: [],
  unchanged: [],
  duplicates: [],
  ignored: [],
})

/** Keeps the first of each external id, like Nango; reports the others as duplicates. */
export function firstOfEach<T extends { externalId: string }>(
  items: readonly T[],
): { unique: T[]; duplicates: string[] } {
  const seen = new Set<string>()
  const unique: T[] = []
  const duplicates: string[] = []
  for (const item of items) {
    if (seen.has(item.externalId)) duplicates.push(item.externalId)
    else {
      seen.add(item.externalId)
      unique.push(item)
    }
  }
  return { unique, duplicates }
}
