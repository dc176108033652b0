/**
 * The cluster signing path against its floor, and many chains on one cluster (issue 13), with
 * real processes: 3 etcd members WITH fsync, 1 s lease, 3 `cometkms start` nodes on SoftHSM
 * tokens holding the same key, validators simulated by `ValidatorSimulator`.
 *
 * - single: one chain over tcp, sequential v0.38 prevotes/precommits/proposals (no extensions),
 *   through whichever node holds the validator connection. Its floor, measured in the same run
 *   on the same etcd and machine: a bare fenced transaction (the 3 leader-key compares + the
 *   state compare, one put) + a bare SoftHSM ed25519 C_Sign + a privval ping round trip over
 *   the same connection. Goals: p50 ≤ 1.5 × floor, p99 ≤ 25 ms. For reference, no goal: the
 *   CPU time each process of the cluster spent per request of the measured run (all of them
 *   share this machine's cores and disk), and the same bare fenced transaction measured again
 *   while a second chain of the cluster signs sequentially, beside the leader's own reserve
 *   transaction in the measured run.
 * - 100 chains in lockstep (every chain asks at the same moment: the worst case) and 300 chains
 *   at independent phases (simulators.ts: runChains), 1 s blocks, v0.38 with vote extensions,
 *   each chain its own simulator on a unix socket. After a warm-up, the heights every chain completes in a window are
 *   counted: a chain completing fewer than 90 % of the heights the block time allows is behind.
 *   The leader's /metrics give how many reservations each etcd transaction carried (group
 *   commit) and the leader changes in the window. Goal: 0 behind (the latency goals at 100
 *   chains are many-chains.bench.ts's).
 *
 * Run standalone: `node --import tsx bench/cluster-chains.bench.ts [single] [N] [N-lockstep] ...`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LATENCY_BUCKETS_S } from '../src/admin/metrics.ts';
import { createEtcdClients } from '../src/cluster/etcd-client.ts';
import { Step } from '../src/cometbft/types.ts';
import { openHsm } from '../src/pkcs11/hsm.ts';
import { acquireModule, releaseModule } from '../src/pkcs11/module.ts';
import { initSoftHsmToken, randomPin, SOFTHSM_MODULE } from '../src/pkcs11/softhsm.ts';
import { Etcd3Port } from '../src/ports/etcd3.ts';
import type { SimulationSummary, ValidatorSimulator } from '../src/simulator/simulator.ts';
import { encodeSignState, etcdKeys, fencingCompares } from '../src/store/etcd.ts';
import { freshSignState } from '../src/store/types.ts';
import { type KmsCluster, startKmsCluster, waitFor } from '../test/helpers/kms-cluster.ts';
import { cpuMs, parseStages, stageBreakdown } from './floors.ts';
import { bareSigner } from './pkcs11.bench.ts';
import { chainSimulator, runChains, sequentialSimulator } from './simulators.ts';
import type { BenchResult } from './types.ts';

const BLOCK_TIME_MS = 1000;
const WARMUP_S = 10;
const MEASURE_S = 30;
/** A chain fell behind if it completed fewer than this share of the heights the window allows. */
const BEHIND_SHARE = 0.9;
const SINGLE_HEIGHTS = 300;
/** heights the load chain of the loaded floor may sign: more than it gets to (it is stopped after the floor) */
const LOAD_HEIGHTS = 2000;
const FLOOR_SAMPLES = 500;
const PINGS = 300;

const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] as number;
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Times `n` sequential calls of `fn`, in ms each. */
async function timeEach(n: number, fn: (i: number) => Promise<unknown> | unknown): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

/** Sums the samples of `metric` whose labels contain every `label="value"` of `labels`. */
function metricSum(text: string, metric: string, labels: string[] = []): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${metric}{`) && !line.startsWith(`${metric} `)) continue;
    if (!labels.every((l) => line.includes(l))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** The /metrics text of every running node. */
async function scrape(cluster: KmsCluster): Promise<string[]> {
  return await Promise.all(
    cluster.nodes.map(async (n) => {
      if (n.adminUrl === undefined) return '';
      const res = await fetch(`${n.adminUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
      return await res.text();
    }),
  );
}

