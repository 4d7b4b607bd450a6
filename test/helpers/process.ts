import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/**
 * The real `bin/syncstore.js` as a child process, for tests of what a user runs: the command line,
 * startup and shutdown. Every child is tracked so `killAll()` (in afterAll) ends it even when a test
 * failed half-way, and every wait is bounded.
 */

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const BIN = fileURLToPath(new URL('../../bin/syncstore.js', import.meta.url))

/** A CLI run loads TypeScript through tsx (~3 s); on a loaded machine it can take several times that. */
const CLI_TIMEOUT_MS = 60_000
/** A first start on an empty embedded folder runs initdb and every migration (~10 s). */
const START_TIMEOUT_MS = 90_000

export const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

/** A spawned process, its output so far, and bounded waits on both. */
class Child {
  stdout = ''
  stderr = ''
  /** Resolves on 'close': the process has exited and both pipes are drained. */
  readonly closed: Promise<Exit>
  private done = false
  private readonly checks = new Set<() => void>()

  constructor(readonly proc: ChildProcess) {
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.changed(() => (this.stdout += chunk)))
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.changed(() => (this.stderr += chunk)))
    this.closed = new Promise((resolve) =>
      proc.once('close', (code, signal) => {
        this.changed(() => (this.done = true))
        resolve({ code, signal })
      }),
    )
  }

  private changed(update: () => void): void {
    update()
    this.checks.forEach((check) => check())
  }

  /** Resolves with `find()`'s first defined answer; rejects if the process ends or time runs out. */
  waitFor<T>(what: string, find: () => T | undefined, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const finish = (settle: () => void) => {
        clearTimeout(timer)
        this.checks.delete(check)
        settle()
      }
      const fail = (why: string) =>
        finish(() =>
          reject(new Error(`${what}: ${why}\n--- stdout\n${this.stdout}--- stderr\n${this.stderr}`)),
        )
      const check = () => {
        const found = find()
        if (found !== undefined) finish(() => resolve(found))
        else if (this.done) fail('the process exited first')
      }
      const timer = setTimeout(() => fail(`not seen within ${timeoutMs} ms`), timeoutMs)
      this.checks.add(check)
      check()
    })
  }

  waitForExit(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`process ${this.proc.pid} still running after ${timeoutMs} ms`)),
        timeoutMs,
      )
    })
    return Promise.race([this.closed, timeout]).finally(() => clearTimeout(timer))
  }
}

const live = new Set<Child>()
// If the test worker itself goes away, take the children with it.
process.once('exit', () => live.forEach((child) => child.proc.kill('SIGKILL')))

function track(proc: ChildProcess): Child {
  const child = new Child(proc)
  live.add(child)
  void child.closed.then(() => live.delete(child))
  return child
}

export type ChildEnv = Record<string, string | undefined>

/**
 * A clean environment: nothing leaks in from the developer's shell (a DATABASE_URL or
 * NANGO_SECRET_KEY_DEV there would change what the test runs against). `env` must name the
 * database, so a test can never touch the repository's own ./.syncstore/data. Undefined unsets.
 */
function childEnv(env: ChildEnv): NodeJS.ProcessEnv {
  if (!env.DATABASE_URL && !env.SYNCSTORE_DATA_DIR) {
    throw new Error('a child process needs DATABASE_URL or SYNCSTORE_DATA_DIR (see createProcessDatabase)')
  }
  const merged: NodeJS.ProcessEnv = { HOST: '127.0.0.1', LOG_LEVEL: 'info' }
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG']) {
    if (process.env[name] !== undefined) merged[name] = process.env[name]
  }
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete merged[name]
    else merged[name] = value
  }
  return merged
}

function spawnSyncstore(args: readonly string[], env: ChildEnv, cwd = ROOT): Child {
  return track(
    spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  )
}

export interface CliResult extends Exit {
  stdout: string
  stderr: string
}

