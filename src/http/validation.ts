import type { ValidateFunction } from 'ajv'
import type { FastifySchemaCompiler } from 'fastify'

import { createAjv } from '../validation.ts'

export function createValidatorCompiler(): FastifySchemaCompiler<unknown> {
  const textual = createAjv(true)
  const json = createAjv(false)
  return ({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? json : textual
    return ajv.compile(schema as object) as ValidateFunction
  }
}
