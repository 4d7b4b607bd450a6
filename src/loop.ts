import { setTimeout as sleep } from 'node:timers/promises'

import type { Logger } from './logger.ts'

export interface Loop {
  /** Stops after the pass in progress, if any, finishes. */
  stop(): Promise<void>
}

/**
 * A background task run every `intervalMs` (±10% jitter, so instances started together spread
 * out). A failing pass is logged and the loop goes on; `stop` waits for the current pass.
 */
export function startLoop(options: {
  name: string
  intervalMs: number
  logger: Logger
  run: (signal: AbortSignal) => Promise<void>
}): Loop {
  const controller = new AbortController()
  const { signal } = controller
  const done = (async () => {
    while (!signal.aborted) {
      const delay = options.intervalMs * (0.9 + Math.random() * 0.2)
      try {
        await sleep(delay, undefined, { signal })
      } catch {
        return
      }
      try {
        await options.run(signal)
      } catch (err) {
        options.logger.error({ err, loop: options.name }, `${options.name} pass failed`)
      }
    }
  })()
  return {
    stop: async () => {
      controller.abort()
      await done
    },
  }
}
