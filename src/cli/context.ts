import type { Config } from '../config.ts'
import type { Sealer } from '../crypto.ts'
import type { Db } from '../db/connect.ts'

/** Where a command writes: the terminal, or a buffer when a server runs it on the CLI's behalf. */
export interface CliIO {
  out(line: string): void
  err(line: string): void
}

export interface CliContext {
  readonly config: Config
  readonly sealer: Sealer
  readonly io: CliIO
  /** Relative paths in arguments resolve against this folder. */
  readonly cwd: string
  /**
   * Runs `fn` with an open, migrated database (the server's own when forwarded). `migrate: false`
   * leaves migrating to `fn`, so `syncstore migrate` can report what it applied.
   */
  withDb<T>(fn: (db: Db) => Promise<T>, options?: { migrate?: boolean }): Promise<T>
}

/**
 * Runs one command line and returns its exit code (cli/run.ts's runCommand). serve takes it as an
 * argument, to run the commands a CLI forwards to it, so serve.ts and run.ts never import each other.
 */
export type CommandRunner = (argv: readonly string[], ctx: CliContext) => Promise<number>

/** Bad arguments: reported as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** The command understood its arguments but could not do what was asked: exit code 1. */
export class CommandError extends Error {
  override name = 'CommandError'
}

/** Aligned columns for list output. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return rows.map((row) =>
    row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '),
  )
}
