/**
 * What a sync file written for Nango gets for `import ... from 'nango'` (and 'nango/experimental'):
 * syncstore resolves those imports to this file, when it loads a deployed bundle, whatever is
 * installed beside the file.
 *
 * Always this file, even when the team installed Nango's package: that package is Nango's CLI,
 * and at run time it exports only these tagging functions (its other exports are types, erased
 * when the file is bundled). Bundling it would carry the CLI's runner SDK and its dependencies
 * into every bundle for the same `{ type, ...definition }`. The `nango` object a function
 * receives is syncstore's own (src/runtime/sync.worker.ts), as on Nango it is the runner's.
 */

type Definition = Record<string, unknown>

/** Nango's createSync: the definition, tagged as a sync. */
export function createSync<T extends Definition>(definition: T): T & { type: 'sync' } {
  return { type: 'sync', ...definition }
}

/** Nango's createAction: loads, so a folder that has actions imports cleanly; syncstore does not run actions yet. */
export function createAction<T extends Definition>(definition: T): T & { type: 'action' } {
  return { type: 'action', ...definition }
}

/** Nango's createOnEvent: loads; syncstore does not run on-event scripts yet. */
export function createOnEvent<T extends Definition>(definition: T): T & { type: 'onEvent' } {
  return { type: 'onEvent', ...definition }
}

/** `nango/experimental`'s createFunction: loads; syncstore does not run these yet. */
export function createFunction<T extends Definition>(definition: T): T & { type: 'function' } {
  return { type: 'function', ...definition }
}

/**
 * Nango's ActionError: `throw new nango.ActionError({ message })` (or this class, imported) fails
 * the run with that message; the payload stays on the error. The `nango` object's ActionError is
 * this class, so `instanceof` holds whichever a function uses.
 */
export class ActionError<T = Record<string, unknown>> extends Error {
  override name = 'ActionError'
  readonly type = 'action_script_runtime_error'
  readonly payload?: T

  constructor(payload?: T) {
    const message = (payload as { message?: unknown } | undefined)?.message
    super(typeof message === 'string' ? message : 'ActionError')
    if (payload !== undefined) this.payload = payload
  }
}
