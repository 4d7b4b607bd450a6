// Module resolve hook (node:module register): the bare specifier "syncstore" is this package.
const INDEX = new URL('../index.ts', import.meta.url).href

export async function resolve(specifier, context, nextResolve) {
  if (specifier === 'syncstore') return { url: INDEX, shortCircuit: true }
  return nextResolve(specifier, context)
}
