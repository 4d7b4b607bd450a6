import ms from 'ms'

/**
 * Sync frequencies, as Nango reads them: a few named intervals, otherwise anything the `ms`
 * library understands ("30 minutes", "2h", "1d", "1.5h"), with or without a leading "every ".
 */
const ALIASES: Record<string, { ms: number; normalized: string }> = {
  'half day': { ms: 12 * 3_600_000, normalized: '12h' },
  'half hour': { ms: 30 * 60_000, normalized: '30m' },
  'quarter hour': { ms: 15 * 60_000, normalized: '15m' },
  hour: { ms: 3_600_000, normalized: '1h' },
  day: { ms: 86_400_000, normalized: '1d' },
  week: { ms: 7 * 86_400_000, normalized: '1w' },
  month: { ms: 30 * 86_400_000, normalized: '30d' },
}

// Nango's floor: anything more frequent is rejected ("The minimum interval is 30 seconds").
const MIN_FREQUENCY_MS = 30_000
/**
 * Our ceiling, a year: the pattern takes any number of digits, and "every 99999999999 days" would
 * overflow schedules.frequency_ms (bigint) or push the next due time past Postgres' last timestamp
 * (year 294276), failing the write. A sync due less than once a year is a paused one.
 */
const MAX_FREQUENCY_MS = 365 * 86_400_000

/** The pattern Nango's API validates frequencies with (frequencySchema), for request schemas. */
export const FREQUENCY_PATTERN =
  '^(every )?((\\d+)?\\s?(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days)|(month|week|half day|half hour|quarter hour))$'

export interface Frequency {
  ms: number
  /** Nango's normalised form, as PUT /sync/update-connection-frequency answers it ("2 hours", "1h") */
  normalized: string
}

/** Parses a frequency; undefined when it is not one or is under 30 s or over a year. */
export function parseFrequency(text: string): Frequency | undefined {
  const bare = text
    .trim()
    .replace(/^every\s+/i, '')
    .toLowerCase()
  const alias = ALIASES[bare]
  if (alias) return alias
  let value: number | undefined
  try {
    value = ms(bare as ms.StringValue)
  } catch {
    return undefined
  }
  if (typeof value !== 'number' || !(value >= MIN_FREQUENCY_MS && value <= MAX_FREQUENCY_MS)) {
    return undefined
  }
  return { ms: value, normalized: bare }
}
