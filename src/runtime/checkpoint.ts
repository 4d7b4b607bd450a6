/**
 * Checkpoints are flat objects (Nango's rules): at most 16 keys of up to 255 characters, each value
 * a string (up to 4,000 characters), a number or a boolean. Dates arrive as ISO strings.
 */
export const MAX_CHECKPOINT_KEYS = 16

export function checkpointProblem(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return 'a checkpoint must be an object'
  }
  const entries = Object.entries(value)
  if (entries.length > MAX_CHECKPOINT_KEYS) return `a checkpoint has at most ${MAX_CHECKPOINT_KEYS} keys`
  for (const [key, v] of entries) {
    if (key.length === 0 || key.length > 255) {
      return `checkpoint key "${key.slice(0, 40)}" must have 1 to 255 characters`
    }
    if (typeof v === 'string') {
      if (v.length > 4000) return `checkpoint value "${key}" is longer than 4000 characters`
    } else if (typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) {
      return `checkpoint value "${key}" must be a string, a number or a boolean (no nesting)`
    }
  }
  return null
}