/**
 * Where a signature's time goes on the nodes, between two scrapes: mean ms per request in the
 * leader's guard (decide → reply), its reserve transactions and its HSM signs, and how many
 * requests a follower forwarded.
 */
function stageMeans(before: string[], after: string[]) {
  const diff = (metric: string, labels: string[] = []) =>
    after.reduce(
      (n, text, i) => n + metricSum(text, metric, labels) - metricSum(before[i] ?? '', metric, labels),
      0,
    );
  const mean = (metric: string, labels: string[] = []) => {
    const count = diff(`${metric}_count`, labels);
    return count === 0 ? 0 : (diff(`${metric}_sum`, labels) / count) * 1000;
  };
  // The median as Prometheus' histogram_quantile estimates it (linear within the bucket).
  const median = (metric: string, labels: string[] = []) => {
    const total = diff(`${metric}_count`, labels);
    let below = 0;
    let lower = 0;
    for (const le of LATENCY_BUCKETS_S) {
      const upto = diff(`${metric}_bucket`, [...labels, `le="${le}"`]);
      if (upto >= total / 2 && upto > below)
        return (lower + ((total / 2 - below) / (upto - below)) * (le - lower)) * 1000;
      below = upto;
      lower = le;
    }
    return Number.NaN;
  };
  return {
    guardMs: mean('cometkms_sign_duration_seconds'),
    guardP50Ms: median('cometkms_sign_duration_seconds'),
    reserveMs: mean('cometkms_etcd_call_duration_seconds', ['op="reserve"']),
    reserveP50Ms: median('cometkms_etcd_call_duration_seconds', ['op="reserve"']),
    hsmMs: mean('cometkms_hsm_sign_duration_seconds'),
    hsmP50Ms: median('cometkms_hsm_sign_duration_seconds'),
    forwarded: diff('cometkms_forwards_total', ['result="ok"']),
  };
}

/** What group commit and leadership did between two scrapes of every node. */
function clusterCounters(before: string[], after: string[]) {
  const diff = (metric: string, labels: string[] = []) =>
    after.reduce(
      (n, text, i) => n + metricSum(text, metric, labels) - metricSum(before[i] ?? '', metric, labels),
      0,
    );
  return {
    reserveTxns: diff('cometkms_etcd_call_duration_seconds_count', ['op="reserve"']),
    signed: diff('cometkms_sign_requests_total', ['outcome="signed"']),
    leaderChanges: diff('cometkms_leader_changes_total'),
  };
}

