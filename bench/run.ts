/**
 * `npm run bench`: runs benchmark suites, each in its own process (a PKCS#11 module is
 * initialised once per process with one SoftHSM config, and suites must not disturb each other's
 * timings), then prints the table. The rows of the suites that ran replace those suites' rows in
 * bench/results/latest.json; bench/results/latest.md and the README's table (between the
 * `bench:table` markers) are rewritten from it, so they always show each suite's latest run (a
 * figure and its floor always come from the same run of one suite). A suite added to SUITES
 * gets its rows in both tables; a row with a `goal` also gets one in the goals table.
 *
 * Usage: node --import tsx bench/run.ts [suite ...]   (default: all suites)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { BenchResult, SuiteRun } from './types.ts';

type Suite = () => Promise<BenchResult[]>;

/** Suite name → loader. Loaded lazily so a child imports only the suite it runs. */
const SUITES: Record<string, () => Promise<Suite>> = {
  pkcs11: async () => (await import('./pkcs11.bench.ts')).benchPkcs11,
  privval: async () => (await import('./privval.bench.ts')).benchPrivval,
  etcd: async () => (await import('./etcd.bench.ts')).benchEtcd,
  'single-node': async () => (await import('./single-node.bench.ts')).benchSingleNode,
  cluster: async () => (await import('./cluster.bench.ts')).benchCluster,
  'many-chains': async () => (await import('./many-chains.bench.ts')).benchManyChains,
  'cluster-chains': async () => (await import('./cluster-chains.bench.ts')).benchClusterChains,
  failover: async () => (await import('./failover.bench.ts')).benchFailover,
  memory: async () => (await import('./memory.bench.ts')).benchMemory,
};

const CHILD_FLAG = '--child-suite';

async function runChild(name: string): Promise<void> {
  const load = SUITES[name];
  if (load === undefined) throw new Error(`unknown suite ${name}`);
  const results = await (await load())();
  process.stdout.write(`\n@@RESULTS@@${JSON.stringify(results)}\n`);
}

function runSuiteInChild(name: string): BenchResult[] {
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), CHILD_FLAG, name],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 64 * 1024 * 1024,
      timeout: 15 * 60 * 1000,
    },
  );
  const marker = out.lastIndexOf('@@RESULTS@@');
  if (marker < 0) throw new Error(`suite ${name} printed no results`);
  return JSON.parse(out.slice(marker + '@@RESULTS@@'.length)) as BenchResult[];
}

function formatValue(r: BenchResult): string {
  const digits = Math.abs(r.value) >= 100 ? 0 : Math.abs(r.value) >= 10 ? 1 : 3;
  return `${r.value.toFixed(digits)} ${r.unit}`;
}

const LATEST = fileURLToPath(new URL('./results/latest.json', import.meta.url));

function machine(): string {
  return (
    `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown cpu'}), ` +
    `${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, load average ${loadavg()[0]?.toFixed(1)} at its start`
  );
}

function readLatest(): Record<string, SuiteRun> {
  return existsSync(LATEST) ? (JSON.parse(readFileSync(LATEST, 'utf8')) as Record<string, SuiteRun>) : {};
}

/** The suites in SUITES order (then any others the file still holds). */
function ordered(runs: Record<string, SuiteRun>): Array<[string, SuiteRun]> {
  const names = [...Object.keys(SUITES), ...Object.keys(runs).filter((n) => SUITES[n] === undefined)];
  return names.flatMap((n) => (runs[n] === undefined ? [] : [[n, runs[n]] as [string, SuiteRun]]));
}

function renderMarkdown(runs: Record<string, SuiteRun>): string {
  const suites = ordered(runs);
  const lines = [
    '# Benchmark results',
    '',
    "Each suite's rows come from its latest run of `npm run bench` (medians, and ratios to floors " +
      'measured in that same run; the machine is shared and noisy):',
    '',
    ...suites.map(([name, run]) => `- \`${name}\`: ${run.recorded}, ${run.machine}`),
    '',
  ];
  const goals = suites.flatMap(([name, run]) =>
    run.results.filter((r) => r.goal !== undefined).map((r) => ({ suite: name, result: r })),
  );
  if (goals.length > 0) {
    lines.push(
      '**Goals**',
      '',
      '| suite | measure | value | goal | met | how |',
      '| --- | --- | --- | --- | --- | --- |',
    );
    for (const { suite, result } of goals) {
      const max = result.goal?.max as number;
      const met = result.value <= max ? 'yes' : '**no**';
      lines.push(
        `| ${suite} | ${result.name} | ${formatValue(result)} | ≤ ${max} ${result.unit} | ${met} | ${result.note ?? ''} |`,
      );
    }
    lines.push('', '**All figures**', '');
  }
  lines.push('| suite | measure | value | note |', '| --- | --- | --- | --- |');
  for (const [name, run] of suites) {
    for (const r of run.results) lines.push(`| ${name} | ${r.name} | ${formatValue(r)} | ${r.note ?? ''} |`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === CHILD_FLAG) {
    await runChild(args[1] ?? '');
    return;
  }
  const names = args.length > 0 ? args : Object.keys(SUITES);
  for (const name of names) {
    if (SUITES[name] === undefined)
      throw new Error(`unknown suite ${name}; known: ${Object.keys(SUITES).join(', ')}`);
  }
  const runs = readLatest();
  for (const name of names) {
    process.stderr.write(`bench: running ${name}…\n`);
    const recorded = new Date().toISOString();
    const where = machine();
    runs[name] = { recorded, machine: where, results: runSuiteInChild(name) };
    // Saved after each suite, so a later suite that fails does not lose the earlier ones.
    writeFileSync(LATEST, `${JSON.stringify(runs, null, 2)}\n`);
  }
  const markdown = renderMarkdown(runs);
  process.stdout.write(markdown);
  writeFileSync(fileURLToPath(new URL('./results/latest.md', import.meta.url)), markdown);
  updateReadme(markdown);
}

const README_START = '<!-- bench:table -->';
const README_END = '<!-- /bench:table -->';

/** Replaces the README's benchmark section (between the markers) with the latest results. */
function updateReadme(markdown: string): void {
  const path = fileURLToPath(new URL('../README.md', import.meta.url));
  const readme = readFileSync(path, 'utf8');
  const start = readme.indexOf(README_START);
  const end = readme.indexOf(README_END);
  if (start < 0 || end < start)
    throw new Error(`README.md lacks the ${README_START} … ${README_END} markers`);
  // The results file starts with its own heading; the README section already has one.
  const body = markdown.replace(/^# Benchmark results\n\n/, '');
  writeFileSync(path, `${readme.slice(0, start + README_START.length)}\n${body}${readme.slice(end)}`);
}

await main();
