import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Worker } from 'node:worker_threads'

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
  /** Heap limit of each worker; a function that allocates past it fails its run, not the server. */
  memoryMb: number
  /** Wall-clock limit of one run */
  timeoutMs: number
  /** Idle workers kept warm, so a run does not pay for starting one */
  idle: number
  logger: Logger
}

interface PooledWorker {
  worker: Worker
  ready: Promise<void>
  /** bundles this worker has imported (Node keeps each module for the worker's life) */
  modules: Set<string>
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
 * Worker threads for sync functions. A worker that finished a run cleanly is reused; one whose
 * function overran its time, exhausted its memory or crashed is terminated and replaced, so
 * nothing a function does can take the server down or leak into the next run's limits.
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
    const worker = new Worker(WORKER_ENTRY, {
      workerData: { task: TASK },
      resourceLimits: { maxOldGenerationSizeMb: this.o.memoryMb },
      stdout: false,
      stderr: false,
    })
    // Until a run is attached, a dying worker is simply forgotten.
    worker.on('error', (err) => this.o.logger.debug({ err }, 'idle sync worker failed'))
    worker.once('exit', () => {
      const index = this.idle.findIndex((p) => p.worker === worker)
      if (index >= 0) this.idle.splice(index, 1)
    })
    const ready = new Promise<void>((resolve, reject) => {
      const onMessage = (m: ToMain) => {
        if (m.type !== 'ready') return
        worker.off('message', onMessage)
        resolve()
      }
      worker.on('message', onMessage)
      worker.once('exit', (code) =>
        reject(new RunFailure(`The sync worker exited while starting (code ${code})`)),
      )
    })
    ready.catch(() => undefined)
    return { worker, ready, modules: new Set() }
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
    const { worker } = pooled
    worker.removeAllListeners('error')
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
          worker.off('message', onMessage)
          worker.off('error', onError)
          worker.off('exit', onExit)
        }
        const onMessage = (m: ToMain) => {
          if (m.type === 'call') {
            answerCall(handlers, m).then(
              (result) => worker.postMessage({ type: 'reply', id: m.id, result } satisfies ToWorker),
              (err: Error) =>
                worker.postMessage({ type: 'reply', id: m.id, error: callError(err) } satisfies ToWorker),
            )
          } else if (m.type === 'done' && m.runId === run.runId) {
            cleanup()
            reusable = true
            resolve()
          } else if (m.type === 'failed' && m.runId === run.runId) {
            cleanup()
            reject(new RunFailure(m.error.message, { cause: m.error.stack }))
          }
        }
        const onError = (err: Error & { code?: string }) => {
          cleanup()
          if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
            fail(`The sync function ran out of memory (limit ${this.o.memoryMb} MB) and was stopped`)
          } else {
            fail(`The sync function crashed: ${err.message}`)
          }
        }
        const onExit = (code: number) => {
          cleanup()
          fail(`The sync worker exited unexpectedly (code ${code})`)
        }
        worker.on('message', onMessage)
        worker.on('error', onError)
        worker.on('exit', onExit)
        if (signal.aborted) return onAbort()
        worker.postMessage({ type: 'run', run, file } satisfies ToWorker)
      })
    } finally {
      pooled.modules.add(bundle.hash)
      if (reusable && !this.closed && pooled.modules.size < MODULES_PER_WORKER) {
        worker.on('error', (err) => this.o.logger.debug({ err }, 'idle sync worker failed'))
        this.idle.push(pooled)
      } else {
        // Whatever the dying worker still reports must not be an unhandled 'error' event.
        worker.on('error', () => undefined)
        void worker.terminate()
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.idle.splice(0).map((p) => p.worker.terminate()))
    if (this.bundleDir) await rm(await this.bundleDir, { recursive: true, force: true })
  }
}