/** Bare ed25519 signs on a fresh SoftHSM token in this process, in ms each. */
async function hsmFloor(): Promise<number[]> {
  const dir = await mkdtemp(join(tmpdir(), 'ckms-bench-floor-hsm-'));
  const savedConf = process.env.SOFTHSM2_CONF;
  try {
    const pin = randomPin();
    await initSoftHsmToken({ dir, label: 'floor', userPin: pin, soPin: randomPin() });
    const hsm = await openHsm({ module: SOFTHSM_MODULE, tokenLabel: 'floor' });
    const module = acquireModule(SOFTHSM_MODULE);
    try {
      await hsm.generateKey('ed', 'ed25519', pin);
      await hsm.openSigningSession(pin);
      const bare = bareSigner(module, 'floor', 'ed', 'ed25519');
      try {
        const msg = (i: number) => Buffer.from(`floor vote ${i} `.padEnd(110, '.'));
        await timeEach(50, (i) => bare.sign(msg(i)));
        return await timeEach(FLOOR_SAMPLES, (i) => bare.sign(msg(i)));
      } finally {
        bare.close();
      }
    } finally {
      releaseModule(module);
      await hsm.close();
    }
  } finally {
    if (savedConf === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = savedConf;
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Bare fenced transactions on the cluster's own etcd, under a prefix of their own with a leader
 * key bound to a lease: 3 leader-key compares + the state's mod revision, one put.
 */
async function txnFloor(endpoints: string[]): Promise<number[]> {
  const clients = createEtcdClients({ endpoints, callTimeoutMs: 5_000 });
  const port = new Etcd3Port(clients.client);
  const prefix = 'bench-floor/';
  try {
    const lease = await port.leaseGrant(60);
    const leaderKey = etcdKeys.leader(prefix);
    const put = await port.txn({
      compare: [],
      success: [{ op: 'put', key: leaderKey, value: Buffer.from('floor'), lease: lease.id }],
      failure: [],
    });
    const token = { leaseId: lease.id, createRevision: put.revision, leaderValue: 'floor' };
    const key = etcdKeys.state(prefix, 'floor');
    let rev = (
      await port.txn({
        compare: [],
        success: [{ op: 'put', key, value: encodeSignState(freshSignState()) }],
        failure: [],
      })
    ).revision;
    const one = async (i: number) => {
      const res = await port.txn({
        compare: [...fencingCompares(leaderKey, token), { key, target: 'mod', revision: rev }],
        success: [
          {
            op: 'put',
            key,
            value: encodeSignState({ ...freshSignState(BigInt(i + 1)), step: Step.Prevote }),
          },
        ],
        failure: [],
      });
      if (!res.succeeded) throw new Error('bench: the floor transaction failed');
      rev = res.revision;
    };
    await timeEach(50, one);
    const ms = await timeEach(FLOOR_SAMPLES, (i) => one(i + 50));
    await port.leaseRevoke(lease.id);
    return ms;
  } finally {
    clients.close();
  }
}

/**
 * The bare fenced transaction again, while a second chain of the same cluster signs sequentially
 * (`load`, a simulator already connected): the transaction's latency on this machine under the
 * load a signing chain puts on it. Every process of the cluster shares the same cores and disk
 * here, so what the transaction costs inside the signing path is compared with this too. Throws
 * if the load did not last until the last transaction.
 */
async function loadedTxnFloor(
  endpoints: string[],
  load: ValidatorSimulator,
): Promise<{ txn: number[]; loadSigned: number }> {
  const running = load.run();
  // A run that fails while the floor is timed is reported once it is awaited below, not as an
  // unhandled rejection that ends this process first.
  running.catch(() => undefined);
  // On a throw, benchSingleChain's cleanup closes the load simulator.
  await waitFor('the load chain signing', 30_000, () => load.summary().signed > 0);
  const signedBefore = load.summary().signed;
  const txn = await txnFloor(endpoints);
  if (load.summary().heightsCompleted >= LOAD_HEIGHTS) {
    throw new Error('bench: the load chain finished before the loaded floor did');
  }
  const loadSigned = load.summary().signed - signedBefore;
  await load.close();
  const summary = await running;
  if (summary.invalidSignatures > 0 || summary.doubleSigns > 0) {
    throw new Error(`bench: the load chain went wrong: ${JSON.stringify(summary)}`);
  }
  return { txn, loadSigned };
}

/** One chain, sequential requests over tcp, and its floor in the same run. */
export async function benchSingleChain(): Promise<BenchResult[]> {
  const sim = sequentialSimulator({
    listen: 'tcp://127.0.0.1:0',
    chainId: 'bench-floor-1',
    heights: SINGLE_HEIGHTS,
  });
  // Connected from the start but idle until the loaded floor.
  const load = sequentialSimulator({
    listen: 'tcp://127.0.0.1:0',
    chainId: 'bench-floor-load',
    heights: LOAD_HEIGHTS,
  });
  const addr = await sim.listen();
  const loadAddr = await load.listen();
  let cluster: KmsCluster | undefined;
  try {
    cluster = await startKmsCluster({
      chainId: 'bench-floor-1',
      protocol: 'v0.38',
      validators: [addr],
      moreChains: [{ id: 'bench-floor-load', validators: [loadAddr] }],
      keySeed: new Uint8Array(32).fill(13),
      unsafeNoFsync: false,
    });
    const leader = await cluster.leaderIndex();
    const kmsPids = cluster.nodes.map((n) => {
      if (n.proc === undefined) throw new Error(`node ${n.id} is not running`);
      return n.proc.pid;
    });
    const etcdPids = cluster.etcd.members.map((m) => m.pid);
    if (!(await load.waitForSigner(30_000))) throw new Error('bench: no signer connected to the load chain');
    const metricsBefore = await scrape(cluster);
    const pids = [...kmsPids, ...etcdPids, process.pid];
    const cpuBefore = await Promise.all(pids.map(cpuMs));
    const runStart = performance.now();
    const run = await sim.run();
    const runMs = performance.now() - runStart;
    const perRequest = (await Promise.all(pids.map(cpuMs))).map(
      (after, i) => (after - (cpuBefore[i] as number)) / (SINGLE_HEIGHTS * 3),
    );
    const cpu: CpuPerRequest = {
      kms: perRequest.slice(0, kmsPids.length),
      etcd: perRequest.slice(kmsPids.length, kmsPids.length + etcdPids.length),
      validator: perRequest.at(-1) as number,
    };
    const metricsAfter = await scrape(cluster);
    const stages = stageMeans(metricsBefore, metricsAfter);
    const leaderStages = stageBreakdown(
      parseStages(metricsBefore[leader] ?? ''),
      parseStages(metricsAfter[leader] ?? ''),
    );
    const pings = await timeEach(PINGS, () => sim.ping());
    await sim.close();
    const txn = await txnFloor(cluster.etcd.endpoints);
    const loaded = await loadedTxnFloor(cluster.etcd.endpoints, load);
    const hsm = await hsmFloor();
    const floor = percentile(txn, 0.5) + percentile(hsm, 0.5) + percentile(pings, 0.5);
    const floorNote = 'same run: bare fenced txn p50 + bare SoftHSM ed25519 sign p50 + ping p50';
    const note = `${SINGLE_HEIGHTS * 3} sequential requests over tcp, v0.38 without extensions, 3 etcd members with fsync`;
    return [
      { name: 'cluster_chains.single.sign.p50', unit: 'ms', value: r3(run.latencyMs.p50), note },
      {
        name: 'cluster_chains.single.sign.p99',
        unit: 'ms',
        value: r3(run.latencyMs.p99),
        note,
        goal: { max: 25 },
      },
      {
        name: 'cluster_chains.single.sign.prevote.p50',
        unit: 'ms',
        value: r3(run.latencyByTypeMs.prevote.p50),
        note: `the ${SINGLE_HEIGHTS} prevotes of the same run (one HSM signature each; a v0.38 non-nil precommit has two)`,
      },
      {
        name: 'cluster_chains.floor.fenced_txn.p50',
        unit: 'ms',
        value: r3(percentile(txn, 0.5)),
        note: `${FLOOR_SAMPLES} sequential, 4 compares + put, same etcd`,
      },
      {
        name: 'cluster_chains.floor.hsm_sign.p50',
        unit: 'ms',
        value: r3(percentile(hsm, 0.5)),
        note: `${FLOOR_SAMPLES} bare C_Sign, SoftHSM ed25519`,
      },
      {
        name: 'cluster_chains.floor.ping.p50',
        unit: 'ms',
        value: r3(percentile(pings, 0.5)),
        note: `${PINGS} privval pings over the validator connection`,
      },
      { name: 'cluster_chains.floor.p50', unit: 'ms', value: r3(floor), note: floorNote },
      {
        name: 'cluster_chains.single.guard.mean',
        unit: 'ms',
        value: r3(stages.guardMs),
        note: `leader's guard, decide → reply (metrics), of which reserve txn ${r3(stages.reserveMs)} ms and HSM sign + verify ${r3(stages.hsmMs)} ms; ${stages.forwarded} of ${SINGLE_HEIGHTS * 3} requests forwarded by a follower`,
      },
      {
        name: 'cluster_chains.single.guard.p50',
        unit: 'ms',
        value: r3(stages.guardP50Ms),
        note: `from the histogram buckets (linear within a bucket): reserve txn p50 ${r3(stages.reserveP50Ms)} ms, HSM sign + verify p50 ${r3(stages.hsmP50Ms)} ms`,
      },
      ...leaderStages.map(
        (s): BenchResult => ({
          name: `cluster_chains.single.stage.${s.stage}.p50`,
          unit: 'ms',
          value: r3(s.p50Ms),
          note: `the leader's cometkms_sign_stage_duration_seconds, mean ${r3(s.meanMs)} ms over ${s.count}; interpolated within its buckets, measured run only`,
        }),
      ),
      {
        name: 'cluster_chains.single.ratio.p50',
        unit: 'x',
        value: r2(run.latencyMs.p50 / floor),
        note: 'single-chain p50 of all requests / floor, same run',
      },
      {
        // The floor holds one signature: the goal compares it with the requests that need one.
        name: 'cluster_chains.single.prevote_ratio.p50',
        unit: 'x',
        value: r2(run.latencyByTypeMs.prevote.p50 / floor),
        note: 'prevote p50 / floor, same run',
        goal: { max: 1.5 },
      },
      {
        name: 'cluster_chains.loaded_floor.fenced_txn.p50',
        unit: 'ms',
        value: r3(percentile(loaded.txn, 0.5)),
        note: `the same ${FLOOR_SAMPLES} bare fenced txns while a second chain of the cluster signed sequentially (${loaded.loadSigned} of its requests answered meanwhile)`,
      },
      {
        // Means: the leader's side comes from its histogram, whose buckets are too coarse (1, 2.5,
        // 5 ms) for a median to compare with.
        name: 'cluster_chains.single.reserve_txn_vs_loaded_floor.mean',
        unit: 'x',
        value: r2(stages.reserveMs / mean(loaded.txn)),
        note: `the leader's reserve txn mean in the measured run (${r3(stages.reserveMs)} ms) / the loaded floor's fenced txn mean (${r3(mean(loaded.txn))} ms); reference, no goal`,
      },
      ...cpuRows(cpu, leader, runMs),
    ];
  } finally {
    await sim.close();
    await load.close();
    await cluster?.cleanup();
  }
}

/** CPU time per request of the measured single-chain run, in ms, by process. */
interface CpuPerRequest {
  /** the KMS nodes, in the cluster's order */
  kms: number[];
  /** the etcd members */
  etcd: number[];
  /** this process: the simulated validator */
  validator: number;
}

/** Where the machine's CPU went during the measured single-chain run of `runMs`, per request. */
function cpuRows(cpu: CpuPerRequest, leader: number, runMs: number): BenchResult[] {
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  const followers = cpu.kms.filter((_, i) => i !== leader);
  const each = (xs: number[]): string => xs.map((x) => r2(x)).join(' + ');
  const how =
    'CPU time (user + system, all threads, /proc/<pid>/stat) during the measured run / its requests';
  const total = sum(cpu.kms) + sum(cpu.etcd) + cpu.validator;
  return [
    {
      name: 'cluster_chains.single.cpu_per_request.leader',
      unit: 'ms',
      value: r2(cpu.kms[leader] as number),
      note: how,
    },
    {
      name: 'cluster_chains.single.cpu_per_request.followers',
      unit: 'ms',
      value: r2(sum(followers)),
      note: `both KMS followers together (${each(followers)} ms), the same way`,
    },
    {
      name: 'cluster_chains.single.cpu_per_request.etcd',
      unit: 'ms',
      value: r2(sum(cpu.etcd)),
      note: `the ${cpu.etcd.length} etcd members together (${each(cpu.etcd)} ms), the same way`,
    },
    {
      name: 'cluster_chains.single.cpu_per_request.validator',
      unit: 'ms',
      value: r2(cpu.validator),
      note: 'the bench process (the simulated validator, over SecretConnection), the same way',
    },
    {
      name: 'cluster_chains.single.cores_busy',
      unit: 'cores',
      value: r2((total * SINGLE_HEIGHTS * 3) / runMs),
      note: `all of the above during the ${Math.round(runMs)} ms measured run, on a machine of ${availableParallelism()} cores`,
    },
  ];
}

/** `chains` chains at 1 s blocks with extensions on one cluster, at independent phases or in lockstep. */
export async function benchChains(
  chains: number,
  phases: 'independent' | 'lockstep',
): Promise<BenchResult[]> {
  const sockDir = await mkdtemp(join(tmpdir(), `ckms-bench-chains-${chains}-`));
  const ids = Array.from({ length: chains }, (_, i) => ({
    id: `bench-chains-${i + 1}`,
    sock: join(sockDir, `c${i + 1}.sock`),
  }));
  const heights = WARMUP_S + MEASURE_S + 120;
  const sims = ids.map((c, i) =>
    chainSimulator({
      listen: `unix://${c.sock}`,
      chainId: c.id,
      blockTimeMs: BLOCK_TIME_MS,
      heights,
      seed: i + 1,
      connectTimeoutMs: 120_000,
    }),
  );
  let cluster: KmsCluster | undefined;
  try {
    for (const sim of sims) await sim.listen();
    const [first, ...more] = ids;
    if (first === undefined) throw new Error('no chains');
    cluster = await startKmsCluster({
      chainId: first.id,
      protocol: 'v0.38',
      validators: [`unix://${first.sock}`],
      moreChains: more.map((c) => ({ id: c.id, validators: [`unix://${c.sock}`] })),
      keySeed: new Uint8Array(32).fill(7),
      unsafeNoFsync: false,
      leaseTtlS: 1,
      stateInit: 'direct',
    });
    await cluster.leaderIndex();
    const settled = Promise.allSettled(runChains(sims, BLOCK_TIME_MS, phases));
    await waitFor('every chain signing', 120_000, () => sims.every((s) => s.summary().heightsCompleted > 0));
    await sleep(WARMUP_S * 1000);

    const before = sims.map((s) => s.summary());
    for (const sim of sims) sim.restartLatencies();
    const metricsBefore = await scrape(cluster);
    const t0 = performance.now();
    await sleep(MEASURE_S * 1000);
    const after = sims.map((s) => s.summary());
    const metricsAfter = await scrape(cluster);
    const windowS = (performance.now() - t0) / 1000;
    for (const sim of sims) await sim.close();
    const failed = (await settled).filter((r) => r.status === 'rejected');
    if (failed.length > 0) {
      throw new Error(
        `${failed.length} simulations failed: ${String((failed[0] as PromiseRejectedResult).reason)}`,
      );
    }
    const final: SimulationSummary[] = sims.map((s) => s.summary());
    const expected = windowS / (BLOCK_TIME_MS / 1000);
    const done = after.map((a, i) => a.heightsCompleted - (before[i] as SimulationSummary).heightsCompleted);
    const behind = done.filter((h) => h < BEHIND_SHARE * expected).length;
    const signed = after.reduce((n, a, i) => n + a.signed - (before[i] as SimulationSummary).signed, 0);
    const sum = (f: (s: SimulationSummary) => number): number => final.reduce((n, s) => n + f(s), 0);
    const counters = clusterCounters(metricsBefore, metricsAfter);
    const p50s = after.map((s) => s.latencyMs.p50);
    const p99s = after.map((s) => s.latencyMs.p99);
    const name = (m: string) => `cluster_chains.c${chains}${phases === 'lockstep' ? '_lockstep' : ''}.${m}`;
    const phasing =
      phases === 'lockstep'
        ? 'all chains in lockstep (the worst case: every chain asks at the same moment)'
        : 'chains at independent phases';
    const setup = `${chains} chains, v0.38 + extensions, ${BLOCK_TIME_MS} ms blocks, ${phasing}, 3 etcd members with fsync`;
    const latencyNote = `over the ${Math.round(windowS)} s window after a ${WARMUP_S} s warm-up, ${setup}`;
    return [
      {
        name: name('chains_behind'),
        unit: 'chains',
        value: behind,
        note: `chains completing < ${BEHIND_SHARE * 100} % of the ${Math.floor(expected)} heights of a ${Math.round(windowS)} s window`,
        ...(phases === 'independent' ? { goal: { max: 0 } } : {}),
      },
      {
        name: name('heights.min'),
        unit: 'heights',
        value: Math.min(...done),
        note: 'fewest heights one chain completed in the window',
      },
      {
        name: name('sign.p50'),
        unit: 'ms',
        value: r3(percentile(p50s, 0.5)),
        note: `median of the chains' p50, ${latencyNote}`,
      },
      {
        name: name('sign.p99.median'),
        unit: 'ms',
        value: r3(percentile(p99s, 0.5)),
        note: `median of the chains' p99`,
      },
      { name: name('sign.p99.max'), unit: 'ms', value: r3(Math.max(...p99s)), note: "worst chain's p99" },
      {
        name: name('signatures_per_s'),
        unit: '/s',
        value: Math.round((signed / windowS) * 10) / 10,
        note: 'sign requests answered in the window, all chains',
      },
      {
        name: name('reservations_per_txn'),
        unit: 'x',
        value: counters.reserveTxns === 0 ? 0 : r2(counters.signed / counters.reserveTxns),
        note: `signed requests / reserve transactions in the window, from /metrics (group commit; ${counters.reserveTxns} transactions)`,
      },
      {
        name: name('leader_changes'),
        unit: 'changes',
        value: counters.leaderChanges,
        note: 'leader changes in the window, all nodes (goal 0)',
      },
      {
        name: name('double_signs'),
        unit: 'signs',
        value: sum((s) => s.doubleSigns),
        note: 'conflicting signatures at one HRS, whole run (must be 0)',
      },
      {
        name: name('refused_invalid_unanswered'),
        unit: 'requests',
        value: sum((s) => s.refused + s.invalidSignatures + s.unanswered),
        note: `whole run (goal 0): refused ${sum((s) => s.refused)}, invalid ${sum((s) => s.invalidSignatures)}, unanswered ${sum((s) => s.unanswered)}`,
      },
    ];
  } finally {
    for (const sim of sims) await sim.close();
    await cluster?.cleanup();
    await rm(sockDir, { recursive: true, force: true });
  }
}

/**
 * Every part: the single chain with its floor, 100 chains in lockstep (many-chains.bench.ts runs
 * 100 at independent phases), then 300 chains at independent phases.
 */
export async function benchClusterChains(
  parts: string[] = ['single', '100-lockstep', '300'],
): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const part of parts) {
    const chains = /^([1-9][0-9]*)(-lockstep)?$/.exec(part);
    if (part === 'single') results.push(...(await benchSingleChain()));
    else if (chains !== null) {
      const phases = chains[2] === undefined ? 'independent' : 'lockstep';
      results.push(...(await benchChains(Number(chains[1]), phases)));
    } else throw new Error(`unknown part ${part}: single, N or N-lockstep (N chains)`);
  }
  return results;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const parts = process.argv.slice(2);
  for (const r of await benchClusterChains(parts.length > 0 ? parts : undefined)) {
    console.log(
      `${r.name.padEnd(44)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`,
    );
  }
  process.exit(0);
}
