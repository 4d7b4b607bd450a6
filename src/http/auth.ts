import type { FastifyInstance, FastifyRequest } from 'fastify'

import { sha256Hex } from '../crypto.ts'
import type { Db } from '../db/connect.ts'
import type { BootstrapKey } from '../keys/bootstrap.ts'
import { findActiveKey, type Principal, touchKey } from '../keys/store.ts'
import type { Logger } from '../logger.ts'
import { HttpError } from '../errors.ts'
import { describeRequirement, FULL_ACCESS, satisfies, type ScopeRequirement } from '../keys/scopes.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a key needs for this route. Every route sets this or `public`. */
    scope?: ScopeRequirement
    /** No key needed (health, readiness, the OpenAPI document). */
    public?: boolean
  }
  interface FastifyRequest {
    principal: Principal
  }
}

// Nango's messages (packages/shared/lib/utils/error.ts), so clients matching on them keep working.
const MISSING = 'Authentication failed. The request is missing the Authorization header.'
const MALFORMED = 'Authentication failed. The Authorization header is malformed.'
const UNKNOWN = 'Authentication failed. The provided authorization header does not match any account.'

// last_used_at is informational; writing it once a minute per key keeps reads read-only.
const TOUCH_INTERVAL_MS = 60_000

// A key lookup is a database round trip on every request (~0.4 ms here, a third of a small
// GET /records). Known keys are remembered this long, so a revoked key keeps working for at most
// 5 s on an instance that used it just before; unknown keys are never cached.
const CACHE_TTL_MS = 5_000
const CACHE_MAX_KEYS = 10_000

export class Authenticator {
  private readonly bootstrap: Map<string, Principal>
  private readonly touched = new Map<string, number>()
  private readonly cache = new Map<string, { principal: Principal; expires: number }>()

  constructor(
    private readonly db: Db,
    bootstrapKeys: readonly BootstrapKey[],
    private readonly logger: Logger,
  ) {
    this.bootstrap = new Map(
      bootstrapKeys.map((k) => [
        k.keyHash,
        { environmentId: k.environmentId, environment: k.environment, scopes: FULL_ACCESS, keyId: null },
      ]),
    )
  }

  /** Resolves an Authorization header to a principal, or throws a 401 HttpError. */
  async authenticate(header: string | undefined): Promise<Principal> {
    if (header === undefined) throw unauthorized('missing_auth_header', MISSING)
    // Like Nango: the secret is whatever follows the last "Bearer ".
    const secret = header.split('Bearer ').pop()!.trim()
    if (secret === '') throw unauthorized('malformed_auth_header', MALFORMED)
    // Keys are looked up by hash, so no secret-dependent comparison ever runs.
    const keyHash = sha256Hex(secret.toLowerCase())
    const principal = this.bootstrap.get(keyHash) ?? (await this.lookup(keyHash))
    if (!principal) throw unauthorized('unknown_account', UNKNOWN)
    if (principal.keyId) this.touch(principal.keyId)
    return principal
  }

  private async lookup(keyHash: string): Promise<Principal | undefined> {
    const now = Date.now()
    const cached = this.cache.get(keyHash)
    if (cached && cached.expires > now) return cached.principal
    const principal = await findActiveKey(this.db.kysely, keyHash)
    this.cache.delete(keyHash)
    if (principal) {
      if (this.cache.size >= CACHE_MAX_KEYS) this.cache.delete(this.cache.keys().next().value!)
      this.cache.set(keyHash, { principal, expires: now + CACHE_TTL_MS })
    }
    return principal
  }

  private touch(keyId: string): void {
    const now = Date.now()
    if (now - (this.touched.get(keyId) ?? 0) < TOUCH_INTERVAL_MS) return
    this.touched.set(keyId, now)
    touchKey(this.db.kysely, keyId).catch((err: unknown) =>
      this.logger.warn({ err }, 'could not record key use'),
    )
  }
}

function unauthorized(code: string, message: string): HttpError {
  return new HttpError(401, code, message)
}

/**
 * Every route must say who may call it: `config.scope` or `config.public`. A route that says
 * neither fails at start-up, so an endpoint can never be left open by omission.
 */
export function registerAuth(app: FastifyInstance, authenticator: Authenticator): void {
  app.decorateRequest('principal', null as unknown as Principal)

  app.addHook('onRoute', (route) => {
    const config = route.config as { scope?: ScopeRequirement; public?: boolean } | undefined
    if (!config?.public && !config?.scope) {
      throw new Error(
        `Route ${String(route.method)} ${route.url} declares neither config.scope nor config.public`,
      )
    }
  })

  app.addHook('onRequest', async (request: FastifyRequest) => {
    const config = request.routeOptions.config
    // Unknown URLs answer 404 whoever asks; there is nothing behind them to protect.
    if (config.public || request.is404) return
    const principal = await authenticator.authenticate(request.headers.authorization)
    if (config.scope && !satisfies(principal.scopes, config.scope)) {
      throw new HttpError(403, 'forbidden', `Insufficient scope. ${describeRequirement(config.scope)}`)
    }
    request.principal = principal
  })
}
