import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.ts';
import { commands } from './commands/index.ts';

/** Builds the `cometkms` command tree. Each subcommand lives in its own module under commands/. */
export function buildProgram(): Command {
  const program = new Command('cometkms')
    .description('HSM-backed, highly available remote signer for CometBFT validators')
    .version(VERSION)
    .showHelpAfterError()
    .exitOverride();
  for (const register of commands) register(program);
  return program;
}

/** Runs the CLI; errors become one clear line on stderr and a non-zero exit code. */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`cometkms: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
