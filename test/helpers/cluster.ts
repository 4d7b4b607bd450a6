import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { appendFile, chmod, chown, mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

/**
 * A Postgres cluster of the test's own (initdb into a temp folder, its own port), for fault tests
 * that stop, restart or kill the database: never the shared server every other test uses.
 * initdb refuses to run as root, so as root every server command runs as the `postgres` OS user.
 */

const run = promisify(execFile)

/** The newest installed server's bin folder (Debian layout), or undefined when there is none. */
export function postgresBinDir(): string | undefined {
  const base = '/usr/lib/postgresql'
  if (!existsSync(base)) return undefined
  const versions = readdirSync(base)
    .filter((v) => existsSync(path.join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] && path.join(base, versions[0], 'bin')
}

/** uid and gid of the `postgres` user from /etc/passwd, when we are root and must switch to it. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))
  if (!line) throw new Error('running as root, but there is no postgres user to run the test cluster as')
  const [, , uid, gid] = line.split(':')
  return { uid: Number(uid), gid: Number(gid) }
}

async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

export interface Cluster {
  readonly port: number
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database?: string): string
  /** `pg_ctl restart -m fast`: every connection is terminated (57P01), the server comes back. */
  restart(): Promise<void>
  stop(): Promise<void>
  start(): Promise<void>
  /** Stops the server and removes its folder. */
  destroy(): Promise<void>
}

export interface ClusterOptions {
  /** ssl = on with a self-signed certificate (openssl), for clients that connect with TLS */
  tls?: boolean
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const bin = postgresBinDir()
  if (!bin) throw new Error('no Postgres server binaries under /usr/lib/postgresql')
  const user = serverUser()
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-cluster-'))
  if (user) await chown(dir, user.uid, user.gid)
  const data = path.join(dir, 'data')
  const log = path.join(dir, 'server.log')
  const port = await freePort()

  const pg = async (tool: string, args: string[]) => {
    try {
      await run(path.join(bin, tool), args, { ...user, cwd: dir, timeout: 60_000 })
    } catch (err) {
      const tail = existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : ''
      throw new Error(`${tool} ${args.join(' ')} failed: ${(err as Error).message}\n${tail}`)
    }
  }
  const ctl = (...args: string[]) => pg('pg_ctl', ['-D', data, '-l', log, '-w', '-t', '60', ...args])

  await pg('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync'])
  const tls: string[] = []
  if (options.tls) {
    const [key, cert] = [path.join(dir, 'server.key'), path.join(dir, 'server.crt')]
    await run(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1'].concat([
        '-keyout',
        key,
        '-out',
        cert,
      ]),
      { timeout: 60_000 },
    )
    // Postgres refuses a key that others can read, or that is not its own.
    await chmod(key, 0o600)
    if (user) await Promise.all([key, cert].map((file) => chown(file, user.uid, user.gid)))
    tls.push('ssl = on', `ssl_cert_file = '${cert}'`, `ssl_key_file = '${key}'`)
  }
  // Durability is not under test here (no OS crash), start-up speed is.
  await appendFile(
    path.join(data, 'postgresql.conf'),
    [
      `port = ${port}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${dir}'`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'max_connections = 60',
      ...tls,
      '',
    ].join('\n'),
  )
  await ctl('start')

  return {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    restart: () => ctl('restart', '-m', 'fast'),
    stop: () => ctl('stop', '-m', 'fast'),
    start: () => ctl('start'),
    async destroy() {
      await ctl('stop', '-m', 'immediate').catch(() => undefined)
      await rm(dir, { recursive: true, force: true })
    },
  }
}
