/**
 * `cometkms simulate`: run simulated CometBFT validator nodes (the privval listener side) for a
 * KMS to dial, drive them through N heights, and report what the KMS signed. Exits non-zero on
 * any double sign or invalid signature, or when no KMS connected in time.
 */

import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { PROTOCOL_VERSIONS, type ProtocolVersion } from '../../cometbft/types.ts';
import { formatPrivvalAddress, parsePrivvalAddress } from '../../privval/address.ts';
import type { SimulationSummary, ValidatorSimulator } from '../../simulator/simulator.ts';
import { parseDuration } from '../duration.ts';

interface SimulateOptions {
  listen: string;
  chainId: string;
  protocol: ProtocolVersion;
  blockTime: number;
  heights: number;
  startHeight: number;
  sentries: number;
  seed?: number;
  proposerEvery: number;
  nilVoteRate: number;
  roundChangeRate: number;
  retryRate: number;
  extensions: boolean;
  connectTimeout: number;
  logLevel: string;
  json?: boolean;
}

/** Registers `cometkms simulate`. */
export function registerSimulate(program: Command): void {
  program.addCommand(
    new Command('simulate')
      .description(
        'simulate CometBFT validator nodes for a KMS to dial, and check every signature it returns',
      )
      .requiredOption(
        '--listen <addr>',
        'listen address: tcp://127.0.0.1:26659 (port 0 = any) or unix:///path.sock',
      )
      .requiredOption('--chain-id <id>', 'chain id')
      .addOption(
        new Option('--protocol <version>', 'CometBFT privval protocol')
          .choices(PROTOCOL_VERSIONS)
          .default('v0.38'),
      )
      .option('--block-time <duration>', 'time per height, e.g. 500ms, 1s', parseDurationArg, 1000)
      .option('--heights <n>', 'heights to simulate', intArg(0), 10)
      .option('--start-height <n>', 'first height', intArg(1), 1)
      .option(
        '--sentries <k>',
        'simulated nodes of the one validator, sharing one double-sign record; node i listens on ' +
          'port+i (tcp) or path.i (unix, i > 0)',
        intArg(1),
        1,
      )
      .option('--seed <s>', 'seed for all random choices (default: random)', intArg(0))
      .option('--proposer-every <n>', 'propose when (height + round) % n == 0', intArg(1), 4)
      .option('--nil-vote-rate <p>', 'chance of a nil vote', rateArg, 0.05)
      .option('--round-change-rate <p>', 'chance that a round fails and the next round starts', rateArg, 0.05)
      .option('--retry-rate <p>', 'chance of re-sending an identical sign request', rateArg, 0.05)
      .option('--no-extensions', 'no vote extensions (v0.38/v1.0)')
      .option(
        '--connect-timeout <duration>',
        'how long to wait for the KMS to connect',
        parseDurationArg,
        30_000,
      )
      .option('--log-level <level>', 'log level on stderr (silent, error, warn, info, debug)', 'warn')
      .option('--json', 'print the summary as JSON')
      .action((o: SimulateOptions) => simulate(o)),
  );
}

async function simulate(o: SimulateOptions): Promise<void> {
  // Loaded only here, so that other commands (a node in `start`) do not carry the simulator.
  const { SignRecord } = await import('../../simulator/sign-record.ts');
  const { ValidatorSimulator } = await import('../../simulator/simulator.ts');
  const logger = pino({ level: o.logLevel }, pino.destination(2));
  const record = new SignRecord();
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
  const sims = sentryAddresses(o.listen, o.sentries).map(
    (listen, i) =>
      new ValidatorSimulator({
        listen,
        chainId: o.chainId,
        protocol: o.protocol,
        blockTimeMs: o.blockTime,
        heights: o.heights,
        startHeight: BigInt(o.startHeight),
        proposerEvery: o.proposerEvery,
        nilVoteRate: o.nilVoteRate,
        roundChangeRate: o.roundChangeRate,
        retryRate: o.retryRate,
        extensions: o.extensions,
        // Each sentry decides nil votes and round changes on its own, as real nodes do.
        seed: seed + i,
        connectTimeoutMs: o.connectTimeout,
        record,
        logger,
      }),
  );
  const stop = (): void => {
    for (const sim of sims) void sim.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    // In JSON mode stdout carries only the summary, so the listen lines go to stderr.
    const say = (line: string): void => {
      (o.json ? process.stderr : process.stdout).write(`${line}\n`);
    };
    for (const sim of sims) say(`listening on ${await sim.listen()}`);
    const results = await Promise.allSettled(sims.map((sim) => sim.run()));
    const summaries = results.map((r, i) =>
      r.status === 'fulfilled' ? r.value : (sims[i] as ValidatorSimulator).summary(),
    );
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [errorText(r.reason)] : []));

    const total = aggregate(summaries);
    if (o.json) {
      process.stdout.write(
        `${JSON.stringify({ seed, total, sentries: summaries, errors: failures }, null, 2)}\n`,
      );
    } else {
      process.stdout.write(describe(seed, total, summaries));
    }

    const reasons: string[] = [...failures];
    if (total.doubleSigns > 0) reasons.push(`${total.doubleSigns} double sign(s) detected`);
    if (total.invalidSignatures > 0) reasons.push(`${total.invalidSignatures} invalid signature(s)`);
    if (reasons.length > 0) throw new Error(`simulation failed: ${reasons.join('; ')}`);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await Promise.all(sims.map((sim) => sim.close()));
  }
}

