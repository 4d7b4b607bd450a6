/**
 * Nango's API-key scopes (packages/types/lib/api-keys/scopes.ts). A granted scope ending in `:*`
 * grants every scope that starts with what precedes the `*`.
 */
export const ENVIRONMENT_SCOPES = [
  'environment:*',
  'environment:integrations:*',
  'environment:integrations:list',
  'environment:integrations:list_credentials',
  'environment:integrations:list_functions',
  'environment:integrations:read',
  'environment:integrations:read_credentials',
  'environment:integrations:create',
  'environment:integrations:update',
  'environment:integrations:delete',
  'environment:connections:*',
  'environment:connections:list',
  'environment:connections:list_credentials',
  'environment:connections:read',
  'environment:connections:read_credentials',
  'environment:connections:create',
  'environment:connections:update',
  'environment:connections:delete',
  'environment:connect_sessions:write',
  'environment:syncs:*',
  'environment:syncs:read',
  'environment:syncs:execute',
  'environment:syncs:update',
  'environment:syncs:variant:create',
  'environment:syncs:variant:delete',
  'environment:functions:*',
  'environment:functions:list',
  'environment:functions:read',
  'environment:functions:delete',
  'environment:functions:compile',
  'environment:functions:dryrun',
  'environment:functions:invocations',
  'environment:deploy',
  'environment:records:*',
  'environment:records:read',
  'environment:records:write',
  'environment:logs:read',
  'environment:actions:*',
  'environment:actions:execute',
  'environment:proxy',
  'environment:variables:read',
  'environment:webhook_signing_key:rotate',
  'environment:mcp',
] as const

export type Scope = (typeof ENVIRONMENT_SCOPES)[number]

export const FULL_ACCESS: readonly Scope[] = ['environment:*']

export function isScope(value: string): value is Scope {
  return (ENVIRONMENT_SCOPES as readonly string[]).includes(value)
}

function grants(granted: readonly string[], required: string): boolean {
  return granted.some((g) => g === required || (g.endsWith(':*') && required.startsWith(g.slice(0, -1))))
}

/** What a route requires: one scope, or any one of several. */
export type ScopeRequirement = Scope | readonly Scope[]

export function satisfies(granted: readonly string[], requirement: ScopeRequirement): boolean {
  const anyOf: readonly Scope[] = typeof requirement === 'string' ? [requirement] : requirement
  return anyOf.some((scope) => grants(granted, scope))
}

export function describeRequirement(requirement: ScopeRequirement): string {
  return typeof requirement === 'string'
    ? `Required: ${requirement}`
    : `Required one of: ${requirement.join(' or ')}`
}
