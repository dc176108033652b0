/**
 * Real etcd clusters for integration, chaos and bench runs: a thin wrapper over the launcher in
 * src/cluster/etcd-launcher.ts (shared with `cometkms demo`), plus cluster-layer test nodes.
 */
import { after, before } from 'node:test';
import { createEtcdClients, type EtcdClients } from '../../src/cluster/etcd-client.ts';
import { type EtcdCluster, launchEtcdCluster } from '../../src/cluster/etcd-launcher.ts';
import { Leadership } from '../../src/cluster/leadership.ts';
import { EtcdSignStateStore } from '../../src/store/etcd.ts';

export type { EtcdCluster, EtcdMember } from '../../src/cluster/etcd-launcher.ts';

export interface EtcdClusterOptions {
  /** default 3 */
  members?: number;
  /**
   * Tests only: skip the cost of fsync. etcd 3.4 has no `--unsafe-no-fsync`; there the data dirs
   * go to /dev/shm (tmpfs), where fsync costs nothing. Never for benchmarks of the real thing.
   */
  unsafeNoFsync?: boolean;
}

/** Starts a fresh etcd cluster (heartbeat 50 ms, election 500 ms, so a 1 s lease TTL is honoured). */
export async function startEtcdCluster(opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  return await launchEtcdCluster({
    members: opts.members ?? 3,
    unsafeNoFsync: opts.unsafeNoFsync === true,
    onUnexpectedExit: (name, code, tail) => process.stderr.write(`etcd ${name} exited ${code}: ${tail}\n`),
  });
}

/** Resolves once `cond()` is true; rejects after `ms` (every wait in a test is bounded). */
export async function waitUntil(
  what: string,
  ms: number,
  cond: () => boolean | Promise<boolean>,
): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** One CometKMS node's cluster layer, wired as `cometkms start` would (1 s lease, 300 ms calls). */
export interface TestNode {
  nodeId: string;
  clients: EtcdClients;
  leadership: Leadership;
  store: EtcdSignStateStore;
  /** stops leadership (revoking the lease unless `revoke: false`) and closes the clients */
  stop(opts?: { revoke?: boolean }): Promise<void>;
}

/** Builds (but does not start) a node on `cluster` under `prefix`. */
export function testNode(cluster: EtcdCluster, prefix: string, nodeId: string): TestNode {
  const clients = createEtcdClients({ endpoints: cluster.endpoints, callTimeoutMs: 300 });
  const leadership = new Leadership({
    client: clients.client,
    members: clients.members,
    prefix,
    nodeId,
    advertise: `${nodeId}.test:26790`,
    leaseTtlS: 1,
  });
  const store = new EtcdSignStateStore({ client: clients.client, prefix, leadership });
  return {
    nodeId,
    clients,
    leadership,
    store,
    async stop(opts) {
      try {
        await leadership.stop(opts);
        await store.close();
      } finally {
        clients.close();
      }
    },
  };
}

/** One etcd cluster for a whole test file, and the cluster-layer nodes its tests start. */
export interface EtcdTestBed {
  /** the running cluster (available once the file's `before` hook ran) */
  readonly cluster: EtcdCluster;
  /** a key prefix no other test of the file uses, so tests do not see each other's keys */
  nextPrefix(): string;
  /** builds a node under `prefix`; it is stopped (lease left to expire) after the file */
  node(prefix: string, nodeId: string): TestNode;
  /** starts a lone node `kms-1` under `prefix` and waits until it leads */
  leaderNode(prefix: string): Promise<TestNode>;
}

/**
 * Registers `before`/`after` hooks that start an etcd cluster for the calling test file and,
 * at the end, stop every node the tests built and then the cluster, whatever failed.
 */
export function useEtcdTestBed(label: string, opts: EtcdClusterOptions = {}): EtcdTestBed {
  let cluster: EtcdCluster | undefined;
  let prefixes = 0;
  const started: TestNode[] = [];
  before(async () => {
    cluster = await startEtcdCluster(opts);
  });
  after(async () => {
    try {
      await Promise.all(started.map((n) => n.stop({ revoke: false })));
    } finally {
      await cluster?.stop();
    }
  });
  const bed: EtcdTestBed = {
    get cluster(): EtcdCluster {
      if (cluster === undefined) throw new Error('the etcd test bed is used before its before() hook ran');
      return cluster;
    },
    nextPrefix: () => `${label}-${++prefixes}/`,
    node(prefix, nodeId) {
      const n = testNode(bed.cluster, prefix, nodeId);
      started.push(n);
      return n;
    },
    async leaderNode(prefix) {
      const n = bed.node(prefix, 'kms-1');
      await n.leadership.start();
      await waitUntil('leadership', 5_000, () => n.leadership.role === 'leader');
      return n;
    },
  };
  return bed;
}
