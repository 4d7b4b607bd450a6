// Layers point one way (issue 9): route -> service or store -> database, and the sandbox never
// reaches the database. `npm run lint` runs this over src/.
const DOMAIN =
  '^src/(records|connections|environments|keys|syncs|scheduler|runs|webhooks|providers|deployments)/'

/** @type {import('dependency-cruiser').IConfiguration} */
export default {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'An import cycle in src/ means two modules are one; move what they share down a layer.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'domain-not-http',
      comment:
        "Stores and services throw the typed errors of src/errors.ts and never see HTTP; only a slice's " +
        'routes and their schemas (routes.ts, *-route.ts, schemas.ts) use src/http/.',
      severity: 'error',
      from: { path: DOMAIN, pathNot: '/(routes|[a-z-]+-routes?|schemas)\\.ts$' },
      to: { path: '^src/http/' },
    },
    {
      name: 'runtime-not-db',
      comment:
        "The sandbox's nango calls come back to the server, which owns the stores: src/runtime/ imports " +
        'neither src/db/ nor any store, route or service.',
      severity: 'error',
      from: { path: '^src/runtime/' },
      to: { path: ['^src/db/', '^src/http/', DOMAIN] },
    },
    {
      name: 'driver-at-the-edge',
      comment:
        'Only the commands that open the database (src/main.ts, src/cli/) load the driver module; ' +
        'everything else takes a Db or a Kysely instance (type imports are fine).',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/main\\.ts$', '^src/cli/', '^src/db/'] },
      to: { path: '^src/db/connect\\.ts$', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'cli-builds-no-sql',
      comment: 'A command calls stores and services; the queries live beside their feature.',
      severity: 'error',
      from: { path: '^src/cli/' },
      to: { path: 'node_modules/kysely/', dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    includeOnly: { path: ['^src/', 'node_modules/kysely/'] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
}
