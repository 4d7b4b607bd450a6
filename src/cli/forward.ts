import { createHash } from 'node:crypto'
import { chmod, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

/**
 * While `syncstore serve` holds the embedded database, other `syncstore` commands cannot open it.
 * They hand their arguments to the server over a Unix socket instead; the server runs the same
 * command against its own connection and sends the output back. One JSON line each way.
 */
export interface ForwardRequest {
  argv: string[]
  cwd: string
}

export interface ForwardResult {
  code: number
  out: string[]
  err: string[]
}

/** A short path (Unix sockets allow ~100 bytes) derived from the data folder. */
export function socketPathFor(dataDir: string): string {
  const digest = createHash('sha256').update(dataDir).digest('hex').slice(0, 16)
  return path.join(os.tmpdir(), `syncstore-${digest}.sock`)
}

export async function serveCommands(
  socketPath: string,
  run: (request: ForwardRequest) => Promise<ForwardResult>,
): Promise<{ close(): Promise<void> }> {
  await rm(socketPath, { force: true })
  const server = net.createServer((socket) => {
    let buffer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      buffer += chunk
      const newline = buffer.indexOf('\n')
      if (newline < 0) return
      socket.removeAllListeners('data')
      let request: ForwardRequest
      try {
        request = JSON.parse(buffer.slice(0, newline)) as ForwardRequest
      } catch {
        socket.end(`${JSON.stringify({ code: 2, out: [], err: ['malformed request'] })}\n`)
        return
      }
      run(request)
        .catch((err: unknown) => ({ code: 1, out: [], err: [`error: ${(err as Error).message}`] }))
        .then((result) => socket.end(`${JSON.stringify(result)}\n`))
    })
    socket.on('error', () => socket.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, resolve)
  })
  // Only this user may talk to the server through it, as only they may read the data folder.
  await chmod(socketPath, 0o600)
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
      }).then(() => rm(socketPath, { force: true })),
  }
}

export function forwardCommand(socketPath: string, request: ForwardRequest): Promise<ForwardResult> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath)
    let buffer = ''
    socket.setEncoding('utf8')
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`))
    socket.on('data', (chunk: string) => (buffer += chunk))
    socket.on('error', reject)
    socket.on('end', () => {
      try {
        resolve(JSON.parse(buffer) as ForwardResult)
      } catch {
        reject(new Error('the running server closed the command socket without answering'))
      }
    })
  })
}
