/**
 * The logger of long-running commands: pino writing one JSON object per line to stdout (what log
 * shippers expect), with an ISO-8601 `time`, or human-readable lines with `--log-format pretty`.
 *
 * pino-pretty is not a runtime dependency: it is loaded only when `pretty` is asked for, and a
 * production install without it says how to get readable logs instead (`| npx pino-pretty`).
 */
import pino from 'pino';
import { UsageError } from './errors.ts';

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
export async function createLogger(opts: LoggerOptions): Promise<pino.Logger> {
  const fd = opts.fd ?? 1;
  const base: pino.LoggerOptions = {
    level: opts.level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.format === 'pretty') return pino(base, await prettyStream(fd));
  return pino(base, pino.destination({ fd, sync: true }));
}

async function prettyStream(fd: number): Promise<pino.DestinationStream> {
  let pretty: typeof import('pino-pretty');
  try {
    pretty = (await import('pino-pretty')).default;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new UsageError(
      '--log-format pretty needs the pino-pretty package, which a production install leaves out: ' +
        'install it (npm install pino-pretty), or keep JSON logs and read them through `npx pino-pretty`',
    );
  }
  return pretty({ destination: fd, sync: true, translateTime: 'SYS:standard' });
}
