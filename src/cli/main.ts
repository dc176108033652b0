import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.ts';
import { commands } from './commands/index.ts';
import { EXIT_CODES_HELP, exitCodeOf, ReportedError } from './errors.ts';

/** Builds the `cometkms` command tree. Each subcommand lives in its own module under commands/. */
export function buildProgram(): Command {
  const program = new Command('cometkms')
    .description('HSM-backed, highly available remote signer for CometBFT validators')
    .version(VERSION)
    .showHelpAfterError()
    .exitOverride();
  for (const register of commands) register(program);
  withEpilogue(program);
  return program;
}

/** Every command's `--help` ends with the exit codes (and exits through exitOverride, not process.exit). */
function withEpilogue(cmd: Command): void {
  cmd.addHelpText('after', EXIT_CODES_HELP);
  cmd.exitOverride();
  for (const sub of cmd.commands) withEpilogue(sub);
}

/**
 * Runs the CLI. Errors become one clear line on stderr and the exit code of their class
 * (errors.ts): commander has already printed its own usage errors, and an error a command has
 * reported itself (start's fatal log line) is not printed twice.
 */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    process.exitCode = exitCodeOf(err);
    if (err instanceof ReportedError || err instanceof CommanderError) return;
    process.stderr.write(`cometkms: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}
