/**
 * Exit codes of every `cometkms` command, so that scripts and supervisors can tell what to fix
 * without parsing messages:
 *   0  success
 *   1  any other failure (state, lock, network, etcd, a refused transfer, ...)
 *   2  usage: an unknown command or option, a missing or invalid argument
 *   3  configuration: config file, secret files (PIN, token, TLS keys), home not initialised
 *   4  HSM: PKCS#11 module, token, key, PIN
 * The class of an error is found by its type, along its `cause` chain (a wrapped HSM error is
 * still an HSM error).
 */
import { CommanderError } from 'commander';
import { ConfigError } from '../config/load.ts';
import { HsmError, Pkcs11Error } from '../pkcs11/errors.ts';

export const EXIT_CODES = { ok: 0, failure: 1, usage: 2, config: 3, hsm: 4 } as const;

/** The `--help` epilogue that documents the exit codes. */
export const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  other failure (state, lock, network, etcd, ...)
  2  usage error (unknown command or option, missing or invalid argument)
  3  configuration error (config file, secret files, TLS files, home not initialised)
  4  HSM error (PKCS#11 module, token, key, PIN)`;

/** A command line that cannot be run as given (exit 2). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/**
 * An error that has already been reported in full (e.g. as a fatal JSON log line by `start`):
 * main only sets the exit code and prints nothing more.
 */
export class ReportedError extends Error {
  override name = 'ReportedError';

  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

/** The exit code for `err` (see the module comment). */
export function exitCodeOf(err: unknown): number {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof ReportedError) return e.exitCode;
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_CODES.ok : EXIT_CODES.usage;
    if (e instanceof UsageError) return EXIT_CODES.usage;
    if (e instanceof ConfigError) return EXIT_CODES.config;
    if (e instanceof HsmError || e instanceof Pkcs11Error) return EXIT_CODES.hsm;
  }
  return EXIT_CODES.failure;
}
