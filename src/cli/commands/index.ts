import type { Command } from 'commander';
import { registerAudit } from './audit.ts';
import { registerConfig } from './config.ts';
import { registerDemo } from './demo.ts';
import { registerInit } from './init.ts';
import { registerKeys } from './keys.ts';
import { registerLeader } from './leader.ts';
import { registerSimulate } from './simulate.ts';
import { registerSofthsm } from './softhsm.ts';
import { registerStart } from './start.ts';
import { registerState } from './state.ts';
import { registerStatus } from './status.ts';

/** A subcommand adds itself to the program. */
export type RegisterCommand = (program: Command) => void;

/** Every subcommand of `cometkms`, in the order `--help` lists them. */
export const commands: RegisterCommand[] = [
  registerInit,
  registerConfig,
  registerStart,
  registerState,
  registerStatus,
  registerLeader,
  registerAudit,
  registerSimulate,
  registerDemo,
  registerKeys,
  registerSofthsm,
];
