import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEtcdClients, type EtcdClients } from '../../src/cluster/etcd-client.ts';
import { Leadership } from '../../src/cluster/leadership.ts';
import { EtcdSignStateStore } from '../../src/store/etcd.ts';

/** One etcd member of a test cluster. `pid` changes on restart. */
export interface EtcdMember {
  name: string;
  pid: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
}

/** A real etcd cluster of local processes on 127.0.0.1. */
export interface EtcdCluster {
  endpoints: string[];
  members: EtcdMember[];
  /** sends `signal` (default SIGKILL) to member i and waits until it has exited */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** starts member i again on its data dir and waits until it answers /health */
  restart(i: number): Promise<void>;
  /** freezes member i (SIGSTOP) */
  pause(i: number): void;
  /** thaws member i (SIGCONT) */
  resume(i: number): void;
  /** index of the member that is the Raft leader (waits up to 10 s for one) */
  raftLeaderIndex(): Promise<number>;
  /** kills every member (by PID) and removes the data dirs */
  stop(): Promise<void>;
}

export interface EtcdClusterOptions {
  /** default 3 */
  members?: number;
  /**
   * Tests only: skip the cost of fsync. etcd 3.4 has no `--unsafe-no-fsync`; there the data dirs
   * go to /dev/shm (tmpfs), where fsync costs nothing. Never for benchmarks of the real thing.
   */
  unsafeNoFsync?: boolean;
}

const ETCD = '/usr/bin/etcd';
const HEALTHY_WITHIN_MS = 20_000;

/** Clusters not yet stopped; killed synchronously if the test process exits early. */
const live = new Set<{ procs: (ChildProcess | undefined)[]; base: string }>();
process.once('exit', () => {
  for (const c of live) {
    for (const p of c.procs) {
      if (p?.pid !== undefined && p.exitCode === null && p.signalCode === null) {
        try {
          process.kill(p.pid, 'SIGCONT');
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    rmSync(c.base, { recursive: true, force: true });
  }
});

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

let noFsyncFlag: boolean | undefined;
function supportsNoFsyncFlag(): boolean {
  if (noFsyncFlag === undefined) {
    const help = spawnSync(ETCD, ['--help'], { encoding: 'utf8', timeout: 5_000 });
    noFsyncFlag = `${help.stdout}${help.stderr}`.includes('--unsafe-no-fsync');
  }
  return noFsyncFlag;
}

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(500) });
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

async function waitFor(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => p.once('exit', () => resolve()));
}

/** Starts a fresh etcd cluster (heartbeat 50 ms, election 500 ms, so a 1 s lease TTL is honoured). */
export async function startEtcdCluster(opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 3;
  const noFsyncByFlag = opts.unsafeNoFsync === true && supportsNoFsyncFlag();
  const onTmpfs = opts.unsafeNoFsync === true && !noFsyncByFlag;
  const base = mkdtempSync(join(onTmpfs ? '/dev/shm' : tmpdir(), 'cometkms-etcd-'));
  const procs: (ChildProcess | undefined)[] = [];
  const entry = { procs, base };
  live.add(entry);

  const members: EtcdMember[] = [];
  for (let i = 0; i < n; i++) {
    const [c, p] = [await freePort(), await freePort()];
    members.push({
      name: `m${i}`,
      pid: 0,
      clientUrl: `http://127.0.0.1:${c}`,
      peerUrl: `http://127.0.0.1:${p}`,
      dataDir: join(base, `m${i}`),
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const token = `cometkms-test-${process.pid}-${Date.now()}`;

  const spawnMember = (i: number): void => {
    const m = members[i]!;
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=${m.clientUrl}`,
      `--advertise-client-urls=${m.clientUrl}`,
      `--listen-peer-urls=${m.peerUrl}`,
      `--initial-advertise-peer-urls=${m.peerUrl}`,
      `--initial-cluster=${initialCluster}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=${token}`,
      '--heartbeat-interval=50',
      '--election-timeout=500',
      '--logger=zap',
      '--log-level=error',
      ...(noFsyncByFlag ? ['--unsafe-no-fsync'] : []),
    ];
    const proc = spawn(ETCD, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    // keep the last lines of stderr for error messages
    let tail = '';
    proc.stderr?.on('data', (d: Buffer) => {
      tail = (tail + d.toString()).slice(-2000);
    });
    proc.once('exit', (code, sig) => {
      if (code !== 0 && code !== null && sig === null)
        process.stderr.write(`etcd ${m.name} exited ${code}: ${tail}\n`);
    });
    procs[i] = proc;
    m.pid = proc.pid ?? 0;
  };

  const kill = async (i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const p = procs[i];
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const done = exited(p);
    process.kill(p.pid!, 'SIGCONT');
    process.kill(p.pid!, signal);
    await done;
  };

  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.clientUrl),
    members,
    kill,
    async restart(i) {
      await kill(i);
      spawnMember(i);
      await waitFor(`member ${i} healthy`, HEALTHY_WITHIN_MS, () => healthy(members[i]!.clientUrl));
    },
    pause(i) {
      process.kill(members[i]!.pid, 'SIGSTOP');
    },
    resume(i) {
      process.kill(members[i]!.pid, 'SIGCONT');
    },
    async raftLeaderIndex() {
      let found = -1;
      await waitFor('a Raft leader', 10_000, async () => {
        for (let i = 0; i < n; i++) {
          try {
            const res = await fetch(`${members[i]!.clientUrl}/v3/maintenance/status`, {
              method: 'POST',
              body: '{}',
              signal: AbortSignal.timeout(300),
            });
            const st = (await res.json()) as { header?: { member_id?: string }; leader?: string };
            if (st.leader !== undefined && st.leader !== '0' && st.leader === st.header?.member_id) {
              found = i;
              return true;
            }
          } catch {
            // dead or frozen member: ask the next
          }
        }
        return false;
      });
      return found;
    },
    async stop() {
      try {
        await Promise.all(members.map((_, i) => kill(i)));
      } finally {
        rmSync(base, { recursive: true, force: true });
        live.delete(entry);
      }
    },
  };

  try {
    for (let i = 0; i < n; i++) spawnMember(i);
    await waitFor('all members healthy', HEALTHY_WITHIN_MS, async () =>
      (await Promise.all(members.map((m) => healthy(m.clientUrl)))).every(Boolean),
    );
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Resolves once `cond()` is true; rejects after `ms` (every wait in a test is bounded). */
export async function waitUntil(
  what: string,
  ms: number,
  cond: () => boolean | Promise<boolean>,
): Promise<void> {
  await waitFor(what, ms, async () => await cond());
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
