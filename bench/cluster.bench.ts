/**
 * Cluster benchmarks (ARCHITECTURE.md §6) with real processes: 3 etcd members WITH fsync and 3
 * `cometkms start` nodes whose tokens hold the same key, driven by a simulated validator.
 *
 * - Sign latency p50/p99 through the whole cluster path, timed by the simulator (request sent →
 *   response received), through whichever node holds the validator connection (a follower
 *   forwards to the leader over mTLS), and in the same run a single node (file store) on the
 *   same machine, as the ratio's baseline.
 * - Crash failover: leader SIGKILLed → first signature returned after it (necessarily made by the
 *   new leader), median of ≥ 5.
 * - Graceful handover: leader SIGTERMed → first signature after it, median of ≥ 5.
 *
 * Run standalone: `node --import tsx bench/cluster.bench.ts`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ValidatorSimulator } from '../src/simulator/simulator.ts';
import { type KmsCluster, startKmsCluster } from '../test/helpers/kms-cluster.ts';
import { KmsHome } from '../test/helpers/kms-process.ts';
import { timeToSignatureAfter } from './failover.bench.ts';
import { sequentialSimulator } from './simulators.ts';
import type { BenchResult } from './types.ts';

const CHAIN = 'bench-cluster-1';
const HEIGHTS = 400;
const FAILOVERS = 5;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

function simulator(
  listen: string,
  startHeight: bigint,
  heights: number,
  blockTimeMs: number,
): ValidatorSimulator {
  return sequentialSimulator({ listen, chainId: CHAIN, heights, startHeight, blockTimeMs });
}

/** Runs the cluster benchmark; returns its results. */
export async function benchCluster(): Promise<BenchResult[]> {
  const sockDir = await mkdtemp(join(tmpdir(), 'ckms-bench-cluster-'));
  const latencySim = simulator('tcp://127.0.0.1:0', 1n, HEIGHTS, 0);
  const addr = await latencySim.listen();
  let cluster: KmsCluster | undefined;
  let single: KmsHome | undefined;
  try {
    cluster = await startKmsCluster({
      chainId: CHAIN,
      protocol: 'v0.38',
      validators: [addr],
      keySeed: new Uint8Array(32).fill(42),
      unsafeNoFsync: false,
    });
    await cluster.leaderIndex();
    const clusterRun = await latencySim.run();
    await latencySim.close();

    // Failover and handover, against a simulator signing continuously on the same address (the
    // nodes dial the address of their config).
    const reuse = simulator(addr, BigInt(HEIGHTS + 10), 1_000_000, 5);
    await reuse.listen();
    const running = reuse.run().catch(() => undefined);
    const c = cluster;
    const crash: number[] = [];
    const graceful: number[] = [];
    for (let i = 0; i < FAILOVERS; i++) {
      const leader = await c.leaderIndex();
      crash.push(await timeToSignatureAfter(reuse, () => c.signal(leader, 'SIGKILL'), 1));
      await c.start(leader);
      const next = await c.leaderIndex();
      graceful.push(await timeToSignatureAfter(reuse, () => c.signal(next, 'SIGTERM'), 1));
      await c.start(next);
    }
    await reuse.close();
    await running;
    // Node kms-1 leaves the cluster so that its token (and home key label) serve the single node.
    await c.signal(0, 'SIGTERM');
    const tokenOfNode1 = c.nodes[0]!.token;
    // Single node in the same run, same machine, one of the same tokens.
    const sock = join(sockDir, 'single.sock');
    const singleSim = simulator(`unix://${sock}`, 1n, HEIGHTS, 0);
    await singleSim.listen();
    single = await KmsHome.create({
      token: tokenOfNode1,
      chains: [
        {
          id: CHAIN,
          keyLabel: 'validator-key',
          keyType: 'ed25519',
          protocol: 'v0.38',
          validators: [`unix://${sock}`],
        },
      ],
    });
    const proc = single.start();
    await proc.waitReady();
    const singleRun = await singleSim.run();
    await singleSim.close();
    proc.kill('SIGTERM');
    await proc.waitExit(15_000);

    const note = `${HEIGHTS * 3} sequential requests, v0.38 without extensions, 3 etcd members with fsync, 1 s lease`;
    return [
      { name: 'cluster.sign.p50', unit: 'ms', value: r3(clusterRun.latencyMs.p50), note },
      { name: 'cluster.sign.p99', unit: 'ms', value: r3(clusterRun.latencyMs.p99), note },
      {
        name: 'cluster.single_node.sign.p50',
        unit: 'ms',
        value: r3(singleRun.latencyMs.p50),
        note: 'same run',
      },
      {
        name: 'cluster.single_node.sign.p99',
        unit: 'ms',
        value: r3(singleRun.latencyMs.p99),
        note: 'same run',
      },
      {
        name: 'cluster.sign_vs_single.ratio.p50',
        unit: 'x',
        value: Math.round((clusterRun.latencyMs.p50 / singleRun.latencyMs.p50) * 100) / 100,
        note: 'cluster p50 / single-node p50, same run',
      },
      {
        name: 'cluster.failover.crash.median',
        unit: 'ms',
        value: Math.round(median(crash)),
        note: `leader SIGKILL → first signature after it, median of ${crash.length} (goal ≤ 1500 ms)`,
      },
      {
        name: 'cluster.failover.graceful.median',
        unit: 'ms',
        value: Math.round(median(graceful)),
        note: `leader SIGTERM → first signature after it, median of ${graceful.length} (goal ≤ 250 ms)`,
      },
    ];
  } finally {
    await latencySim.close();
    await cluster?.cleanup();
    await single?.cleanup();
    await rm(sockDir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchCluster()) {
    console.log(
      `${r.name.padEnd(40)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`,
    );
  }
}
