/**
 * Real etcd clusters for integration, chaos and bench runs: a thin wrapper over the launcher in
 * src/cluster/etcd-launcher.ts (shared with `cometkms demo`), plus cluster-layer test nodes.
 */
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