/** Listen addresses of `k` sentries: tcp port+i (0 stays 0), unix path then path.1, path.2… */
export function sentryAddresses(listen: string, k: number): string[] {
  const base = parsePrivvalAddress(listen);
  return Array.from({ length: k }, (_, i) => {
    if (base.proto === 'unix')
      return formatPrivvalAddress({ proto: 'unix', path: i === 0 ? base.path : `${base.path}.${i}` });
    const port = base.port === 0 ? 0 : base.port + i;
    if (port > 65535) throw new Error(`--sentries ${k} from port ${base.port} goes beyond port 65535`);
    return formatPrivvalAddress({ ...base, port });
  });
}

type Totals = Omit<
  SimulationSummary,
  'address' | 'pubKey' | 'problems' | 'chainId' | 'latencyMs' | 'latencyByTypeMs'
> & {
  chainId: string;
  latencyMs: { p50: number; p99: number };
};

function aggregate(list: SimulationSummary[]): Totals {
  const first = list[0] as SimulationSummary;
  const sum = (k: keyof SimulationSummary): number => list.reduce((acc, s) => acc + (s[k] as number), 0);
  return {
    chainId: first.chainId,
    connects: sum('connects'),
    signed: sum('signed'),
    refused: sum('refused'),
    retried: sum('retried'),
    emptyReplies: sum('emptyReplies'),
    invalidSignatures: sum('invalidSignatures'),
    doubleSigns: sum('doubleSigns'),
    staleProposals: sum('staleProposals'),
    unanswered: sum('unanswered'),
    heightsCompleted: Math.min(...list.map((s) => s.heightsCompleted)),
    lastHeight: Math.max(...list.map((s) => s.lastHeight)),
    // Per-sentry percentiles cannot be merged exactly; the worst sentry is the honest figure.
    latencyMs: {
      p50: Math.max(...list.map((s) => s.latencyMs.p50)),
      p99: Math.max(...list.map((s) => s.latencyMs.p99)),
    },
  };
}

function describe(seed: number, t: Totals, list: SimulationSummary[]): string {
  const lines = [
    `chain ${t.chainId}: ${t.heightsCompleted} height(s) completed, last height ${t.lastHeight} (seed ${seed})`,
    `  signed             ${t.signed}`,
    `  refused            ${t.refused}`,
    `  retried            ${t.retried}`,
    `  empty replies      ${t.emptyReplies}`,
    `  unanswered         ${t.unanswered}`,
    `  stale proposals    ${t.staleProposals}`,
    `  invalid signatures ${t.invalidSignatures}`,
    `  double signs       ${t.doubleSigns}`,
    `  latency            p50 ${t.latencyMs.p50.toFixed(2)} ms, p99 ${t.latencyMs.p99.toFixed(2)} ms`,
  ];
  for (const s of list) {
    if (list.length > 1)
      lines.push(`  sentry ${s.address}: ${s.signed} signed, ${s.refused} refused, ${s.connects} connect(s)`);
    for (const p of s.problems) lines.push(`  problem (${s.address}): ${p}`);
  }
  return `${lines.join('\n')}\n`;
}

function parseDurationArg(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError(errorText(err));
  }
}

function intArg(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    }
    return n;
  };
}

function rateArg(value: string): number {
  const p = Number(value);
  if (value.trim() === '' || !Number.isFinite(p) || p < 0 || p > 1) {
    throw new InvalidArgumentError('expected a probability between 0 and 1');
  }
  return p;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
