/**
 * Real etcd clusters for integration, chaos and bench runs: a thin wrapper over the launcher in
 * src/cluster/etcd-launcher.ts (shared with `cometkms demo`), plus cluster-layer test nodes.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import type { Etcd3 } from 'etcd3';
import { createEtcdClients, type EtcdClients } from '../../src/cluster/etcd-client.ts';
import { type EtcdCluster, launchEtcdCluster } from '../../src/cluster/etcd-launcher.ts';
import { Leadership } from '../../src/cluster/leadership.ts';
import { EtcdSignStateStore, swapEtcdSignState } from '../../src/store/etcd.ts';
import { HighWaterMarks } from '../../src/store/high-water.ts';
import { STATE_DIR } from '../../src/store/paths.ts';
import { freshSignState } from '../../src/store/types.ts';

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

/**
 * What `cometkms state init --height H` does in cluster mode: creates the state key of `chainId`
 * under `prefix` (H/0/0, no sign bytes) if it does not exist. Resolves whether it was created.
 */
export async function initEtcdChainState(
  client: Etcd3,
  prefix: string,
  chainId: string,
  height = 0n,
): Promise<boolean> {
  return await swapEtcdSignState(client, prefix, chainId, undefined, freshSignState(height));
}

/** One CometKMS node's cluster layer, wired as `cometkms start` would (1 s lease, 300 ms calls). */
export interface TestNode {
  nodeId: string;
  clients: EtcdClients;
  leadership: Leadership;
  store: EtcdSignStateStore;
  /** the node's temporary home (its high-water marks live in `<home>/state/`) */
  home: string;
  marks: HighWaterMarks;
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
  const home = mkdtempSync(join(tmpdir(), `cometkms-${nodeId}-`));
  mkdirSync(join(home, STATE_DIR));
  const marks = new HighWaterMarks(home);
  const store = new EtcdSignStateStore({ client: clients.client, prefix, leadership, marks });
  return {
    nodeId,
    clients,
    leadership,
    store,
    home,
    marks,
    async stop(opts) {
      try {
        await leadership.stop(opts);
        await store.close();
      } finally {
        clients.close();
        rmSync(home, { recursive: true, force: true });
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
