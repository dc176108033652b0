/**
 * Many chains on one cluster (ARCHITECTURE.md §6: "100 chains on one cluster at 1 s blocks
 * without falling behind; RSS ≤ 150 MB per node"), with real processes: 3 etcd members WITH
 * fsync, 1 s lease, and 3 `cometkms start` nodes whose tokens hold the same key, each configured
 * with 100 chains (all signed with that key), each chain driven by its own simulated validator on
 * a unix socket at 1 s blocks, v0.38 with vote extensions. The chains run at independent phases
 * (simulators.ts: runChains); cluster-chains.bench.ts measures the lockstep worst case.
 *
 * After a warm-up, the heights every chain completes in a fixed window are counted against the
 * heights a 1 s block time allows: a chain that completes fewer than 90 % of them fell behind.
 * At the end, the resident set size of every node is read from /proc/<pid>/status (VmRSS). The
 * nodes run with the NODE_OPTIONS of the deployment (deployed-node.ts).
 *
 * Run standalone: `node --import tsx bench/many-chains.bench.ts`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { SimulationSummary, ValidatorSimulator } from '../src/simulator/simulator.ts';
import { type KmsCluster, startKmsCluster, waitFor } from '../test/helpers/kms-cluster.ts';
import { deployedNodeOptions } from './deployed-node.ts';
import { cpuMs, r3, sleep } from './floors.ts';
import { chainSimulator, runChains } from './simulators.ts';
import type { BenchResult } from './types.ts';

const CHAINS = 100;
const BLOCK_TIME_MS = 1000;
const WARMUP_S = 10;
const MEASURE_S = 30;
/** A chain fell behind if it completed fewer than this share of the heights the window allows. */
const BEHIND_SHARE = 0.9;
/** Heights each simulator is given: more than warm-up + window, so none stops early. */
const HEIGHTS = WARMUP_S + MEASURE_S + 60;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** The resident set size of a process in MB, from /proc/<pid>/status. */
async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) / 1024;
}

function simulator(chainId: string, sock: string, seed: number): ValidatorSimulator {
  return chainSimulator({
    listen: `unix://${sock}`,
    chainId,
    blockTimeMs: BLOCK_TIME_MS,
    heights: HEIGHTS,
    seed,
  });
}

