import { Type } from 'typebox'

import { type FieldIssue, HttpError } from '../errors.ts'

/** The seeds' StdError: the only error body this server sends. */
export const StdErrorSchema = Type.Object(
  {
    error: Type.Object(
      {
        code: Type.String(),
        message: Type.Optional(Type.String()),
        errors: Type.Optional(
          Type.Array(
            Type.Object({ code: Type.String(), message: Type.String(), path: Type.Array(Type.String()) }),
          ),
        ),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false, $id: 'StdError' },
)

/** A validation failure in one part of the request, reported like Nango's zodErrorToHTTP. */
export type RequestPart = 'body' | 'querystring' | 'params' | 'headers'

export const VALIDATION_CODES: Record<RequestPart, string> = {
  body: 'invalid_body',
  querystring: 'invalid_query_params',
  params: 'invalid_uri_params',
  headers: 'invalid_headers',
}

const PART_LABELS: Record<RequestPart, string> = {
  body: 'Invalid request body',
  querystring: 'Invalid query parameters',
  params: 'Invalid path parameters',
  headers: 'Invalid headers',
}

export function invalidRequest(part: RequestPart, issues: FieldIssue[]): HttpError {
  const first = issues[0]
  const detail = first ? `: ${first.path.length ? `${first.path.join('.')}: ` : ''}${first.message}` : ''
  return new HttpError(400, VALIDATION_CODES[part], `${PART_LABELS[part]}${detail}`, issues)
}
