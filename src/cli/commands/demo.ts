/**
 * `cometkms demo`: a complete local cluster on this machine (SoftHSM tokens, etcd members, KMS
 * nodes, a simulated validator) that signs, loses its leader to SIGKILL, fails over, proves
 * nothing was double-signed, and cleans up after itself — also on Ctrl-C.
 */
import { constants } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { checkDemoOptions, MAX_NODES } from '../demo/options.ts';
import { parseDuration } from '../duration.ts';

interface DemoFlags {
  duration: number;
  nodes: number;
  blockTime: number;
  keep?: boolean;
  json?: boolean;
}

function durationArg(text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function nodesArg(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > MAX_NODES) {
    throw new InvalidArgumentError(`must be a whole number from 1 to ${MAX_NODES}`);
  }
  return n;
}

async function demo(flags: DemoFlags): Promise<void> {
  // Loaded only here: the demo pulls in etcd launching, simulators and more that no other
  // command needs (a node in `start` carries none of it).
  const { DemoInterrupted, runDemo } = await import('../demo/run.ts');
  const opts = checkDemoOptions({
    durationMs: flags.duration,
    nodes: flags.nodes,
    blockTimeMs: flags.blockTime,
    keep: flags.keep === true,
    json: flags.json === true,
  });
  // With --json, stdout carries only the JSON summary; the story goes to stderr.
  const out = opts.json ? process.stderr : process.stdout;
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!controller.signal.aborted) {
      out.write(`\n${signal}: stopping the demo and cleaning up (again to force)\n`);
      controller.abort(new DemoInterrupted(signal));
      return;
    }
    // Insisting: exit now; the exit hooks SIGKILL every child and remove the temp dir.
    process.exit(128 + constants.signals[signal]);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const summary = await runDemo(opts, { out, tty: out.isTTY === true }, controller.signal);
    if (opts.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    if (!summary.ok) throw new Error(`demo failed: ${summary.reasons.join('; ')}`);
  } catch (err) {
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : err;
    if (reason instanceof DemoInterrupted) {
      out.write('demo interrupted; every process it started is stopped\n');
      process.exitCode = 128 + constants.signals[reason.signal];
      return;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Adds `cometkms demo`. */
export function registerDemo(program: Command): void {
  program.addCommand(
    new Command('demo')
      .description(
        'run a local cluster (SoftHSM, etcd, KMS nodes, simulated validator), kill its leader, ' +
          'show the failover and that nothing was double-signed, then clean up',
      )
      .addOption(
        new Option('--duration <duration>', 'how long the validator signs, e.g. 30s, 2m')
          .argParser(durationArg)
          .default(30_000, '30s'),
      )
      .addOption(
        new Option('--nodes <n>', 'KMS nodes (1 = single node, no etcd)').argParser(nodesArg).default(3),
      )
      .addOption(
        new Option('--block-time <duration>', 'time per block of the simulated validator')
          .argParser(durationArg)
          .default(1_000, '1s'),
      )
      .option('--keep', 'keep the working directory (configs, tokens, logs) and print where it is')
      .option('--json', 'print the summary (with every PID and the working directory) as JSON on stdout')
      .action((flags: DemoFlags) => demo(flags)),
  );
}
