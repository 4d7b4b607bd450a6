import { createSync } from 'syncstore'

/** A run that does nothing: what remains is the runtime's own cost per run. */
export default createSync({
  description: 'benchmark: an empty run',
  frequency: 'every day',
  autoStart: false,
  models: { Nothing: { type: 'object' } },
  async exec() {},
})
