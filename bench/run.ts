/**
 * `npm run bench`: runs every benchmark suite, each in its own process (a PKCS#11 module is
 * initialised once per process with one SoftHSM config, and suites must not disturb each other's
 * timings), then prints the table. A run of every suite also writes bench/results/latest.md and
 * the table in README.md (between the `bench:table` markers), so the README always shows the
 * latest full run; a run of named suites only prints.
 *
 * Usage: node --import tsx bench/run.ts [suite ...]   (default: all suites)
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './types.ts';

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

function renderMarkdown(rows: Array<{ suite: string; result: BenchResult }>): string {
  const lines = [
    '# Benchmark results',
    '',
    `Recorded ${new Date().toISOString()} by \`npm run bench\` on ${cpus().length} cores ` +
      `(${cpus()[0]?.model ?? 'unknown cpu'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}. ` +
      'Medians and ratios are taken within one run; the machine is shared and noisy.',
    '',
    '| suite | measure | value | note |',
    '| --- | --- | --- | --- |',
  ];
  for (const { suite, result } of rows) {
    lines.push(`| ${suite} | ${result.name} | ${formatValue(result)} | ${result.note ?? ''} |`);
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
  const rows: Array<{ suite: string; result: BenchResult }> = [];
  for (const name of names) {
    if (SUITES[name] === undefined)
      throw new Error(`unknown suite ${name}; known: ${Object.keys(SUITES).join(', ')}`);
    process.stderr.write(`bench: running ${name}…\n`);
    for (const result of runSuiteInChild(name)) rows.push({ suite: name, result });
  }
  const markdown = renderMarkdown(rows);
  process.stdout.write(markdown);
  if (args.length === 0) {
    writeFileSync(fileURLToPath(new URL('./results/latest.md', import.meta.url)), markdown);
    updateReadme(markdown);
  }
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
