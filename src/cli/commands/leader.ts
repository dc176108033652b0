/** `cometkms leader transfer`: hand leadership over without waiting for the lease to expire. */
import type { Command } from 'commander';
import { type AdminTargetOptions, requestLeaderTransfer, resolveAdminTarget } from '../../admin/client.ts';
import { adminTargetOptions } from './status.ts';

/** Registers `cometkms leader transfer`. */
export function registerLeader(program: Command): void {
  const leader = program.command('leader').description('cluster leadership');
  adminTargetOptions(leader.command('transfer'))
    .description('ask the leader (the node behind --config/--admin) to hand leadership over')
    .option('--to <id>', 'node id of the member that should lead (default: any other member)')
    .action(async (o: AdminTargetOptions & { to?: string }) => {
      const result = await requestLeaderTransfer(await resolveAdminTarget(o), o.to);
      if (!result.transferred) throw new Error(`leadership not transferred: ${result.message}`);
      process.stdout.write(`${result.message}\n`);
    });
}
