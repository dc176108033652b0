/** `cometkms status`: the node's `/status`, as a table or as raw JSON. */
import type { Command } from 'commander';
import { type AdminTargetOptions, fetchStatus, resolveAdminTarget } from '../../admin/client.ts';
import { formatStatus } from '../../admin/status-format.ts';

/** Adds the options that say which admin API to talk to. */
export function adminTargetOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'CometKMS config: admin.listen and admin.token_file are taken from it')
    .option('--admin <url>', 'admin API base URL instead of --config (default http://127.0.0.1:26780)')
    .option('--token-file <file>', 'file holding the admin bearer token (overrides admin.token_file)')
    .option('--ca-file <file>', 'PEM CA certificate to trust for an https admin API');
}

/** Registers `cometkms status`. */
export function registerStatus(program: Command): void {
  adminTargetOptions(program.command('status'))
    .description("show a node's role, leader and per-chain signing state (from its admin API)")
    .option('--json', 'print the raw /status JSON')
    .action(async (o: AdminTargetOptions & { json?: boolean }) => {
      const status = await fetchStatus(await resolveAdminTarget(o));
      process.stdout.write(o.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
    });
}
