// Module resolve hook (node:module register) for the modules syncstore provides to sync files,
// which their bundles leave as imports (src/deployments/bundle.ts):
// - "syncstore" is this package; "nango" and "nango/experimental" are src/runtime/nango-module.ts;
// - "zod" (and its subpaths), "soap" and "unzipper" are syncstore's own installed copies, whatever
//   is (or is not) installed where the bundle file happens to be. A copy the team installed
//   beside its files is inside the bundle already.
import { existsSync } from 'node:fs'

// `.ts` beside the sources, `.js` in the compiled dist/ (where this file is copied).
const OWN_EXT = existsSync(new URL('../index.ts', import.meta.url)) ? '.ts' : '.js'
export const OWN = {
  syncstore: new URL(`../index${OWN_EXT}`, import.meta.url).href,
  nango: new URL(`./nango-module${OWN_EXT}`, import.meta.url).href,
  'nango/experimental': new URL(`./nango-module${OWN_EXT}`, import.meta.url).href,
}
export const FROM_SYNCSTORE = /^(zod(\/.*)?|soap|unzipper)$/

export async function resolve(specifier, context, nextResolve) {
  if (Object.hasOwn(OWN, specifier)) return { url: OWN[specifier], shortCircuit: true }
  if (FROM_SYNCSTORE.test(specifier)) {
    return nextResolve(specifier, { ...context, parentURL: import.meta.url })
  }
  return nextResolve(specifier, context)
}
