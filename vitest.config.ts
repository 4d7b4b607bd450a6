import { defineConfig } from 'vitest/config'

/**
 * `npm test` runs the whole suite on the embedded database, and again on real Postgres when
 * TEST_DATABASE_URL is set. Each test file gets its own database cloned from a migrated template
 * (test/helpers/global-setup.ts), so files run in parallel without sharing state.
 */
const databases = ['embedded', ...(process.env.TEST_DATABASE_URL ? ['postgres'] : [])]

export default defineConfig({
  test: {
    projects: databases.map((db) => ({
      test: {
        name: db,
        include: ['test/**/*.test.ts'],
        globalSetup: ['test/helpers/global-setup.ts'],
        env: { SYNCSTORE_TEST_DB: db },
        testTimeout: 30_000,
        hookTimeout: 120_000,
      },
    })),
  },
})
