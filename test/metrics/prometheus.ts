/**
 * A reader of Prometheus' text exposition format (version 0.0.4), strict enough to catch what a
 * scraper would refuse: every sample belongs to a family announced by `# HELP` and `# TYPE` lines
 * before it, label values are quoted with \\, \" and \n escaped, and values are numbers.
 */

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Family {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  samples: Sample[]
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/y
const SUFFIXES = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] } as const

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  let current: Family | undefined
  for (const [index, line] of text.split('\n').entries()) {
    const where = `line ${index + 1} (${JSON.stringify(line)})`
    if (line === '') continue
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string]
      let family = families.get(name)
      if (!family) {
        family = { name, help: '', type: 'untyped', samples: [] }
        families.set(name, family)
      }
      if (kind === 'HELP') family.help = rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\')
      else if (['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) {
        family.type = rest as Family['type']
      } else throw new Error(`${where}: unknown type ${rest}`)
      current = family
      continue
    }
    if (line.startsWith('#')) continue
    const match = SAMPLE.exec(line)
    if (!match) throw new Error(`${where}: not a sample`)
    const [, name, labelText, valueText] = match as unknown as [string, string, string | undefined, string]
    const labels: Record<string, string> = {}
    if (labelText) {
      LABEL.lastIndex = 0
      while (LABEL.lastIndex < labelText.length) {
        const label = LABEL.exec(labelText)
        if (!label) throw new Error(`${where}: bad labels`)
        labels[label[1]!] = label[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
      }
    }
    // As Prometheus reads it (Go's ParseFloat): NaN and Inf in any case; prom-client writes `Nan`
    // for a mean of no samples.
    const value = /^[+-]?inf$/i.test(valueText)
      ? valueText.startsWith('-')
        ? -Infinity
        : Infinity
      : /^nan$/i.test(valueText)
        ? NaN
        : Number(valueText)
    if (Number.isNaN(value) && !/^nan$/i.test(valueText)) throw new Error(`${where}: value is not a number`)
    const suffixes =
      current && current.type in SUFFIXES ? SUFFIXES[current.type as keyof typeof SUFFIXES] : []
    const belongs =
      current && (name === current.name || suffixes.some((s: string) => name === current!.name + s))
    if (!belongs) throw new Error(`${where}: sample outside its family's HELP and TYPE`)
    current!.samples.push({ name, labels, value })
  }
  for (const family of families.values()) {
    if (!family.help || family.type === 'untyped') throw new Error(`${family.name}: no HELP or no TYPE`)
  }
  return families
}
