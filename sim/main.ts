/**
 * `npm run sim -- --seeds N [--steps S] [--seed X] [--plant-bug NAME] [--list-bugs]`
 *
 * Runs the whole cluster in one process under the seeded scheduler (see README "Deterministic
 * simulation"). Seeds run are X, X+1, … X+N-1 (X defaults to 1). Ends with
 * `sim: N seeds, S steps, R steps/s, V violations`; exits 1 when a violation was found (with the
 * seed and the end of its history, replayable with `--seed X --seeds 1`), 2 on bad arguments.
 * `--record FILE` appends one line per run (for bench/results/). `--restore-anytime` lifts the
 * condition on restores and forced lower imports (every node has the newest state in its marks):
 * a node that missed the last heights may then lead after a restore, which the peer marks must
 * catch (planted bug `no-peer-marks` shows what happens without them).
 */
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PLANTED_BUGS, plantedBug } from './bugs.ts';
import { runSeed } from './world.ts';

function usage(msg: string): never {
  process.stderr.write(
    `sim: ${msg}\nusage: npm run sim -- --seeds N [--steps S] [--seed X] [--plant-bug NAME] [--list-bugs] [--record FILE] [--restore-anytime]\n`,
  );
  process.exit(2);
}

function int(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^[0-9]+$/.test(value) || Number(value) < 1) usage(`--${name} must be a whole number >= 1`);
  return Number(value);
}

const { values } = parseArgs({
  options: {
    seeds: { type: 'string' },
    steps: { type: 'string' },
    seed: { type: 'string' },
    'plant-bug': { type: 'string' },
    'list-bugs': { type: 'boolean' },
    record: { type: 'string' },
    'restore-anytime': { type: 'boolean' },
    nodes: { type: 'string' },
    chains: { type: 'string' },
    sentries: { type: 'string' },
  },
  strict: true,
});

if (values['list-bugs']) {
  for (const name of Object.keys(PLANTED_BUGS)) process.stdout.write(`${name}\n`);
  process.exit(0);
}

const bugName = values['plant-bug'];
const bug = bugName === undefined ? undefined : plantedBug(bugName);
if (bugName !== undefined && bug === undefined) usage(`unknown bug ${bugName} (see --list-bugs)`);
const seeds = int(values.seeds, 'seeds', bug === undefined ? 10 : bug.seedBudget);
const steps = int(values.steps, 'steps', 20_000);
const first = int(values.seed, 'seed', 1);
const nodes = int(values.nodes, 'nodes', 3);
const chains = int(values.chains, 'chains', 2);
const sentries = int(values.sentries, 'sentries', 2);

let totalSteps = 0;
let violations = 0;
let failedSeed: number | undefined;
const started = performance.now();
const cpuStarted = process.cpuUsage();
for (let seed = first; seed < first + seeds; seed++) {
  const result = await runSeed({
    seed,
    steps,
    nodes,
    chains,
    sentries,
    restoreAnytime: values['restore-anytime'] === true,
    ...(bug?.options ?? {}),
  });
  totalSteps += result.steps;
  // One seed: its history's hash, so that a replay can be compared with the original run.
  if (seeds === 1) process.stdout.write(`sim: seed ${seed} history sha256 ${result.historyHash}\n`);
  if (result.violations.length > 0) {
    violations += result.violations.length;
    failedSeed = seed;
    process.stdout.write(
      `sim: seed ${seed} violated an invariant after ${result.steps} steps (${result.simMs} ms simulated):\n` +
        result.violations.map((v) => `  ${v}\n`).join('') +
        `history (last ${result.tail.length} events; ms since start):\n` +
        result.tail.map((l) => `  ${l}\n`).join('') +
        `replay: npm run sim -- --seed ${seed} --seeds 1 --steps ${result.steps}${bugName === undefined ? '' : ` --plant-bug ${bugName}`}\n`,
    );
    break;
  }
}
const seconds = (performance.now() - started) / 1000;
const run = failedSeed === undefined ? seeds : failedSeed - first + 1;
const rate = Math.round(totalSteps / Math.max(seconds, 0.001));
const summary = `sim: ${run} seeds, ${totalSteps} steps, ${rate} steps/s, ${violations} violations`;
process.stdout.write(`${summary}\n`);
if (values.record !== undefined) {
  // CPU time too: on a shared machine the wall-clock rate says more about the neighbours.
  const cpu = process.cpuUsage(cpuStarted);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  appendFileSync(
    values.record,
    `${new Date().toISOString()} seeds ${first}..${first + run - 1}, ${steps} steps/seed` +
      `${bugName === undefined ? '' : `, bug ${bugName}`}: ${summary.slice(5)} ` +
      `(${Math.round(totalSteps / Math.max(cpuSeconds, 0.001))} steps per CPU second)\n`,
  );
}
process.exit(violations > 0 ? 1 : 0);
