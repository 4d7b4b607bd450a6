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

async function isAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0)
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  return !(await hasExited(pid))
}

/**
 * Whether `pid` has exited but not been reaped by its parent yet (a zombie): it still answers
 * kill(pid, 0), but holds nothing, and may stay so for as long as its parent lives. Linux says so
 * in /proc/<pid>/stat, `pid (comm) state ...`; comm may itself hold spaces and ')', so the state
 * is the field after the last ')'. Z is a zombie, X (rarely seen) dead. Where there is no /proc
 * (macOS), kill(pid, 0) is all there is to go on.
 */
async function hasExited(pid: number): Promise<boolean> {
  let stat: string
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return false
  }
  const state = stat.slice(stat.lastIndexOf(')') + 1).trimStart()[0]
  return state === 'Z' || state === 'X'
}

/** The live holder of the lock, if any (a lock left by a dead process does not count). */
export async function lockHolder(dataDir: string): Promise<LockHolder | undefined> {
  try {
    const holder = JSON.parse(await readFile(lockPath(dataDir), 'utf8')) as LockHolder
    return (await isAlive(holder.pid)) ? holder : undefined
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
