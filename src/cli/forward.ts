import { createHash } from 'node:crypto'
import { chmod, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { CommandError } from './context.ts'

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

/**
 * Sends one command to the running server and resolves with its answer. A server that cannot be
 * reached, or that dies before answering (SIGKILL, a crash), is a CommandError: the CLI says so in
 * one line and exits 1, like any other command that could not do what was asked.
 */
export function forwardCommand(socketPath: string, request: ForwardRequest): Promise<ForwardResult> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath)
    let buffer = ''
    let connected = false
    let failure: NodeJS.ErrnoException | undefined
    socket.setEncoding('utf8')
    socket.on('connect', () => {
      connected = true
      socket.write(`${JSON.stringify(request)}\n`)
    })
    socket.on('data', (chunk: string) => (buffer += chunk))
    // 'close' always follows 'error', and tells the whole story once the socket is done.
    socket.on('error', (err: NodeJS.ErrnoException) => (failure = err))
    socket.on('close', () => {
      const result = parseResult(buffer)
      if (result) return resolve(result)
      const why = failure ? ` (${failure.code ?? failure.message})` : ''
      reject(
        new CommandError(
          connected
            ? `the running server stopped before answering${why}; the command may or may not have taken effect`
            : `could not reach the running server at ${socketPath}${why}; if it is stopping, try again in a moment`,
        ),
      )
    })
  })
}

function parseResult(text: string): ForwardResult | undefined {
  try {
    const result = JSON.parse(text) as ForwardResult
    return typeof result?.code === 'number' && Array.isArray(result.out) && Array.isArray(result.err)
      ? result
      : undefined
  } catch {
    return undefined
  }
}
