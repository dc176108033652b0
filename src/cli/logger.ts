/**
 * The logger of long-running commands: pino writing one JSON object per line to stdout (what log
 * shippers expect), or human-readable lines with `--log-format pretty`.
 */
import pino from 'pino';
import pretty from 'pino-pretty';

/** Output formats of `--log-format`. */
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Levels of `--log-level`, most to least verbose, plus `silent`. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  format: LogFormat;
  level: LogLevel;
  /** file descriptor to write to (default 1, stdout) */
  fd?: number;
}

/**
 * A pino logger for `opts`. Both formats write synchronously from the main thread (no transport
 * worker): a log line written just before the process exits, or just before it is killed, is
 * never lost, and the chaos tests read the log up to the moment of the kill.
 */
export function createLogger(opts: LoggerOptions): pino.Logger {
  const fd = opts.fd ?? 1;
  const base = { level: opts.level, base: { pid: process.pid } };
  if (opts.format === 'pretty') {
    return pino(base, pretty({ destination: fd, sync: true, translateTime: 'SYS:standard' }));
  }
  return pino(base, pino.destination({ fd, sync: true }));
}
