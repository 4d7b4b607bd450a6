// A tiny ticketing API for the README's "Write your own sync" walkthrough. It answers
//   GET /tickets?page=N&updated_after=ISO   (5 tickets per page, newest changes last)
// and accepts requests with the header `Authorization: Bearer <anything>`.
//   node examples/tutorial/tickets-api.mjs        (listens on 127.0.0.1:4010, or $PORT)
import { createServer } from 'node:http'

const started = Date.now()
const tickets = Array.from({ length: 12 }, (_, i) => ({
  id: i + 1,
  title: `Ticket ${i + 1}`,
  status: i % 3 === 0 ? 'closed' : 'open',
  // Every minute the server runs, one more ticket changes.
  updated_at: new Date(started - (12 - i) * 60_000).toISOString(),
}))

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost')
  if (!req.headers.authorization?.startsWith('Bearer ')) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"missing token"}')
    return
  }
  if (url.pathname !== '/tickets') {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
    return
  }
  const changed = Math.floor((Date.now() - started) / 60_000)
  for (let i = 0; i < Math.min(changed, tickets.length); i++) {
    tickets[i].status = 'closed'
    tickets[i].updated_at = new Date(started + (i + 1) * 60_000).toISOString()
  }
  const after = url.searchParams.get('updated_after')
  const matching = tickets
    .filter((t) => !after || t.updated_at > after)
    .sort((a, b) => a.updated_at.localeCompare(b.updated_at))
  const page = Number(url.searchParams.get('page') ?? 1)
  const items = matching.slice((page - 1) * 5, page * 5)
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ tickets: items, next_page: page * 5 < matching.length ? page + 1 : null }))
})

const port = Number(process.env.PORT ?? 4010)
server.listen(port, '127.0.0.1', () => console.log(`tickets API on http://127.0.0.1:${port}`))
