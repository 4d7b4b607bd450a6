import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** A webhook receiver on 127.0.0.1: keeps every POST's raw body and headers; `answer` sets its status. */
export interface Receiver {
  url: string
  port: number
  received: { body: string; headers: http.IncomingHttpHeaders }[]
  answer: number
  close(): Promise<void>
}

export async function startReceiver(port = 0): Promise<Receiver> {
  const receiver: Receiver = {
    url: '',
    port: 0,
    received: [],
    answer: 200,
    close: async () => undefined,
  }
  const server = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
    req.on('end', () => {
      receiver.received.push({ body, headers: req.headers })
      res.writeHead(receiver.answer).end()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  receiver.port = (server.address() as AddressInfo).port
  receiver.url = `http://127.0.0.1:${receiver.port}/webhooks/nango`
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  return receiver
}

/** Every key of a JSON value, sorted at each level (Nango's stable stringify). */
export function sortedJson(value: unknown): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
          )
        : v
  return JSON.stringify(sort(value))
}
