import { pino, type Logger, type LoggerOptions } from 'pino'

import type { LogLevel } from './config.ts'

export type { Logger }

/**
 * JSON lines with ISO timestamps, or pino-pretty when stdout is a terminal (never chosen by
 * NODE_ENV: a container's logs stay machine-readable). Secrets are redacted wherever they appear.
 */
function loggerOptions(level: LogLevel, pretty = process.stdout.isTTY === true): LoggerOptions {
  return {
    level,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: ['req.headers.authorization', '*.credentials', '*.secret', '*.key'],
      censor: '[redacted]',
    },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } } : {}),
  }
}

export function createLogger(level: LogLevel): Logger {
  return pino(loggerOptions(level))
}
