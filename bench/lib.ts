import { type ChildProcess, spawn } from 'node:child_process'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'

import pg from 'pg'

/** Shared pieces of the benchmarks: databases, the server process, timing and reporting. */

export const ADMIN_URL =
  process.env.BENCH_DATABASE_URL ??
  process.env.TEST_DATABASE_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres'

export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL)
  url.pathname = `/${name}`
  return url.toString()
}

/** Drops and recreates a database for one benchmark run. */
export async function freshDatabase(name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  return databaseUrl(name)
}

export async function dropDatabase(name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.end()
}

export interface ServerProcess {
  url: string
  pid: number
  /** Peak resident set size so far, from /proc (VmHWM), in MB */
  peakRssMb(): Promise<number>
  /** Resident set size now of the server and every process under it (its sync workers), in MB */
  treeRssMb(): Promise<number>
  stop(): Promise<void>
}

/**
 * Starts the real `syncstore serve` on loopback. BENCH_SERVER_NODE_ARGS adds Node options to the
 * server process only, e.g. `--cpu-prof --cpu-prof-dir=prof` to see where a benchmark spends its time.
 */
export async function startServer(env: Record<string, string>): Promise<ServerProcess> {
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, 'bin/syncstore.js', 'serve'], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`server did not start:\n${output}`))
    }, 60_000)
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const match = /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(output)
      if (match?.[1]) {
        clearTimeout(timer)
        // From here on the log is drained unread, so the pipe never fills and stalls the server.
        child.stdout!.off('data', onData)
        child.stderr!.off('data', onData)
        if (process.env.BENCH_SERVER_OUTPUT) child.stdout!.pipe(process.stderr)
        else child.stdout!.resume()
        child.stderr!.resume()
        resolve(match[1])
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`server exited (${code}):\n${output}`)))
  })
  return {
    url,
    pid: child.pid!,
    async peakRssMb() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8')
      return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
    },
    async treeRssMb() {
      let kb = 0
      for (const pid of await descendants(child.pid!)) {
        const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
        kb += Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0)
      }
      return kb / 1024
    },
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}

/** `root` and every process below it, from each process's parent in /proc/<pid>/stat. */
async function descendants(root: number): Promise<number[]> {
  const parents = new Map<number, number>()
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '')
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    if (ppid) parents.set(Number(entry), ppid)
  }
  const tree = [root]
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parents) if (ppid === tree[i]) tree.push(pid)
  }
  return tree
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now()
  const value = await fn()
  return { ms: performance.now() - start, value }
}

export const round = (n: number, digits = 0) => Number(n.toFixed(digits))

export function machine() {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
  }
}

export interface Row {
  measurement: string
  ours: string
  baseline: string
  ratio: string
  target: string
}

export function printTable(title: string, rows: Row[]): void {
  const header: Row = {
    measurement: 'measurement',
    ours: 'syncstore',
    baseline: 'raw Postgres',
    ratio: 'ratio',
    target: 'target',
  }
  const all = [header, ...rows]
  const keys = Object.keys(header) as (keyof Row)[]
  const widths = keys.map((k) => Math.max(...all.map((r) => r[k].length)))
  console.log(`\n${title}`)
  for (const r of all) {
    console.log(
      keys.map((k, i) => (i === 0 ? r[k].padEnd(widths[i]!) : r[k].padStart(widths[i]!))).join('  '),
    )
  }
}

export async function writeResults(file: string, results: unknown): Promise<void> {
  await mkdir(new URL('./results/', import.meta.url), { recursive: true })
  await writeFile(new URL(`./results/${file}`, import.meta.url), `${JSON.stringify(results, null, 2)}\n`)
}

/** Deterministic pseudo-random numbers (mulberry32), so every run writes the same data. */
export function random(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
