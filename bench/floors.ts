/**
 * What the whole-path benchmarks compare themselves with, measured in the same run: the floors
 * (one pwrite+fdatasync on the disk that holds the state, a privval ping round trip against the
 * real node) and the node's own per-stage breakdown, read from its
 * `cometkms_sign_stage_duration_seconds` histogram before and after the measured run.
 */
import { closeSync, fdatasyncSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STAGE_METRIC } from '../src/admin/stage-histogram.ts';
import { ValidatorSimulator } from '../src/simulator/simulator.ts';
import { SIGN_STAGES, type SignStage } from '../src/stages.ts';
import { adminGet } from '../test/helpers/kms-process.ts';

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export const r3 = (x: number): number => Math.round(x * 1000) / 1000;

/**
 * How long the process sleeps before each timed call of an "after idle" floor: long enough for
 * its CPU to go idle, as a node's does while it waits for the next request or for the disk.
 */
export const IDLE_GAP_MS = 1;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on every Linux build that matters) */
const CLOCK_TICKS_PER_S = 100;

/** CPU time (user + system, all threads) a process has used so far, in ms, from /proc/<pid>/stat. */
export async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / CLOCK_TICKS_PER_S;
}

/**
 * Times `n` sequential 256-byte pwrite+fdatasync calls into a preallocated, zero-filled file in
 * `dir` (what the file store's log does per reservation); returns the sorted times in ms.
 * `afterIdle`: each call follows a sleep of IDLE_GAP_MS instead of the previous call.
 */
export async function fdatasyncTimes(dir: string, n = 2000, afterIdle = false): Promise<number[]> {
  const path = join(dir, `.bench-fdatasync-${process.pid}`);
  const size = 1 << 20;
  const record = Buffer.alloc(256, 0x5a);
  const fd = openSync(path, 'w+', 0o600);
  try {
    writeSync(fd, Buffer.alloc(size), 0, size, 0);
    fsyncSync(fd);
    const out: number[] = [];
    for (let i = 0; i < n + 100; i++) {
      if (afterIdle) await sleep(IDLE_GAP_MS);
      const t0 = performance.now();
      writeSync(fd, record, 0, record.length, (i * record.length) % (size - record.length));
      fdatasyncSync(fd);
      if (i >= 100) out.push(performance.now() - t0);
    }
    return out.sort((a, b) => a - b);
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
}

/**
 * Times `n` sequential privval pings against the signer that connects to `listen` (the real
 * node: its dialer reconnects to a fresh listener); returns the sorted round trips in ms.
 */
export async function pingTimes(listen: string, chainId: string, n = 2000): Promise<number[]> {
  const sim = new ValidatorSimulator({
    listen,
    chainId,
    protocol: 'v0.38',
    blockTimeMs: 0,
    heights: 0,
    seed: 1,
  });
  try {
    await sim.listen();
    if (!(await sim.waitForSigner(30_000))) throw new Error(`no signer connected to ${listen}`);
    for (let i = 0; i < 100; i++) await sim.ping();
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await sim.ping();
      out.push(performance.now() - t0);
    }
    return out.sort((a, b) => a - b);
  } finally {
    await sim.close();
  }
}

/** One stage's histogram as scraped: cumulative bucket counts by upper bound (seconds), and the sum. */
interface StageSeries {
  bounds: number[];
  cumulative: number[];
  count: number;
  sum: number;
}

export type StageScrape = Map<SignStage, StageSeries>;

/** Reads the node's per-stage histogram from its /metrics. */
export async function scrapeStages(adminUrl: string, token: string): Promise<StageScrape> {
  const { status, body } = await adminGet(adminUrl, '/metrics', token);
  if (status !== 200 || typeof body !== 'string') throw new Error(`GET /metrics answered ${status}`);
  return parseStages(body);
}

/** The per-stage histogram in a /metrics text. */
export function parseStages(body: string): StageScrape {
  const out: StageScrape = new Map();
  const series = (stage: SignStage): StageSeries => {
    let s = out.get(stage);
    if (s === undefined) {
      s = { bounds: [], cumulative: [], count: 0, sum: 0 };
      out.set(stage, s);
    }
    return s;
  };
  for (const line of body.split('\n')) {
    if (!line.startsWith(STAGE_METRIC)) continue;
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (m === null) continue;
    const [, name, labelText, valueText] = m as unknown as [string, string, string, string];
    const labels = Object.fromEntries(
      [...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1] as string, l[2] as string]),
    );
    const stage = labels['stage'] as SignStage | undefined;
    if (stage === undefined || !SIGN_STAGES.includes(stage)) continue;
    const value = Number(valueText);
    const s = series(stage);
    if (name === `${STAGE_METRIC}_bucket`) {
      const le = labels['le'] === '+Inf' ? Number.POSITIVE_INFINITY : Number(labels['le']);
      s.bounds.push(le);
      s.cumulative.push(value);
    } else if (name === `${STAGE_METRIC}_sum`) s.sum = value;
    else if (name === `${STAGE_METRIC}_count`) s.count = value;
  }
  return out;
}

/** A stage's share of the measured run. */
export interface StageFigure {
  stage: SignStage;
  count: number;
  /** median in ms, interpolated linearly within its histogram bucket */
  p50Ms: number;
  meanMs: number;
}

/** Per stage, what happened between the two scrapes (stages never observed are left out). */
export function stageBreakdown(before: StageScrape, after: StageScrape): StageFigure[] {
  const out: StageFigure[] = [];
  for (const stage of SIGN_STAGES) {
    const a = after.get(stage);
    if (a === undefined) continue;
    const b = before.get(stage);
    const cumulative = a.cumulative.map((c, i) => c - (b?.cumulative[i] ?? 0));
    const count = a.count - (b?.count ?? 0);
    if (count <= 0) continue;
    const sum = a.sum - (b?.sum ?? 0);
    out.push({
      stage,
      count,
      p50Ms: interpolatedMedian(a.bounds, cumulative, count) * 1000,
      meanMs: (sum / count) * 1000,
    });
  }
  return out;
}

function interpolatedMedian(bounds: number[], cumulative: number[], count: number): number {
  const half = count / 2;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const upper = bounds[i] as number;
    const c = cumulative[i] as number;
    if (c >= half) {
      if (!Number.isFinite(upper)) return lower;
      const inBucket = c - below;
      return inBucket === 0 ? upper : lower + ((half - below) / inBucket) * (upper - lower);
    }
    lower = upper;
    below = c;
  }
  return lower;
}