/** Runs `syncstore ...args` to completion; a run that outlives `timeoutMs` is killed and fails. */
export async function runCli(
  args: readonly string[],
  env: ChildEnv,
  { timeoutMs = CLI_TIMEOUT_MS } = {},
): Promise<CliResult> {
  const child = spawnSyncstore(args, env)
  try {
    const exit = await child.waitForExit(timeoutMs)
    return { ...exit, stdout: child.stdout, stderr: child.stderr }
  } catch (err) {
    child.proc.kill('SIGKILL')
    throw new Error(`syncstore ${args.join(' ')}: ${(err as Error).message}\n${child.stdout}${child.stderr}`)
  }
}

/** One pino JSON line of the server's stdout. */
export type LogLine = Record<string, unknown> & { msg?: string }

export interface ServerProcess {
  /** http://127.0.0.1:<port> */
  readonly url: string
  readonly port: number
  readonly pid: number
  /** Milliseconds from spawn to the "syncstore listening" line. */
  readonly startupMs: number
  stdout(): string
  stderr(): string
  /** The JSON lines written to stdout so far. */
  logs(): LogLine[]
  /** The first log line (already written or still to come) that matches. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  /** The first match of `pattern` in stderr (already written or still to come). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>
  /** Resolves once the process exited and its output is complete. */
  waitForExit(timeoutMs?: number): Promise<Exit>
  kill(signal?: NodeJS.Signals): void
}

function parseLogs(stdout: string): LogLine[] {
  const lines: LogLine[] = []
  for (const text of stdout.split('\n')) {
    try {
      lines.push(JSON.parse(text) as LogLine)
    } catch {
      // a partial last line, or not JSON
    }
  }
  return lines
}

/**
 * Starts `syncstore serve` on a port the system picks (PORT=0 unless `env` says otherwise) and
 * resolves once it logs that it listens; rejects, with its output, if it exits or hangs first.
 */
export async function startServer(
  env: ChildEnv,
  { timeoutMs = START_TIMEOUT_MS, cwd = ROOT, args = [] as readonly string[] } = {},
): Promise<ServerProcess> {
  const spawnedAt = performance.now()
  const child = spawnSyncstore(['serve', ...args], { PORT: '0', ...env }, cwd)
  const waitForLog = (predicate: (line: LogLine) => boolean, ms = 30_000) =>
    child.waitFor('server log line', () => parseLogs(child.stdout).find(predicate), ms)

  let listening: LogLine
  try {
    listening = await waitForLog((line) => String(line.msg).startsWith('syncstore listening'), timeoutMs)
  } catch (err) {
    child.proc.kill('SIGKILL')
    throw err
  }
  const startupMs = Math.round(performance.now() - spawnedAt)
  const url = String(listening.address)
  return {
    url,
    port: Number(new URL(url).port),
    pid: child.proc.pid!,
    startupMs,
    stdout: () => child.stdout,
    stderr: () => child.stderr,
    logs: () => parseLogs(child.stdout),
    waitForLog,
    waitForStderr: (pattern, ms = 30_000) =>
      child.waitFor(`stderr matching ${pattern}`, () => pattern.exec(child.stderr) ?? undefined, ms),
    waitForExit: (ms = 30_000) => child.waitForExit(ms),
    kill: (signal = 'SIGTERM') => void child.proc.kill(signal),
  }
}

/** A process that idles for a minute: another program holding something the test needs. */
export function startIdleProcess(): { pid: number; kill(): Promise<Exit> } {
  const child = track(spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' }))
  return {
    pid: child.proc.pid!,
    kill: () => {
      child.proc.kill('SIGKILL')
      return child.waitForExit(5_000)
    },
  }
}

/** Kills every child still running (SIGKILL) and waits, briefly, for them to go. */
export async function killAll(): Promise<void> {
  const children = [...live]
  for (const child of children) child.proc.kill('SIGKILL')
  await Promise.allSettled(children.map((child) => child.waitForExit(5_000)))
}
