/**
 * The typed errors domain code throws. They carry an HTTP status and a `code` but know nothing of
 * Fastify: stores, services and the CLI throw them, and the one error handler
 * (src/http/error-handler.ts) turns them into `{error:{code,message}}`.
 */

/** One item of `error.errors`: Nango reports zod issues as `{code, message, path}`. */
export interface FieldIssue {
  code: string
  message: string
  path: string[]
}

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
