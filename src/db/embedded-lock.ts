import { mkdir, open, readFile, rm } from 'node:fs/promises'
import path from 'node:path'

/**
 * The embedded database is a single-process engine: two processes opening one data folder would
 * corrupt it. Whoever opens it holds `<dataDir>.lock`, which names the holder's pid and, for a
 * running server, the socket through which CLI commands are handed to it (src/cli/forward.ts).
 */
export interface LockHolder {
  pid: number
  /** Set by `syncstore serve`: where it accepts forwarded CLI commands. */
  socket?: string
}

export class EmbeddedBusyError extends Error {
  constructor(readonly holder: LockHolder) {
    super(`The embedded database is in use by process ${holder.pid}`)
    this.name = 'EmbeddedBusyError'
  }
}

export interface EmbeddedLock {
  release(): Promise<void>
}

export function lockPath(dataDir: string): string {
  return `${dataDir.replace(/[\\/]+$/, '')}.lock`
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** The live holder of the lock, if any (a lock left by a dead process does not count). */
export async function lockHolder(dataDir: string): Promise<LockHolder | undefined> {
  try {
    const holder = JSON.parse(await readFile(lockPath(dataDir), 'utf8')) as LockHolder
    return isAlive(holder.pid) ? holder : undefined
  } catch {
    return undefined
  }
}

export async function acquireEmbeddedLock(dataDir: string, holder: LockHolder): Promise<EmbeddedLock> {
  const file = lockPath(dataDir)
  await mkdir(path.dirname(file), { recursive: true })
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o600)
      await handle.writeFile(JSON.stringify(holder))
      await handle.close()
      return { release: () => rm(file, { force: true }) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const live = await lockHolder(dataDir)
      if (live) throw new EmbeddedBusyError(live)
      // Left behind by a process that died: take it over.
      await rm(file, { force: true })
    }
  }
  throw new Error(`Could not lock ${file}`)
}
