/** `cometkms audit check`: look for a double sign across the audit logs of every node. */
import type { Command } from 'commander';
import { auditExitCode, checkAuditFiles, formatAuditReport } from '../../admin/audit-check.ts';

/** Registers `cometkms audit check`. */
export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('audit logs of the signing decisions');
  audit
    .command('check')
    .description(
      'report any height/round/step signed over two different sign bytes, across all the given files ' +
        '(pass every node’s log and its rotated files). Exit 0: no conflict; 1: conflict found; ' +
        '2: malformed lines or unreadable files (a conflict outranks them)',
    )
    .argument('<files...>', 'audit log files (e.g. audit.log audit.log.1 …) of all nodes')
    .action(async (files: string[]) => {
      let report: Awaited<ReturnType<typeof checkAuditFiles>>;
      try {
        report = await checkAuditFiles(files);
      } catch (err) {
        // The check could not be completed: not a verdict either way.
        process.stderr.write(`cometkms: audit check: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = 2;
        return;
      }
      const code = auditExitCode(report);
      process.stdout.write(formatAuditReport(report));
      process.exitCode = code;
    });
}
