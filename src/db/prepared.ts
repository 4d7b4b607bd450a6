/**
 * Statements that start with PREPARED run as named prepared statements on Postgres (the pool in
 * src/db/connect.ts does it): parsed and planned once per connection instead of on every call.
 * Planning GET /records' page query costs about as much as running it for a page of 100; hot,
 * fixed-shape queries opt in with the marker. Stores import this, never the driver module.
 */
export const PREPARED = '/* prepared */'
