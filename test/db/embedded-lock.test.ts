import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { acquireEmbeddedLock, EmbeddedBusyError, lockHolder } from '../../src/db/embedded-lock.ts'

/**
 * A lock naming a process that has exited is taken over, even when that process is a zombie its
 * parent never reaped: it still answers kill(pid, 0), so only /proc tells it apart (Linux). The
 * database itself plays no part, so this runs the same in both projects.
 */
describe.skipIf(!existsSync('/proc/self/stat'))('the embedded lock and zombie holders (Linux)', () => {
  let dir: string
  const children: ChildProcess[] = []
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-lock-'))
  })
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  })

  const statOf = (pid: number) => readFile(`/proc/${pid}/stat`, 'utf8')

  /** Runs `sh -c script`; the script prints one pid on its first line, which this resolves with. */
  function spawnPrintingPid(script: string, ...args: string[]): Promise<number> {
    const child = spawn('sh', ['-c', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    return new Promise((resolve, reject) => {
      let out = ''
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk
        if (out.includes('\n')) resolve(Number(out.split('\n')[0]))
      })
      child.once('exit', () => reject(new Error(`sh exited first: ${out}`)))
    })
  }

  /** Waits (up to 5 s) for /proc/<pid>/stat to match: `pid (comm) state ...`. */
  async function waitForStat(pid: number, pattern: RegExp): Promise<void> {
    for (let i = 0; i < 100 && !pattern.test(await statOf(pid)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    expect(await statOf(pid)).toMatch(pattern)
  }

  it('takes over a lock whose holder is an unreaped (zombie) process', async () => {
    // `sleep 0` exits at once; its parent becomes `sleep 60`, which never waits for children.
    const zombie = await spawnPrintingPid('sleep 0 & echo $!; exec sleep 60')
    await waitForStat(zombie, /^\d+ \(.*\) Z /)
    expect(() => process.kill(zombie, 0)).not.toThrow()

    const dataDir = path.join(dir, 'zombie')
    await acquireEmbeddedLock(dataDir, { pid: zombie })
    expect(await lockHolder(dataDir)).toBeUndefined()
    const lock = await acquireEmbeddedLock(dataDir, { pid: process.pid })
    expect(await lockHolder(dataDir)).toEqual({ pid: process.pid })
    await lock.release()
  })

  it('still refuses a live holder whose name holds ") Z ("', async () => {
    // The name comes from the file run: a link to `sleep` named so that a parser stopping at the
    // first ')' would read the state as Z.
    const sleep = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim()
    const oddName = path.join(dir, 'x) Z (y')
    await symlink(sleep, oddName)
    const live = await spawnPrintingPid('echo $$; exec "$0" 60', oddName)
    await waitForStat(live, /^\d+ \(x\) Z \(y\) S /)

    const dataDir = path.join(dir, 'odd-name')
    await acquireEmbeddedLock(dataDir, { pid: live })
    expect(await lockHolder(dataDir)).toEqual({ pid: live })
    await expect(acquireEmbeddedLock(dataDir, { pid: process.pid })).rejects.toBeInstanceOf(EmbeddedBusyError)
  })
})
