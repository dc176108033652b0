/**
 * bench/results/chaos-runs.json keeps every recorded run (seed, nodes, rounds by kind,
 * conflicts, liveness); bench/results/chaos.md and the README's chaos table show the totals.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { RunResult } from './runner.ts';

const run = promisify(execFile);
const RUNS = fileURLToPath(new URL('../../../bench/results/chaos-runs.json', import.meta.url));
const TABLE = fileURLToPath(new URL('../../../bench/results/chaos.md', import.meta.url));
const README = fileURLToPath(new URL('../../../README.md', import.meta.url));
const BEGIN = '<!-- chaos-totals:begin -->';
const END = '<!-- chaos-totals:end -->';

export interface RecordedRun {
  date: string;
  /** the commit the run tested */
  commit: string;
  seed: number;
  nodes: number;
  rounds: number;
  conflicts: number;
  witnessed: number;
  undelivered: number;
  failures: string[];
  kinds: Record<
    string,
    { rounds: number; nextSignatureMsP50: number; nextSignatureMsMax: number; heightsMissedMax: number }
  >;
}

const pct = (xs: number[], q: number): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
};

export function toRecorded(r: RunResult, commit: string, date = new Date().toISOString()): RecordedRun {
  const kinds: RecordedRun['kinds'] = {};
  for (const [k, s] of r.byKind) {
    kinds[k] = {
      rounds: s.rounds,
      nextSignatureMsP50: pct(s.nextSignatureMs, 0.5),
      nextSignatureMsMax: Math.max(0, ...s.nextSignatureMs),
      heightsMissedMax: Math.max(0, ...s.heightsMissed),
    };
  }
  return {
    date,
    commit,
    seed: r.seed,
    nodes: r.nodes,
    rounds: r.rounds,
    conflicts: r.verdict.conflicts.length,
    witnessed: r.verdict.witnessed,
    undelivered: r.verdict.undelivered,
    failures: r.failures.map((f) => f.slice(0, 300)),
    kinds,
  };
}

/** Liveness per fault kind of one run: time from the fault to the next signature, heights missed. */
export function livenessTable(r: RunResult): string {
  const lines = ['liveness by fault kind: rounds, next signature p50 / max, heights missed max'];
  for (const [k, s] of [...r.byKind.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const max = Math.max(0, ...s.nextSignatureMs);
    lines.push(
      `  ${k.padEnd(24)} ${String(s.rounds).padStart(4)}  ${pct(s.nextSignatureMs, 0.5)} / ${max} ms  ${Math.max(0, ...s.heightsMissed)}`,
    );
  }
  return lines.join('\n');
}

/** The totals table (markdown) over every recorded run, one row per fault kind and cluster size. */
export function totalsTable(runs: readonly RecordedRun[]): string {
  const rows = new Map<
    string,
    { kind: string; nodes: number; rounds: number; p50: number[]; max: number; missed: number }
  >();
  for (const run of runs) {
    for (const [kind, s] of Object.entries(run.kinds)) {
      const key = `${kind}\u0000${run.nodes}`;
      const t = rows.get(key) ?? { kind, nodes: run.nodes, rounds: 0, p50: [], max: 0, missed: 0 };
      t.rounds += s.rounds;
      t.p50.push(s.nextSignatureMsP50);
      t.max = Math.max(t.max, s.nextSignatureMsMax);
      t.missed = Math.max(t.missed, s.heightsMissedMax);
      rows.set(key, t);
    }
  }
  const rounds = runs.reduce((n, r) => n + r.rounds, 0);
  const conflicts = runs.reduce((n, r) => n + r.conflicts, 0);
  const witnessed = runs.reduce((n, r) => n + r.witnessed, 0);
  const lines = [
    `${rounds} rounds in ${runs.length} recorded runs, ${witnessed} signatures witnessed, **${conflicts} conflicts** (goal: 10,000 rounds, 0 conflicts).`,
    '',
    '| fault kind | nodes | rounds | next signature p50 (median of runs) | worst next signature | worst heights missed |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  const sorted = [...rows.values()].sort((a, b) => a.kind.localeCompare(b.kind) || a.nodes - b.nodes);
  for (const t of sorted) {
    lines.push(
      `| ${t.kind} | ${t.nodes} | ${t.rounds} | ${pct(t.p50, 0.5)} ms | ${t.max} ms | ${t.missed} |`,
    );
  }
  const seeds = runs.map(
    (r) =>
      `${r.seed} (${r.nodes} node${r.nodes > 1 ? 's' : ''}, ${r.rounds} rounds, ${r.commit}${r.conflicts > 0 ? `, ${r.conflicts} conflicts` : ''}${r.failures.length > 0 ? `, stopped by: ${r.failures[0]}` : ''})`,
  );
  lines.push('', `Seeds: ${seeds.join(', ')}.`);
  return lines.join('\n');
}

/** Rewrites bench/results/chaos.md and the README's totals from bench/results/chaos-runs.json. */
export async function rewriteTotals(): Promise<void> {
  const runs: RecordedRun[] = existsSync(RUNS)
    ? (JSON.parse(await readFile(RUNS, 'utf8')) as RecordedRun[])
    : [];
  const table = totalsTable(runs);
  await writeFile(TABLE, `# Chaos rounds recorded (\`npm run chaos -- --record\`)\n\n${table}\n`);
  const readme = await readFile(README, 'utf8');
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a >= 0 && b > a) {
    await writeFile(README, `${readme.slice(0, a + BEGIN.length)}\n${table}\n${readme.slice(b)}`);
  }
}

/** The commit checked out now (a run notes it when it starts: the code it tests). */
export async function currentCommit(): Promise<string> {
  const { stdout } = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: dirname(RUNS) });
  const dirty = (await run('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: dirname(RUNS) }))
    .stdout;
  return `${stdout.trim()}${dirty.trim().length > 0 ? '+changes' : ''}`;
}

/** Adds `r`, run on `commit`, to bench/results/chaos-runs.json and rewrites the totals. */
export async function recordRun(r: RunResult, commit: string): Promise<void> {
  const runs: RecordedRun[] = existsSync(RUNS)
    ? (JSON.parse(await readFile(RUNS, 'utf8')) as RecordedRun[])
    : [];
  runs.push(toRecorded(r, commit));
  await writeFile(RUNS, `${JSON.stringify(runs, null, 1)}\n`);
  await rewriteTotals();
}
