import { type ChildProcess, fork } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import type { Logger } from '../logger.ts'
import { ownModule, WORKER_ENTRY } from '../paths.ts'
import {
  answerCall,
  type CallError,
  type NangoHandlers,
  type ProxyResponse,
  type RunInfo,
  type ToMain,
  type ToWorker,
} from './protocol.ts'

/** Why a sync function did not complete; `message` is what the run's log and status show. */
class RunFailure extends Error {
  override name = 'RunFailure'
}

export interface PoolOptions {
  /** Heap limit of each worker process; a function that allocates past it fails its run, not the server. */
  memoryMb: number
  /** Wall-clock limit of one run */
  timeoutMs: number
  /** Idle workers kept warm, so a run does not pay for starting one */
  idle: number
  logger: Logger
}

interface PooledWorker {
  child: ChildProcess
  ready: Promise<void>
  /** bundles this worker has imported (Node keeps each module for the worker's life) */
  modules: Set<string>
  /** The end of what the process wrote to stderr (passed on as it comes): how V8's abort is recognised */
  stderrTail: string
}

/** A deployed bundle: its hash, and how to get its code when no worker has run it yet. */
export interface BundleRef {
  hash: string
  code: () => Promise<string>
}

/** What of a handler's error crosses to the function: a failed request keeps its status and response. */
function callError(err: Error & { status?: unknown; response?: ProxyResponse }): CallError {
  const out: CallError = { name: err.name, message: err.message }
  if (typeof err.status === 'number') out.status = err.status
  if (err.response) out.response = err.response
  return out
}

/** A worker that has imported this many bundles is replaced after its run, to free them. */
const MODULES_PER_WORKER = 64

// `.ts` run from the sources, `.js` compiled into dist/ (bin/syncstore.js picks).
const TASK = ownModule('runtime/sync.worker').href

/**
 * What a worker process keeps of the server's environment: where things are and how text and time
 * read, not its secrets (DATABASE_URL, keys) nor NODE_OPTIONS. A function reads its environment
 * variables through nango.getEnvironmentVariables().
 */
export const KEPT_ENV = [
  'PATH',
  'HOME',
  'TMPDIR',
  'TMP',
  'TEMP',
  'LANG',
  'LC_ALL',
  'TZ',
  'NODE_ENV',
  'SYSTEMROOT',
]

/** How V8 ends a process whose heap is full (`FATAL ERROR: ... - JavaScript heap out of memory`). */
const OUT_OF_MEMORY = /JavaScript heap out of memory/

/**
 * Worker processes for sync functions: each a child process of the server with the heap limit as
 * its own (`--max-old-space-size`), talking over the IPC channel. A worker that finished a run
 * cleanly is reused; one whose function overran its time, exhausted its memory or crashed is killed
 * and replaced, so nothing a function does can take the server down or leak into the next run's
 * limits. Worker threads cannot promise that: Node ends a thread at its heap limit only as far as
 * V8 lets it, and some allocations (one array grown by push, say) abort the whole process instead
 * (nodejs/node#47224), which a child process's abort is not.
 */
export class WorkerPool {
  private readonly idle: PooledWorker[] = []
  private closed = false
  /** Bundles written to disk for workers to import, by hash: `<dir>/<hash>.mjs` */
  private bundleDir: Promise<string> | undefined
  private readonly written = new Map<string, Promise<string>>()

  constructor(private readonly o: PoolOptions) {}

  /** Starts the warm workers (optional: workers are also started on demand). */
  warm(): void {
    while (this.idle.length < this.o.idle) this.idle.push(this.spawn())
  }