/** Runs the many-chains benchmark; returns its results. */
export async function benchManyChains(): Promise<BenchResult[]> {
  const nodeOptions = await deployedNodeOptions();
  const sockDir = await mkdtemp(join(tmpdir(), 'ckms-bench-many-'));
  const chains = Array.from({ length: CHAINS }, (_, i) => ({
    id: `bench-many-${i + 1}`,
    validators: [`unix://${join(sockDir, `c${i + 1}.sock`)}`],
  }));
  const sims = chains.map((c, i) => simulator(c.id, join(sockDir, `c${i + 1}.sock`), i + 1));
  let cluster: KmsCluster | undefined;
  try {
    for (const sim of sims) await sim.listen();
    const [first, ...more] = chains;
    if (first === undefined) throw new Error('no chains');
    cluster = await startKmsCluster({
      chainId: first.id,
      protocol: 'v0.38',
      validators: first.validators,
      moreChains: more,
      keySeed: new Uint8Array(32).fill(7),
      unsafeNoFsync: false,
      leaseTtlS: 1,
      nodeEnv: { NODE_OPTIONS: nodeOptions },
    });
    const leader = await cluster.leaderIndex();
    const pids = cluster.nodes.map((n) => {
      if (n.proc === undefined) throw new Error(`node ${n.id} is not running`);
      return n.proc.pid;
    });
    // A run that fails (no signer, a broken link) is a failed benchmark, reported at the end.
    const runs = runChains(sims, BLOCK_TIME_MS, 'independent');
    const settled = Promise.allSettled(runs);
    await waitFor('every chain signing', 60_000, () => sims.every((s) => s.summary().heightsCompleted > 0));
    await sleep(WARMUP_S * 1000);

    const before = sims.map((s) => s.summary());
    for (const sim of sims) sim.restartLatencies();
    const cpuBefore = await Promise.all(pids.map(cpuMs));
    const t0 = performance.now();
    await sleep(MEASURE_S * 1000);
    const after = sims.map((s) => s.summary());
    const cpuAfter = await Promise.all(pids.map(cpuMs));
    const windowS = (performance.now() - t0) / 1000;
    // RSS at the end of the window, with every chain still signing.
    const rss = await Promise.all(
      cluster.nodes.map(async (n) => {
        const proc = n.proc;
        if (proc === undefined || proc.exitStatus !== undefined)
          throw new Error(`node ${n.id} is not running`);
        return { id: n.id, mb: await rssMb(proc.pid) };
      }),
    );

    for (const sim of sims) await sim.close();
    const failed = (await settled).filter((r) => r.status === 'rejected');
    if (failed.length > 0) {
      throw new Error(
        `${failed.length} simulations failed: ${String((failed[0] as PromiseRejectedResult).reason)}`,
      );
    }
    const final: SimulationSummary[] = sims.map((s) => s.summary());
    const p99s = after.map((s) => s.latencyMs.p99);

    const expected = windowS / (BLOCK_TIME_MS / 1000);
    const heights = after.map(
      (a, i) => a.heightsCompleted - (before[i] as SimulationSummary).heightsCompleted,
    );
    const minHeights = Math.min(...heights);
    const behind = heights.filter((h) => h < BEHIND_SHARE * expected).length;
    const signed = after.reduce((n, a, i) => n + a.signed - (before[i] as SimulationSummary).signed, 0);
    const sum = (f: (s: SimulationSummary) => number): number => final.reduce((n, s) => n + f(s), 0);
    const refused = sum((s) => s.refused);
    const invalid = sum((s) => s.invalidSignatures + s.unanswered);
    const doubles = sum((s) => s.doubleSigns);
    const maxRss = Math.max(...rss.map((r) => r.mb));
    // CPU per answered request: steadier than latency on a shared machine, where queueing near
    // saturation swings the latency figures from run to run.
    const cpuPerSign = cpuAfter.map((a, i) => (a - (cpuBefore[i] as number)) / Math.max(1, signed));
    const followerCpu = cpuPerSign.filter((_, i) => i !== leader);

    const setup = `${CHAINS} chains × 1 unix simulator, v0.38 + extensions, ${BLOCK_TIME_MS} ms blocks, proposer every 4, chains at independent phases (seeded uniform start offsets within one block), 3 etcd members with fsync, 1 s lease`;
    const window = `${Math.round(windowS)} s window after ${WARMUP_S} s warm-up`;
    const latencyNote = `over the ${window}; ${CHAINS} chains`;
    return [
      {
        name: 'many_chains.signatures_per_s',
        unit: '/s',
        value: Math.round((signed / windowS) * 10) / 10,
        note: `sign requests answered, all chains (an extension is signed within its precommit's reply); ${setup}`,
      },
      {
        name: 'many_chains.heights.min',
        unit: 'heights',
        value: minHeights,
        note: `fewest heights one chain completed in the ${window}; ${Math.floor(expected)} allowed by the block time`,
      },
      {
        name: 'many_chains.heights.median',
        unit: 'heights',
        value: median(heights),
        note: window,
      },
      {
        name: 'many_chains.chains_behind',
        unit: 'chains',
        value: behind,
        note: `chains completing < ${BEHIND_SHARE * 100} % of the heights allowed`,
        goal: { max: 0 },
      },
      {
        name: 'many_chains.sign.p50',
        unit: 'ms',
        value: r3(median(after.map((s) => s.latencyMs.p50))),
        note: `median of the chains' p50, ${latencyNote}`,
        goal: { max: 20 },
      },
      {
        name: 'many_chains.sign.p99',
        unit: 'ms',
        value: r3(median(p99s)),
        note: `median of the chains' p99, ${latencyNote}`,
        goal: { max: 100 },
      },
      {
        name: 'many_chains.sign.p99.max',
        unit: 'ms',
        value: r3(Math.max(...p99s)),
        note: `worst chain's p99, ${latencyNote}`,
      },
      {
        name: 'many_chains.cpu_per_sign.leader',
        unit: 'ms',
        value: r3(cpuPerSign[leader] as number),
        note: `leader's CPU time (user + system, all threads) in the window / sign requests answered; ${Math.round(((cpuAfter[leader] as number) - (cpuBefore[leader] as number)) / windowS / 10)} % of a core`,
      },
      {
        name: 'many_chains.cpu_per_sign.follower',
        unit: 'ms',
        value: r3(Math.max(...followerCpu)),
        note: 'the busier follower, the same way (followers forward the requests of the validators connected to them)',
      },
      {
        name: 'many_chains.refused',
        unit: 'requests',
        value: refused,
        note: 'RemoteSignerError replies, all chains, whole run (goal 0)',
      },
      {
        name: 'many_chains.invalid_or_unanswered',
        unit: 'requests',
        value: invalid,
        note: 'invalid/missing signatures + requests never answered, whole run (goal 0)',
      },
      {
        name: 'many_chains.double_signs',
        unit: 'signs',
        value: doubles,
        note: 'conflicting signatures at one HRS, whole run (goal 0)',
      },
      {
        name: 'many_chains.rss.max',
        unit: 'MB',
        value: Math.round(maxRss),
        note: `VmRSS at the end of the window, each node: ${rss.map((r) => `${r.id} ${Math.round(r.mb)}`).join(', ')} MB; NODE_OPTIONS=${nodeOptions} as deployed`,
        goal: { max: 120 },
      },
    ];
  } finally {
    for (const sim of sims) await sim.close();
    await cluster?.cleanup();
    await rm(sockDir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchManyChains()) {
    console.log(
      `${r.name.padEnd(40)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`,
    );
  }
}
