import type { Command } from 'commander';

/** A subcommand adds itself to the program. */
export type RegisterCommand = (program: Command) => void;

/** Every subcommand of `cometkms`, in the order `--help` lists them. */
export const commands: RegisterCommand[] = [];