  private spawn(): PooledWorker {
    const env: NodeJS.ProcessEnv = { SYNCSTORE_WORKER: JSON.stringify({ task: TASK }) }
    for (const name of KEPT_ENV) if (process.env[name] !== undefined) env[name] = process.env[name]
    const child = fork(fileURLToPath(WORKER_ENTRY), [], {
      execArgv: [`--max-old-space-size=${this.o.memoryMb}`],
      env,
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    })
    const pooled: PooledWorker = { child, ready: Promise.resolve(), modules: new Set(), stderrTail: '' }
    child.stderr!.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk)
      pooled.stderrTail = (pooled.stderrTail + chunk.toString()).slice(-4096)
    })
    // Until a run is attached, a dying worker is simply forgotten.
    child.on('error', (err) => this.o.logger.debug({ err }, 'idle sync worker failed'))
    child.once('exit', () => {
      const index = this.idle.indexOf(pooled)
      if (index >= 0) this.idle.splice(index, 1)
    })
    pooled.ready = new Promise<void>((resolve, reject) => {
      const onMessage = (m: ToMain) => {
        if (m.type !== 'ready') return
        child.off('message', onMessage)
        resolve()
      }
      child.on('message', onMessage)
      child.once('exit', (code, signal) =>
        reject(new RunFailure(`The sync worker exited while starting (${exitReason(code, signal)})`)),
      )
    })
    pooled.ready.catch(() => undefined)
    return pooled
  }

  /** The bundle as a file a worker can import; written once per hash and process. */
  private bundleFile(bundle: BundleRef): Promise<string> {
    let file = this.written.get(bundle.hash)
    if (!file) {
      this.bundleDir ??= mkdtemp(path.join(os.tmpdir(), 'syncstore-bundles-'))
      file = (async () => {
        const target = path.join(await this.bundleDir!, `${bundle.hash}.mjs`)
        await writeFile(target, await bundle.code())
        return target
      })()
      // A failed read is not remembered: the next run tries again.
      file.catch(() => this.written.delete(bundle.hash))
      this.written.set(bundle.hash, file)
    }
    return file
  }

  /**
   * Runs the sync function of `bundle` and resolves when it completes. Calls it makes on `nango` go to
   * `handlers`. Rejects with RunFailure when it throws, overruns, runs out of memory, or `signal` aborts.
   */
  async run(bundle: BundleRef, run: RunInfo, handlers: NangoHandlers, signal: AbortSignal): Promise<void> {
    if (this.closed) throw new RunFailure('The server is shutting down')
    const file = await this.bundleFile(bundle)
    const pooled = this.idle.pop() ?? this.spawn()
    await pooled.ready
    const { child } = pooled
    child.removeAllListeners('error')
    pooled.stderrTail = ''
    let reusable = false
    try {
      await new Promise<void>((resolve, reject) => {
        const fail = (message: string) => reject(new RunFailure(message))
        const timer = setTimeout(
          () =>
            fail(
              `The sync function ran longer than its time limit of ${this.o.timeoutMs} ms and was stopped`,
            ),
          this.o.timeoutMs,
        )
        const onAbort = () =>
          fail(
            `The run was stopped: ${String((signal.reason as Error | undefined)?.message ?? signal.reason)}`,
          )
        signal.addEventListener('abort', onAbort, { once: true })
        const cleanup = () => {
          clearTimeout(timer)
          signal.removeEventListener('abort', onAbort)
          child.off('message', onMessage)
          child.off('error', onError)
          child.off('close', onClose)
        }
        const reply = (message: ToWorker) => {
          // A worker that died meanwhile gets no answer; its run has failed already.
          if (child.connected) child.send(message)
        }
        const onMessage = (m: ToMain) => {
          if (m.type === 'call') {
            answerCall(handlers, m).then(
              (result) => reply({ type: 'reply', id: m.id, result }),
              (err: Error) => reply({ type: 'reply', id: m.id, error: callError(err) }),
            )
          } else if (m.type === 'done' && m.runId === run.runId) {
            cleanup()
            reusable = true
            resolve()
          } else if (m.type === 'failed' && m.runId === run.runId) {
            cleanup()
            reject(new RunFailure(m.error.message, { cause: m.error.stack }))
          } else if (m.type === 'crashed') {
            cleanup()
            fail(`The sync function crashed: ${m.message}`)
          }
        }
        const onError = (err: Error) => {
          cleanup()
          fail(`The sync function crashed: ${err.message}`)
        }
        // 'close' rather than 'exit': stderr has been read to its end, and with it V8's last words.
        const onClose = (code: number | null, exitSignal: NodeJS.Signals | null) => {
          cleanup()
          if (OUT_OF_MEMORY.test(pooled.stderrTail)) {
            fail(`The sync function ran out of memory (limit ${this.o.memoryMb} MB) and was stopped`)
          } else {
            fail(`The sync worker exited unexpectedly (${exitReason(code, exitSignal)})`)
          }
        }
        child.on('message', onMessage)
        child.on('error', onError)
        child.on('close', onClose)
        if (signal.aborted) return onAbort()
        child.send({ type: 'run', run, file } satisfies ToWorker)
      })
    } finally {
      pooled.modules.add(bundle.hash)
      if (reusable && !this.closed && pooled.modules.size < MODULES_PER_WORKER) {
        child.on('error', (err) => this.o.logger.debug({ err }, 'idle sync worker failed'))
        this.idle.push(pooled)
      } else {
        // Whatever the dying worker still reports must not be an unhandled 'error' event.
        child.on('error', () => undefined)
        child.kill('SIGKILL')
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.idle.splice(0).map(({ child }) => stop(child)))
    if (this.bundleDir) await rm(await this.bundleDir, { recursive: true, force: true })
  }
}

const exitReason = (code: number | null, signal: NodeJS.Signals | null) =>
  signal ? `signal ${signal}` : `code ${code}`

/** Kills a worker process and waits for it to be gone. */
function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGKILL')
  return gone
}
