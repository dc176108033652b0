/**
 * `npm run chaos -- --rounds N [--seed S] [--faults kind,...] [--nodes 1|3|5] [--minutes M] [--record] [--keep]`
 *
 * Prints one line per round and ends with the summary line; exits non-zero on any conflict, any
 * signature the witness did not see made, or a fault after which signing did not come back.
 * The run's directory (history.jsonl, every spy log) is kept on failure and its path printed.
 * `--record` adds the run to bench/results/chaos-runs.json and rewrites the totals.
 */
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { FAULT_KINDS } from './faults/index.ts';
import { currentCommit, livenessTable, recordRun } from './record.ts';
import { runChaos, summaryLine } from './runner.ts';

const USAGE =
  'usage: npm run chaos -- --rounds N [--seed S] [--faults kind,...] [--nodes 1|3|5] [--minutes M] [--record] [--keep]\n' +
  `fault kinds: ${FAULT_KINDS.map((k) => `${k.name} (${k.modes.join('/')})`).join(', ')}\n`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      seed: { type: 'string' },
      faults: { type: 'string' },
      nodes: { type: 'string', default: '3' },
      minutes: { type: 'string' },
      record: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help || values.rounds === undefined) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const rounds = Number(values.rounds);
  const nodes = Number(values.nodes);
  const seed = values.seed === undefined ? randomInt(2 ** 31) : Number(values.seed);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
  if (nodes !== 1 && nodes !== 3 && nodes !== 5) throw new Error('--nodes must be 1, 3 or 5');
  if (!Number.isInteger(seed) || seed < 0) throw new Error('--seed must be a non-negative integer');
  const faults = values.faults
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  process.stdout.write(`chaos: seed ${seed}, ${nodes} node(s), up to ${rounds} rounds\n`);
  const commit = values.record ? await currentCommit() : '';
  const result = await runChaos({
    rounds,
    seed,
    nodes,
    ...(faults === undefined ? {} : { faults }),
    ...(values.minutes === undefined ? {} : { maxMs: Number(values.minutes) * 60_000 }),
    print: (line) => process.stdout.write(`${line}\n`),
    keep: values.keep,
  });
  process.stdout.write(`${livenessTable(result)}\n`);
  for (const f of result.failures) process.stdout.write(`FAILED: ${f}\n`);
  if (result.kept)
    process.stdout.write(`history and spy logs kept in ${result.runDir} (replay: --seed ${seed})\n`);
  if (values.record) await recordRun(result, commit);
  process.stdout.write(`${summaryLine(result)}\n`);
  return result.failures.length === 0 ? 0 : 1;
}

// Ctrl-C or a kill: exit normally, so the exit hooks stop every node and etcd member started.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    process.exit(2);
  },
);
