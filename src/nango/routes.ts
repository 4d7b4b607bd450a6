import { createHmac, timingSafeEqual } from 'node:crypto'

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Kysely } from 'kysely'
import { Type } from 'typebox'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { findEnvironment } from '../environments/store.ts'
import { HttpError, notFound } from '../errors.ts'
import { invalidRequest } from '../http/errors.ts'
import { described, EmptyQuery, errorResponse, errors } from '../http/schemas.ts'
import { jsonProblem } from '../json.ts'
import { validateJson } from '../validation.ts'
import { nangoClient, NangoApiError } from './client.ts'
import { handleAuthWebhook, WebhookBody } from './webhook.ts'
import { pairingOf, recordWebhook } from './store.ts'

const SIGNATURE_HEADER = 'x-nango-hmac-sha256'

/**
 * As @nangohq/node's verifyIncomingWebhookRequest: the header is the hex HMAC-SHA256 of the raw
 * body, keyed with the webhook secret (or the secret key when none was given), compared in
 * constant time once the lengths agree.
 */
function signedBy(secret: string, raw: Buffer, signature: string | string[] | undefined): boolean {
  if (typeof signature !== 'string') return false
  const expected = createHmac('sha256', secret).update(raw).digest('hex')
  if (expected.length !== signature.length) return false
  try {
    return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(signature, 'hex'))
  } catch {
    return false
  }
}

/**
 * POST /webhooks/nango/{env}: a paired Nango's webhooks. No API key (Nango cannot send one): the
 * signature authenticates it, so the body is kept raw until it is verified.
 */
export const nangoWebhookRoutes: FastifyPluginAsyncTypebox<{ db: Kysely<Database>; sealer: Sealer }> = async (
  app,
  { db, sealer },
) => {
  // This plugin's scope only: the signature is over the bytes Nango sent, not over a re-serialisation.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) =>
    done(null, body),
  )

  app.post(
    '/webhooks/nango/:env',
    {
      config: { public: true },
      schema: {
        tags: ['connections'],
        summary: "Receive a paired Nango's webhooks",
        description:
          'Authenticated by `X-Nango-Hmac-Sha256` (HMAC-SHA256 of the raw body with the webhook secret, ' +
          'or the secret key when none was given). Auth webhooks create, update or mark connections; ' +
          'others are accepted and ignored. The URL names the environment, never the body.',
        operationId: 'receiveNangoWebhook',
        params: Type.Object({ env: Type.String({ minLength: 1, maxLength: 64 }) }),
        querystring: EmptyQuery,
        response: {
          200: described(
            'Handled (after the connection and its syncs are committed) or ignored.',
            Type.Object({ handled: Type.String() }),
          ),
          400: errorResponse(
            '`invalid_body` or `invalid_json`: a verified body that is not a Nango webhook.',
          ),
          401: errorResponse('`invalid_signature`: missing or wrong `X-Nango-Hmac-Sha256`; nothing changed.'),
          404: errorResponse('`not_paired`: no such environment, or it is not paired with Nango.'),
          502: errorResponse('`nango_unavailable`: Nango could not be read; Nango retries the webhook.'),
          ...errors(413, 415, 503),
        },
      },
    },
    async (request) => {
      const env = await findEnvironment(db, request.params.env)
      const pairing = env && (await pairingOf(db, sealer, env.id))
      if (!env || !pairing) {
        throw notFound('not_paired', `Environment "${request.params.env}" is not paired with Nango`)
      }
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
      if (!signedBy(pairing.webhookSecret ?? pairing.secretKey, raw, request.headers[SIGNATURE_HEADER])) {
        throw new HttpError(401, 'invalid_signature', 'Missing or invalid X-Nango-Hmac-Sha256 signature')
      }
      let body: unknown
      try {
        body = JSON.parse(raw.toString('utf8'))
      } catch (err) {
        throw new HttpError(400, 'invalid_json', (err as Error).message)
      }
      const problem = jsonProblem(body)
      if (problem) throw new HttpError(400, 'invalid_body', problem)
      const issues = validateJson(WebhookBody, body)
      if (issues.length > 0) throw invalidRequest('body', issues)

      let handled: string
      try {
        handled = await handleAuthWebhook(db, sealer, env.id, nangoClient(pairing), body as WebhookBody)
      } catch (err) {
        if (!(err instanceof NangoApiError)) throw err
        await recordWebhook(db, env.id, `failed: ${err.message}`)
        throw new HttpError(502, 'nango_unavailable', err.message, undefined, { cause: err })
      }
      await recordWebhook(db, env.id, handled)
      return { handled }
    },
  )
}
