import { createSync } from 'syncstore'

/** The smallest useful periodic sync: one record per run, every 30 seconds. */
export default createSync({
  description: 'benchmark: a sync on a 30 s frequency',
  frequency: '30s',
  autoStart: false,
  models: { Tick: { type: 'object' } },
  async exec(nango) {
    await nango.batchSave([{ id: 'last', at: new Date().toISOString() }], 'Tick')
  },
})
