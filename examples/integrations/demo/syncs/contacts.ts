import { createSync } from 'syncstore'

/**
 * The bundled example: contacts from a built-in source, so a fresh `npm start` has records to
 * page through without any external API. Each run changes a few contacts, so a consumer paging
 * with a cursor sees UPDATED records come back.
 */
const Contact = {
  type: 'object',
  required: ['id', 'name', 'email', 'company'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    email: { type: 'string', format: 'email' },
    company: { type: 'string' },
    score: { type: 'integer' },
  },
} as const

const FIRST = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret', 'Ken', 'Radia', 'Tim']
const LAST = [
  'Lovelace',
  'Hopper',
  'Turing',
  'Dijkstra',
  'Liskov',
  'Knuth',
  'Hamilton',
  'Thompson',
  'Perlman',
  'Lee',
]
const COMPANIES = ['Analytical Engines', 'Compilers Inc', 'Bletchley Labs', 'Structured Co']

export default createSync({
  description: 'Contacts from a built-in source (no external API needed)',
  frequency: 'every 30 minutes',
  models: { Contact },
  syncType: 'incremental',
  async exec(nango) {
    const checkpoint = await nango.getCheckpoint<{ run: number }>()
    const run = (checkpoint?.run ?? 0) + 1
    const contacts = Array.from({ length: 25 }, (_, i) => {
      const first = FIRST[i % FIRST.length]!
      const last = LAST[(i * 3) % LAST.length]!
      return {
        id: `contact-${i + 1}`,
        name: `${first} ${last}`,
        email: `${first}.${last}@example.com`.toLowerCase(),
        company: COMPANIES[i % COMPANIES.length]!,
        // A fifth of the contacts change on every run.
        score: i % 5 === run % 5 ? run * 10 + i : i,
      }
    })
    await nango.batchSave(contacts, 'Contact')
    await nango.saveCheckpoint({ run })
    await nango.log(
      `Saved ${contacts.length} contacts (run ${run}, lastSyncDate ${nango.lastSyncDate?.toISOString() ?? 'none'})`,
    )
  },
})
