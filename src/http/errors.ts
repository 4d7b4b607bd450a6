import { Type } from 'typebox'

/** One item of `error.errors`: Nango reports zod issues as `{code, message, path}`. */
export interface FieldIssue {
  code: string
  message: string
  path: string[]
}

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

export interface ErrorBody {
  error: { code: string; message?: string; errors?: FieldIssue[] }
}

/**
 * A client-facing failure: domain code throws it, the one error handler (src/http/error-handler.ts)
 * turns it into `{error:{code,message}}` with `statusCode`.
 */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly issues?: FieldIssue[],
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'HttpError'
  }

  toBody(): ErrorBody {
    return {
      error: { code: this.code, message: this.message, ...(this.issues ? { errors: this.issues } : {}) },
    }
  }
}

export const notFound = (code: string, message: string) => new HttpError(404, code, message)

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
