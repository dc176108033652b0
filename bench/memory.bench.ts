/**
 * Resident memory of a running single node (`cometkms start` from the compiled dist/, as
 * deployed: with the NODE_OPTIONS that deploy/systemd/cometkms.service and the container image
 * set), with 1 chain and with 100 chains, every chain signing: each chain is driven by its own
 * simulated validator on a unix socket at 1 s blocks, v0.38 with vote extensions. After a
 * warm-up, VmRSS (now) and VmHWM (peak) are read from /proc/<pid>/status. At 100 chains also
 * without those options (plain `node`), to show what they save.
 *
 * The cluster's figure is many-chains.bench.ts's (three cluster nodes at 100 chains).
 *
 * Run standalone: `node --import tsx bench/memory.bench.ts`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ValidatorSimulator } from '../src/simulator/simulator.ts';
import { waitFor } from '../test/helpers/kms-cluster.ts';
import { generateKeys, KmsHome, killAllKms } from '../test/helpers/kms-process.ts';
import { createSoftHsmToken } from '../test/helpers/softhsm.ts';
import { deployedNodeOptions } from './deployed-node.ts';
import { chainSimulator } from './simulators.ts';
import type { BenchResult } from './types.ts';

const KEY = 'bench-mem-ed25519';
const BLOCK_TIME_MS = 1000;
/** Seconds every chain signs before the figures are read. */
const RUN_S = 20;
/** The goal per node at 100 chains (issue 13). */
const GOAL_MB = 120;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** VmRSS and VmHWM of a process in MB, from /proc/<pid>/status. */
async function memoryMb(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const kb = new RegExp(`^${name}:\\s+(\\d+)\\s+kB$`, 'm').exec(status)?.[1];
    if (kb === undefined) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(kb) / 1024;
  };
  return { rss: field('VmRSS'), peak: field('VmHWM') };
}

/**
 * Runs one node with `chains` chains, each signing, with `nodeOptions` as its NODE_OPTIONS, and
 * returns its memory after RUN_S seconds.
 */
async function measure(
  chains: number,
  nodeOptions: string,
): Promise<{ rss: number; peak: number; heights: number }> {
  const token = await createSoftHsmToken({ label: `bench-mem-${chains}` });
  const sockDir = await mkdtemp(join(tmpdir(), 'ckms-bench-mem-'));
  const sims: ValidatorSimulator[] = [];
  let home: KmsHome | undefined;
  try {
    await generateKeys(token, [{ label: KEY, type: 'ed25519' }]);
    const ids = Array.from({ length: chains }, (_, i) => `bench-mem-${i + 1}`);
    for (const [i, id] of ids.entries()) {
      const sim = chainSimulator({
        listen: `unix://${join(sockDir, `c${i + 1}.sock`)}`,
        chainId: id,
        blockTimeMs: BLOCK_TIME_MS,
        heights: RUN_S + 60,
        seed: i + 1,
      });
      sims.push(sim);
      await sim.listen();
    }
    home = await KmsHome.create({
      token,
      chains: ids.map((id, i) => ({
        id,
        keyLabel: KEY,
        keyType: 'ed25519',
        protocol: 'v0.38',
        validators: [`unix://${join(sockDir, `c${i + 1}.sock`)}`],
      })),
    });
    const kms = home.start({ env: { NODE_OPTIONS: nodeOptions } });
    await kms.waitReady(60_000);
    const runs = Promise.allSettled(sims.map((sim) => sim.run()));
    await waitFor('every chain signing', 60_000, () => sims.every((s) => s.summary().heightsCompleted > 0));
    await sleep(RUN_S * 1000);
    if (kms.exitStatus !== undefined) throw new Error(`cometkms exited: ${kms.stderr}`);
    const mem = await memoryMb(kms.pid);
    const heights = Math.min(...sims.map((s) => s.summary().heightsCompleted));
    for (const sim of sims) await sim.close();
    const failed = (await runs).filter((r) => r.status === 'rejected');
    if (failed.length > 0) {
      throw new Error(
        `${failed.length} simulations failed: ${String((failed[0] as PromiseRejectedResult).reason)}`,
      );
    }
    const bad = sims.reduce((n, s) => n + s.summary().doubleSigns + s.summary().invalidSignatures, 0);
    if (bad > 0) throw new Error(`benchmark run went wrong: ${bad} invalid or double signatures`);
    kms.kill('SIGTERM');
    await kms.waitExit(30_000);
    return { ...mem, heights };
  } finally {
    for (const sim of sims) await sim.close();
    await killAllKms();
    await home?.cleanup();
    await rm(sockDir, { recursive: true, force: true });
    await token.cleanup();
  }
}

/** Runs the memory benchmark; returns its results. */
export async function benchMemory(): Promise<BenchResult[]> {
  const deployed = await deployedNodeOptions();
  const out: BenchResult[] = [];
  const runs = [
    { chains: 1, nodeOptions: deployed, suffix: '' },
    { chains: 100, nodeOptions: deployed, suffix: '' },
    { chains: 100, nodeOptions: '', suffix: '.plain_node' },
  ];
  for (const { chains, nodeOptions, suffix } of runs) {
    const m = await measure(chains, nodeOptions);
    const how = nodeOptions === '' ? 'no NODE_OPTIONS' : `NODE_OPTIONS=${nodeOptions} as deployed`;
    const setup = `single node (dist/, ${how}), ${chains} chain${chains === 1 ? '' : 's'} signing at ${BLOCK_TIME_MS} ms blocks with extensions, after ${RUN_S} s (slowest chain ${m.heights} heights)`;
    out.push(
      {
        name: `memory.single_node.rss.chains_${chains}${suffix}`,
        unit: 'MB',
        value: Math.round(m.rss),
        note: `VmRSS; ${setup}`,
        ...(chains === 100 && suffix === '' ? { goal: { max: GOAL_MB } } : {}),
      },
      {
        name: `memory.single_node.rss_peak.chains_${chains}${suffix}`,
        unit: 'MB',
        value: Math.round(m.peak),
        note: `VmHWM (peak RSS since start); ${setup}`,
      },
    );
  }
  return out;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchMemory()) {
    console.log(
      `${r.name.padEnd(40)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`,
    );
  }
}
