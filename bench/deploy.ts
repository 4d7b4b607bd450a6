/**
 * npm run bench:deploy — deployments on Postgres:
 * - deploying a folder of 200 syncs (20 integrations, every sync importing a shared local helper)
 *   to two environments with deployFolders, in process: first deploy, nothing changed, one file
 *   changed; where the time goes (reading the folder: bundling and the worker's load check; the
 *   transaction); and `syncstore deploy DIR` once as a user runs it, process start included;
 * - from a deployment returning to both of two `syncstore serve` processes running the new version
 *   (p50 / p99 over 20 deployments), next to the same trigger round without a deployment.
 * BENCH_QUICK=1 shrinks it for CI.
 */
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { type Kysely, sql } from 'kysely'

import { upsertConnection } from '../src/connections/store.ts'
import { createSealer } from '../src/crypto.ts'
import { openDatabase } from '../src/db/connect.ts'
import type { Database } from '../src/db/database.ts'
import { migrateToLatest } from '../src/db/migrate.ts'
import { bundleSync } from '../src/deployments/bundle.ts'
import { deployFolders, type DeployReport } from '../src/deployments/deploy.ts'
import { readFolders } from '../src/deployments/folder.ts'
import { ensureEnvironment } from '../src/environments/store.ts'
import { createLogger } from '../src/logger.ts'
import {
  dropDatabase,
  freshDatabase,
  machine,
  percentile,
  round,
  type ServerProcess,
  startServer,
  timed,
  writeResults,
} from './lib.ts'

const quick = process.env.BENCH_QUICK === '1'
const INTEGRATIONS = quick ? 2 : 20
const SYNCS_PER_INTEGRATION = quick ? 5 : 10
/** Connections per integration in dev, so that a deployment also provisions syncs and schedules. */
const CONNECTIONS_PER_INTEGRATION = 5
/** Redeploys of each kind (nothing changed, one file changed); the median is reported. */
const REDEPLOYS = quick ? 1 : 3
const LATENCY_SAMPLES = quick ? 3 : 20
/** Bounds on one latency sample: trigger rounds, and time. */
const MAX_ROUNDS = 50
const SAMPLE_TIMEOUT_MS = 15_000
const ENVIRONMENTS = ['dev', 'prod']
const DB_NAME = 'syncstore_bench_deploy'
const BIN = fileURLToPath(new URL('../bin/syncstore.js', import.meta.url))
const logger = createLogger('warn')
const sealer = createSealer(null)

const ms = (n: number) => round(n, 1)
const median = (values: number[]) => percentile(values, 50)
const sleep = (n: number) => new Promise((resolve) => setTimeout(resolve, n))

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`bench:deploy: ${what}`)
}

/** A shared helper every sync imports, outside the deployed folder, as a team's lib/ would be. */
const HELPER = `export interface Page<T> { items: T[]; next?: string }

/** Pages through an endpoint until it has no next page. */
export async function* paginate<T>(fetchPage: (cursor?: string) => Promise<Page<T>>): AsyncGenerator<T[]> {
  let cursor: string | undefined
  for (let i = 0; i < 1000; i++) {
    const page = await fetchPage(cursor)
    yield page.items
    if (!page.next) return
    cursor = page.next
  }
}

export function toRecord(raw: Record<string, unknown>): { id: string; name: string; updatedAt: string } {
  return { id: String(raw.id), name: String(raw.name ?? ''), updatedAt: new Date(0).toISOString() }
}
`

/** A sync as a team writes one; `version` changes its code (and so its bundle's hash). */
function syncSource(integration: string, name: string, version = 1): string {
  const model = `${name[0]!.toUpperCase()}${name.slice(1).replace(/-/g, '')}`
  return `import { createSync } from 'syncstore'

import { paginate, toRecord } from '../../../lib/helpers.js'

const VERSION = ${version}

export default createSync({
  description: '${integration} ${name}, version ' + VERSION,
  frequency: 'every hour',
  autoStart: true,
  syncType: 'full',
  models: {
    ${model}: {
      type: 'object',
      properties: { id: { type: 'string' }, name: { type: 'string' }, updatedAt: { type: 'string' } },
      required: ['id'],
    },
  },
  async exec(nango) {
    for await (const items of paginate(async () => ({ items: [{ id: '${name}-' + VERSION, name: '${name}' }] }))) {
      await nango.batchSave(items.map(toRecord), '${model}')
    }
  },
})
`
}

