import { existsSync, watch } from 'node:fs'

import type { Logger } from '../logger.ts'

/**
 * Calls `deploy` after files under `dirs` change (`serve --watch`), once the changes settle for
 * `debounceMs`. Deploys never overlap: a change during one deploys again after it.
 */
export function watchFolders(
  dirs: readonly string[],
  deploy: () => Promise<void>,
  logger: Logger,
  debounceMs = 150,
): { close(): Promise<void> } {
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let again = false
  const run = () => {
    timer = undefined
    if (running) {
      again = true
      return
    }
    running = deploy()
      .catch((err: unknown) => logger.error({ err }, 'redeploy failed'))
      .finally(() => {
        running = undefined
        if (again) {
          again = false
          run()
        }
      })
  }
  const watchers = dirs
    .filter((dir) => existsSync(dir))
    .map((dir) =>
      watch(dir, { recursive: true }, (_event, file) => {
        // Editors' swap and backup files, and build output, are not sources.
        if (file && /(^|\/)(\.|node_modules\/|dist\/|build\/)|~$/.test(file)) return
        clearTimeout(timer)
        timer = setTimeout(run, debounceMs)
      }).on('error', (err) => logger.warn({ err, dir }, 'stopped watching a folder')),
    )
  return {
    async close() {
      clearTimeout(timer)
      for (const w of watchers) w.close()
      await running
    },
  }
}
