import { pathToFileURL } from 'node:url';
import { Step } from '../src/cometbft/types.ts';
import { Etcd3Port } from '../src/ports/etcd3.ts';
import { encodeSignState, etcdKeys, fencingCompares } from '../src/store/etcd.ts';
import type { SignState } from '../src/store/types.ts';
import {
  type EtcdCluster,
  initEtcdChainState,
  startEtcdCluster,
  type TestNode,
  testNode,
  waitUntil,
} from '../test/helpers/etcd-cluster.ts';
import type { BenchResult } from './types.ts';

const CHAIN = 'bench-chain';
const SAMPLES = 1000;
const HANDOVERS = 9;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function median(xs: number[]): number {
  return percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
}

function latencies(name: string, ms: number[], note: string): BenchResult[] {
  const s = [...ms].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return [
    { name: `${name}.p50`, unit: 'ms', value: r(percentile(s, 50)), note },
    { name: `${name}.p99`, unit: 'ms', value: r(percentile(s, 99)), note },
  ];
}

function vote(height: bigint): SignState {
  return {
    height,
    round: 0,
    step: Step.Prevote,
    signBytes: new Uint8Array(Buffer.from(`bench-vote-${height}`.padEnd(120, '.'))),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  };
}

/** Starts three nodes under a fresh prefix and waits for one agreed leader. */
async function electedTrio(
  cluster: EtcdCluster,
  prefix: string,
): Promise<{ nodes: TestNode[]; leader: TestNode }> {
  const nodes = ['kms-1', 'kms-2', 'kms-3'].map((id) => testNode(cluster, prefix, id));
  await Promise.all(nodes.map((n) => n.leadership.start()));
  await waitUntil('an agreed leader', 10_000, () => {
    const l = nodes.filter((n) => n.leadership.role === 'leader');
    return l.length === 1 && nodes.every((n) => n.leadership.leader?.nodeId === l[0]!.nodeId);
  });
  return { nodes, leader: nodes.find((n) => n.leadership.role === 'leader')! };
}

/**
 * Time from `act()` (which removes the leader) until another node reports it leads. With
 * `randomPhase`, first waits 0–500 ms: a crash comes at any moment relative to etcd's 500 ms
 * lease-expiry tick and to our keepalive, and back-to-back runs would otherwise share one phase.
 */
async function handover(
  cluster: EtcdCluster,
  prefix: string,
  act: (leader: TestNode) => Promise<void>,
  randomPhase = false,
): Promise<number> {
  const { nodes, leader } = await electedTrio(cluster, prefix);
  let timer: NodeJS.Timeout | undefined;
  try {
    const others = nodes.filter((n) => n !== leader);
    const won = Promise.race(
      others.map((n) => new Promise<number>((r) => n.leadership.once('leader', () => r(performance.now())))),
    );
    const limit = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error('no new leader within 10 s')), 10_000);
    });
    if (randomPhase) await new Promise((r) => setTimeout(r, Math.random() * 500));
    const t0 = performance.now();
    await act(leader);
    return (await Promise.race([won, limit])) - t0;
  } finally {
    clearTimeout(timer);
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

/**
 * etcd numbers on a real 3-member cluster with fsync ON (data dirs on disk): bare fenced
 * transaction, EtcdSignStateStore.reserve, graceful (resign / revoke) handover, crash failover.
 */
export async function benchEtcd(): Promise<BenchResult[]> {
  const cluster = await startEtcdCluster({ members: 3 });
  const results: BenchResult[] = [];
  try {
    // 1. bare fenced transaction: the three leader-key compares + state mod revision → put
    {
      const { nodes, leader } = await electedTrio(cluster, 'bench-txn/');
      try {
        const client = new Etcd3Port(leader.clients.client);
        const token = leader.leadership.token!;
        const leaderKey = etcdKeys.leader('bench-txn/');
        const stateKey = etcdKeys.state('bench-txn/', CHAIN);
        let rev = (
          await leader.clients.client.kv.put({ key: Buffer.from(stateKey), value: encodeSignState(vote(0n)) })
        ).header.revision;
        const ms: number[] = [];
        for (let i = 1; i <= SAMPLES; i++) {
          const t0 = performance.now();
          const res = await client.txn({
            compare: [...fencingCompares(leaderKey, token), { key: stateKey, target: 'mod', revision: rev }],
            success: [{ op: 'put', key: stateKey, value: encodeSignState(vote(BigInt(i))) }],
            failure: [],
          });
          ms.push(performance.now() - t0);
          if (!res.succeeded) throw new Error('bench: fenced transaction failed');
          rev = res.revision;
        }
        results.push(...latencies('etcd.fenced_txn', ms, `${SAMPLES} sequential, 3 members, fsync on`));
      } finally {
        await Promise.all(nodes.map((n) => n.stop()));
      }
    }
    // 2. the store's reservation (one round trip on the hot path)
    {
      const { nodes, leader } = await electedTrio(cluster, 'bench-store/');
      try {
        await initEtcdChainState(leader.clients.client, 'bench-store/', CHAIN);
        let cur = await leader.store.load(CHAIN);
        if (cur === undefined) throw new Error('bench: no chain state');
        const ms: number[] = [];
        for (let i = 1; i <= SAMPLES; i++) {
          const next = vote(BigInt(i));
          const t0 = performance.now();
          const res = await leader.store.reserve(CHAIN, cur, next);
          ms.push(performance.now() - t0);
          if (!res.ok) throw new Error('bench: reservation failed');
          cur = next;
        }
        results.push(...latencies('etcd.store_reserve', ms, `${SAMPLES} sequential, 3 members, fsync on`));
      } finally {
        await Promise.all(nodes.map((n) => n.stop()));
      }
    }
    // 3. handovers and failover, each the median of HANDOVERS runs
    const resign: number[] = [];
    const revoke: number[] = [];
    const crash: number[] = [];
    for (let i = 0; i < HANDOVERS; i++) {
      resign.push(await handover(cluster, `bench-resign-${i}/`, (l) => l.leadership.resign()));
      revoke.push(await handover(cluster, `bench-revoke-${i}/`, (l) => l.leadership.stop()));
      crash.push(
        await handover(cluster, `bench-crash-${i}/`, (l) => l.leadership.stop({ revoke: false }), true),
      );
    }
    const r1 = (x: number) => Math.round(x * 10) / 10;
    results.push(
      { name: 'etcd.handover_resign', unit: 'ms', value: r1(median(resign)), note: `median of ${HANDOVERS}` },
      {
        name: 'etcd.handover_lease_revoke',
        unit: 'ms',
        value: r1(median(revoke)),
        note: `median of ${HANDOVERS}`,
      },
      {
        name: 'etcd.crash_failover',
        unit: 'ms',
        value: r1(median(crash)),
        note: `median of ${HANDOVERS}; lease TTL 1 s; keepalives stopped → new leader`,
      },
    );
  } finally {
    await cluster.stop();
  }
  return results;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchEtcd()) {
    console.log(
      `${r.name.padEnd(32)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`,
    );
  }
  // grpc channels of stopped clients may linger; the numbers are printed
  process.exit(0);
}