/** A temporary project: lib/helpers.ts and integrations/<key>/syncs/<name>.ts. */
async function writeProject(
  integrations: readonly string[],
  syncsPer: number,
): Promise<{ root: string; dir: string; files: { file: string; integration: string; name: string }[] }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'syncstore-bench-deploy-'))
  await writeFile(path.join(root, 'package.json'), '{"type":"module"}\n')
  await mkdir(path.join(root, 'lib'))
  await writeFile(path.join(root, 'lib', 'helpers.ts'), HELPER)
  const dir = path.join(root, 'integrations')
  const files: { file: string; integration: string; name: string }[] = []
  for (const integration of integrations) {
    await mkdir(path.join(dir, integration, 'syncs'), { recursive: true })
    for (let s = 1; s <= syncsPer; s++) {
      const name = `records-${s}`
      const file = path.join(dir, integration, 'syncs', `${name}.ts`)
      await writeFile(file, syncSource(integration, name))
      files.push({ file, integration, name })
    }
  }
  return { root, dir, files }
}

/** The database as deployFolders sees it, with the time spent in its transactions recorded. */
function timingTransactions(db: Kysely<Database>): { db: Kysely<Database>; take(): number } {
  let spent = 0
  const proxy = new Proxy(db, {
    get(target, prop) {
      if (prop === 'transaction') {
        return () => {
          const builder = target.transaction()
          return {
            async execute<T>(fn: (trx: unknown) => Promise<T>): Promise<T> {
              const start = performance.now()
              try {
                return await builder.execute(fn)
              } finally {
                spent += performance.now() - start
              }
            },
          }
        }
      }
      const value: unknown = Reflect.get(target, prop, target)
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
  return {
    db: proxy,
    take() {
      const t = spent
      spent = 0
      return t
    },
  }
}

/** `node bin/syncstore.js ...args`, wall time from spawn to exit. */
async function cli(args: string[], env: Record<string, string>) {
  const start = performance.now()
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: os.homedir(), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr.on('data', (c: Buffer) => (output += c.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000)
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  clearTimeout(timer)
  check(code === 0, `syncstore ${args.join(' ')} exited ${code}:\n${output}`)
  return { ms: performance.now() - start, output }
}

const deployed = (r: DeployReport, key: 'added' | 'changed' | 'removed') =>
  r.environments.reduce((n, e) => n + e[key].length, 0)

// --- 1. deploying a folder of many syncs ---
async function folderDeploys() {
  const url = await freshDatabase(DB_NAME)
  const db = await openDatabase({ kind: 'postgres', url }, { logger })
  await migrateToLatest(db.kysely)
  const dev = await ensureEnvironment(db.kysely, 'dev')
  await ensureEnvironment(db.kysely, 'prod')
  const keys = Array.from({ length: INTEGRATIONS }, (_, i) => `app-${String(i + 1).padStart(2, '0')}`)
  for (const key of keys) {
    for (let c = 1; c <= CONNECTIONS_PER_INTEGRATION; c++) {
      await upsertConnection(db.kysely, sealer, dev.id, { providerConfigKey: key, connectionId: `c${c}` })
    }
  }
  const project = await writeProject(keys, SYNCS_PER_INTEGRATION)
  const syncs = project.files.length
  const change = (f: { file: string; integration: string; name: string }, version: number) =>
    writeFile(f.file, syncSource(f.integration, f.name, version))
  const timing = timingTransactions(db.kysely)
  const options = { environments: ENVIRONMENTS, source: project.dir, deployedBy: 'bench' }
  const deploy = async () => {
    const { ms: total, value: report } = await timed(() => deployFolders(timing.db, [project.dir], options))
    check(report.refused.length === 0, `refused: ${JSON.stringify(report.refused)}`)
    const transaction = timing.take()
    return { total, transaction, read: total - transaction, report }
  }

  try {
    const first = await deploy()
    check(deployed(first.report, 'added') === syncs * ENVIRONMENTS.length, 'first deploy: not all added')
    const provisioned = Number(
      (await sql<{ n: string }>`SELECT count(*) AS n FROM schedules`.execute(db.kysely)).rows[0]!.n,
    )
    check(provisioned === INTEGRATIONS * CONNECTIONS_PER_INTEGRATION * SYNCS_PER_INTEGRATION, 'provisioning')

    const unchanged: Awaited<ReturnType<typeof deploy>>[] = []
    for (let i = 0; i < REDEPLOYS; i++) {
      const r = await deploy()
      check(
        r.report.environments.every((e) => e.deploymentId === null && e.unchanged === syncs),
        'an unchanged redeploy changed something',
      )
      unchanged.push(r)
    }
    const oneChanged: typeof unchanged = []
    for (let i = 0; i < REDEPLOYS; i++) {
      await change(project.files[i]!, 2)
      const r = await deploy()
      check(
        deployed(r.report, 'changed') === ENVIRONMENTS.length,
        'a one-file redeploy did not change one sync',
      )
      oneChanged.push(r)
    }

    // Where reading the folder goes: esbuild alone, file by file as readFolders does it.
    const bundling = await timed(async () => {
      for (const { file } of project.files) await bundleSync(file, project.dir)
    })
    const reading = await timed(() => readFolders([project.dir]))
    check(reading.value.refused.length === 0, 'readFolders refused a file')

    // The CLI as a user runs it, one file changed; and a command that only opens the database.
    await change(project.files.at(-1)!, 2)
    const env = { DATABASE_URL: url }
    const viaCli = await cli(['deploy', project.dir], env)
    check(/changed/.test(viaCli.output), `the CLI deploy changed nothing:\n${viaCli.output}`)
    const startOnly = quick ? undefined : await cli(['deployments', 'list', '--limit', '1'], env)

    const pick = (rs: typeof unchanged) => ({
      totalMs: ms(median(rs.map((r) => r.total))),
      readFolderMs: ms(median(rs.map((r) => r.read))),
      transactionMs: ms(median(rs.map((r) => r.transaction))),
    })
    return {
      syncs,
      integrations: INTEGRATIONS,
      environments: ENVIRONMENTS,
      devConnections: INTEGRATIONS * CONNECTIONS_PER_INTEGRATION,
      schedulesProvisionedByFirstDeploy: provisioned,
      firstDeploy: pick([first]),
      unchanged: { runs: REDEPLOYS, ...pick(unchanged) },
      oneFileChanged: { runs: REDEPLOYS, ...pick(oneChanged) },
      bundlingAloneMs: ms(bundling.ms),
      readFoldersAloneMs: ms(reading.ms),
      cliDeployMs: ms(viaCli.ms),
      cliStartOnlyMs: startOnly ? ms(startOnly.ms) : null,
    }
  } finally {
    await rm(project.root, { recursive: true, force: true })
    await db.close()
    await dropDatabase(DB_NAME)
  }
}

// --- 2. from a deployment returning to both instances running the new version ---
async function deployToUse() {
  const url = await freshDatabase(DB_NAME)
  const db = await openDatabase({ kind: 'postgres', url }, { logger })
  await migrateToLatest(db.kysely)
  const dev = await ensureEnvironment(db.kysely, 'dev')
  await ensureEnvironment(db.kysely, 'prod')
  for (const connectionId of ['c1', 'c2']) {
    await upsertConnection(db.kysely, sealer, dev.id, { providerConfigKey: 'live', connectionId })
  }
  const root = await mkdtemp(path.join(os.tmpdir(), 'syncstore-bench-deploy-live-'))
  await writeFile(path.join(root, 'package.json'), '{"type":"module"}\n')
  await mkdir(path.join(root, 'lib'))
  await writeFile(path.join(root, 'lib', 'helpers.ts'), HELPER)
  const dir = path.join(root, 'integrations')
  const file = path.join(dir, 'live', 'syncs', 'version.ts')
  await mkdir(path.dirname(file), { recursive: true })
  await writeFile(file, syncSource('live', 'version', 0))
  const deploy = () => deployFolders(db.kysely, [dir], { source: dir, deployedBy: 'bench' })
  await deploy()

  const secret = randomUUID()
  const servers: ServerProcess[] = []
  try {
    const starting = [0, 1].map(() =>
      startServer({
        DATABASE_URL: url,
        SYNCSTORE_INTEGRATIONS_DIR: dir,
        NANGO_SECRET_KEY_DEV: secret,
        // One run at a time each: two runs triggered together land on both instances.
        SYNCSTORE_RUN_CONCURRENCY: '1',
      }),
    )
    // Both are stopped below even when one fails to start.
    for (const s of await Promise.allSettled(starting)) if (s.status === 'fulfilled') servers.push(s.value)
    check(
      servers.length === 2,
      `a server did not start: ${String(await Promise.all(starting).catch((e: unknown) => e))}`,
    )
    const trigger = (server: ServerProcess, connectionId: string) =>
      fetch(`${server.url}/sync/trigger`, {
        method: 'POST',
        headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          provider_config_key: 'live',
          connection_id: connectionId,
          syncs: ['version'],
        }),
      }).then(async (r) => check(r.status === 200, `trigger answered ${r.status}: ${await r.text()}`))
    const currentHash = async () =>
      (
        await db.kysely
          .selectFrom('sync_definitions')
          .select('bundle_hash')
          .where('environment_id', '=', dev.id)
          .where('name', '=', 'version')
          .executeTakeFirstOrThrow()
      ).bundle_hash
    const lastRunId = async () =>
      Number(
        (await sql<{ id: string | null }>`SELECT max(id) AS id FROM runs`.execute(db.kysely)).rows[0]!.id ??
          0,
      )

    /**
     * From `t0` (epoch ms), triggers a run through each instance (one per connection) until each
     * instance has finished a run on `hash`; returns the time from `t0` to the later of the two
     * instances' first such run ending (Postgres' clock, the same host's), and the rounds it took.
     */
    const untilBothRun = async (hash: string, t0: number, afterRunId: number) => {
      const deadline = performance.now() + SAMPLE_TIMEOUT_MS
      for (let round = 1; round <= MAX_ROUNDS && performance.now() < deadline; round++) {
        const before = await lastRunId()
        await Promise.all([trigger(servers[0]!, 'c1'), trigger(servers[1]!, 'c2')])
        // This round's two runs end before the next round starts.
        for (let i = 0; i < 1000 && performance.now() < deadline; i++) {
          const { rows } = await sql<{ n: string }>`
            SELECT count(*) AS n FROM runs WHERE id > ${before} AND ended_at IS NULL`.execute(db.kysely)
          if (Number(rows[0]!.n) === 0) break
          await sleep(5)
        }
        const { rows } = await sql<{ owner: string; state: string; hash: string | null; ended: Date }>`
          SELECT owner, state, bundle_hash AS hash, ended_at AS ended FROM runs
          WHERE id > ${afterRunId} AND ended_at IS NOT NULL ORDER BY ended_at`.execute(db.kysely)
        for (const r of rows) check(r.state === 'SUCCEEDED', `a run ended ${r.state}`)
        const firstEnd = servers.map(
          (s) => rows.find((r) => r.hash === hash && r.owner.split(':')[1] === String(s.pid))?.ended,
        )
        if (firstEnd.every((e) => e !== undefined)) {
          return { ms: Math.max(...firstEnd.map((e) => e!.getTime())) - t0, rounds: round }
        }
      }
      throw new Error(
        `both instances did not run ${hash} within ${MAX_ROUNDS} rounds / ${SAMPLE_TIMEOUT_MS} ms`,
      )
    }

    // Warm: both instances have run the current version once.
    await untilBothRun(await currentHash(), Date.now(), await lastRunId())
    const deployMs: number[] = []
    const newVersion: number[] = []
    const steady: number[] = []
    let extraRounds = 0
    for (let i = 1; i <= LATENCY_SAMPLES; i++) {
      // Without a deployment: the same trigger round, on the version both already run.
      const sameHash = await currentHash()
      const s = await untilBothRun(sameHash, Date.now(), await lastRunId())
      steady.push(s.ms)

      await writeFile(file, syncSource('live', 'version', i))
      const after = await lastRunId()
      const d = await timed(deploy)
      const t0 = Date.now()
      deployMs.push(d.ms)
      const hash = await currentHash()
      check(hash !== sameHash, 'the deployment did not change the bundle')
      const n = await untilBothRun(hash, t0, after)
      newVersion.push(n.ms)
      extraRounds += n.rounds - 1
    }
    return {
      instances: 2,
      samples: LATENCY_SAMPLES,
      deployP50Ms: ms(percentile(deployMs, 50)),
      deployToBothRunningNewP50Ms: ms(percentile(newVersion, 50)),
      deployToBothRunningNewP99Ms: ms(percentile(newVersion, 99)),
      sameVersionRoundP50Ms: ms(percentile(steady, 50)),
      sameVersionRoundP99Ms: ms(percentile(steady, 99)),
      extraTriggerRounds: extraRounds,
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()))
    await rm(root, { recursive: true, force: true })
    await db.close()
    await dropDatabase(DB_NAME)
  }
}

const folder = await folderDeploys()
const live = await deployToUse()
const results = { machine: machine(), folder, live }

const rows: [string, string][] = [
  [
    `first deploy, ${folder.syncs} syncs added to ${ENVIRONMENTS.join('+')}`,
    `${folder.firstDeploy.totalMs} ms (read folder ${folder.firstDeploy.readFolderMs}, transaction ${folder.firstDeploy.transactionMs})`,
  ],
  [
    `redeploy, nothing changed (median of ${REDEPLOYS})`,
    `${folder.unchanged.totalMs} ms (read folder ${folder.unchanged.readFolderMs}, transaction ${folder.unchanged.transactionMs})`,
  ],
  [
    `redeploy, 1 file changed (median of ${REDEPLOYS})`,
    `${folder.oneFileChanged.totalMs} ms (read folder ${folder.oneFileChanged.readFolderMs}, transaction ${folder.oneFileChanged.transactionMs})`,
  ],
  [`  of reading: esbuild alone, ${folder.syncs} files`, `${folder.bundlingAloneMs} ms`],
  [`  readFolders alone (bundling + load check in a worker)`, `${folder.readFoldersAloneMs} ms`],
  [`syncstore deploy DIR, 1 file changed (CLI wall time)`, `${folder.cliDeployMs} ms`],
  [
    `  syncstore deployments list (CLI start + database only)`,
    folder.cliStartOnlyMs === null ? '(not in quick mode)' : `${folder.cliStartOnlyMs} ms`,
  ],
  [`deploy of 1 sync while 2 instances serve (p50)`, `${live.deployP50Ms} ms`],
  [
    `deploy returned -> both instances ran the new version (p50 / p99 of ${LATENCY_SAMPLES})`,
    `${live.deployToBothRunningNewP50Ms} / ${live.deployToBothRunningNewP99Ms} ms`,
  ],
  [
    `same trigger round, no deployment (p50 / p99)`,
    `${live.sameVersionRoundP50Ms} / ${live.sameVersionRoundP99Ms} ms`,
  ],
]
console.log(`\ndeploy benchmark (${JSON.stringify(machine())}), Postgres`)
const width = Math.max(...rows.map((r) => r[0].length))
for (const [what, value] of rows) console.log(`${what.padEnd(width)}  ${value}`)
console.log(
  `\n"runs the new version": after deploy() returns (t0), each instance is sent a trigger (one per ` +
    `connection, SYNCSTORE_RUN_CONCURRENCY=1 on each); measured to the end of the later of the two instances' ` +
    `first run recorded with the new runs.bundle_hash (runs.owner names the instance). A run reads its ` +
    `definition when it starts, so this is trigger -> start -> the new bundle loaded into a worker and run. ` +
    `Extra trigger rounds needed (both runs on one instance): ${live.extraTriggerRounds}.`,
)
await writeResults(quick ? 'deploy-quick.json' : 'deploy.json', results)
