import { createSync } from 'syncstore'

/** Saves BENCH_SAVE_RECORDS (from an environment variable) ~1 KB records in batches of 1,000. */
export default createSync({
  description: 'benchmark: batchSave from inside a sync function',
  frequency: 'every day',
  autoStart: false,
  models: { Item: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } } },
  async exec(nango) {
    const vars = await nango.getEnvironmentVariables()
    const total = Number(vars.find((v) => v.name === 'BENCH_SAVE_RECORDS')?.value ?? 10_000)
    const text = 'x'.repeat(900)
    for (let start = 0; start < total; start += 1000) {
      const batch = Array.from({ length: Math.min(1000, total - start) }, (_, i) => ({
        id: `item-${start + i}`,
        name: `Item ${start + i}`,
        text,
        n: start + i,
        flag: i % 2 === 0,
      }))
      await nango.batchSave(batch, 'Item')
    }
  },
})
