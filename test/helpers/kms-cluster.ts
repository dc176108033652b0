/**
 * A real CometKMS cluster for chaos tests and benchmarks: a 3-member etcd cluster, TLS material
 * from deploy/tls/make-certs.sh, and N `cometkms start` processes, each with its own SoftHSM
 * token holding the SAME validator key (imported from one priv_validator_key.json with
 * `cometkms keys import`, as an operator migrating a validator would). Every process is tracked
 * by PID (kms-process.ts, etcd-cluster.ts) and killed on cleanup.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeStatus } from '../../src/admin/types.ts';
import { createEtcdClients } from '../../src/cluster/etcd-client.ts';
import { freeLoopbackPort } from '../../src/cluster/free-port.ts';
import { formatPrivValidatorKey } from '../../src/cometbft/privval-files.ts';
import type { ProtocolVersion } from '../../src/cometbft/types.ts';
import { CONFIG_DEFAULTS } from '../../src/config/load.ts';
import { makeTestCerts, type TestCerts } from './certs.ts';
import { type EtcdCluster, initEtcdChainState, startEtcdCluster } from './etcd-cluster.ts';
import { KmsHome, type KmsProcess, killAllKms, nodeStatus, runCli } from './kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from './softhsm.ts';

/** Options of {@link startKmsCluster}. */
export interface KmsClusterOptions {
  chainId: string;
  protocol: ProtocolVersion;
  /** validator addresses every node dials (the simulators' listen addresses) */
  validators: string[];
  /** the ed25519 seed of the shared validator key */
  keySeed: Uint8Array;
  /** default 3 */
  nodes?: number;
  /** tmpfs / --unsafe-no-fsync etcd (tests only; benchmarks keep fsync) */
  unsafeNoFsync?: boolean;
  /** default 1 */
  leaseTtlS?: number;
  /** further chains after `chainId`, each signed with the same key under the same protocol */
  moreChains?: Array<{ id: string; validators: string[] }>;
  /**
   * how the chains' states are created: `cli` (default) runs `cometkms state init` per chain, as
   * an operator would; `direct` does the same create-if-absent transaction from this process
   * (hundreds of chains without hundreds of CLI processes)
   */
  stateInit?: 'cli' | 'direct';
  /** extra environment of every `cometkms start` (e.g. the NODE_OPTIONS a deployment sets) */
  nodeEnv?: Record<string, string>;
}

/** One KMS node of the cluster; `proc` is replaced on every (re)start. */
export interface ClusterKmsNode {
  id: string;
  home: KmsHome;
  token: SoftHsmToken;
  forwardPort: number;
  proc: KmsProcess | undefined;
  /** the admin URL of the running process */
  adminUrl: string | undefined;
  paused: boolean;
}

/** A running cluster. */
export interface KmsCluster {
  etcd: EtcdCluster;
  nodes: ClusterKmsNode[];
  /** starts node i (a fresh process on its home) and waits for its "ready" line */
  start(i: number): Promise<void>;
  /** sends `signal` to node i's process (SIGKILL / SIGTERM wait for the exit) */
  signal(i: number, signal: NodeJS.Signals): Promise<void>;
  /** SIGSTOP / SIGCONT node i (a paused node is skipped by `status`) */
  pause(i: number): void;
  resume(i: number): void;
  /** /status of node i; undefined if it is not running, paused, or does not answer */
  status(i: number): Promise<NodeStatus | undefined>;
  /** index of the node whose /status says it leads (waits up to `ms`) */
  leaderIndex(ms?: number): Promise<number>;
  /** kills every process (by PID) and removes every temp dir */
  cleanup(): Promise<void>;
}

const KEY_LABEL = 'validator-key';

/** Bounded wait on an async condition. */
export async function waitFor(
  what: string,
  ms: number,
  cond: () => Promise<boolean> | boolean,
): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts etcd and N KMS nodes sharing one imported key; resolves once every node is ready. */
export async function startKmsCluster(opts: KmsClusterOptions): Promise<KmsCluster> {
  const n = opts.nodes ?? 3;
  const ids = Array.from({ length: n }, (_, i) => `kms-${i + 1}`);
  const dir = await mkdtemp(join(tmpdir(), 'cometkms-cluster-'));
  const tokens: SoftHsmToken[] = [];
  const homes: KmsHome[] = [];
  let certs: TestCerts | undefined;
  let etcd: EtcdCluster | undefined;
  const cleanup = async (): Promise<void> => {
    await killAllKms();
    await etcd?.stop();
    for (const h of homes) await h.cleanup();
    for (const t of tokens) await t.cleanup();
    await certs?.cleanup();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    etcd = await startEtcdCluster({ members: 3, unsafeNoFsync: opts.unsafeNoFsync ?? true });
    certs = await makeTestCerts('cometkms chaos cluster', ids);
    const keyFile = join(dir, 'priv_validator_key.json');
    await writeFile(keyFile, formatPrivValidatorKey('ed25519', opts.keySeed), { mode: 0o600 });
    const nodes: ClusterKmsNode[] = [];
    for (const id of ids) {
      const token = await createSoftHsmToken({ label: `cometkms-${id}` });
      tokens.push(token);
      const imported = await runCli(
        [
          'keys',
          'import',
          '--from',
          keyFile,
          '--label',
          KEY_LABEL,
          '--module',
          token.modulePath,
          '--token-label',
          token.label,
          '--pin-file',
          token.pinFile,
          '--profile',
          'softhsm2',
        ],
        { ...process.env, ...token.env },
      );
      if (imported.code !== 0) throw new Error(`keys import for ${id} failed: ${imported.stderr}`);
      const forwardPort = await freeLoopbackPort();
      const f = certs.files(id);
      const str = JSON.stringify;
      const home = await KmsHome.create({
        token,
        nodeId: id,
        chains: [{ id: opts.chainId, validators: opts.validators }, ...(opts.moreChains ?? [])].map((c) => ({
          id: c.id,
          keyLabel: KEY_LABEL,
          keyType: 'ed25519' as const,
          protocol: opts.protocol,
          validators: c.validators,
        })),
        extraToml:
          '\n[cluster]\n' +
          `etcd_endpoints = ${str(etcd.endpoints)}\n` +
          `lease_ttl_s = ${opts.leaseTtlS ?? 1}\n` +
          `forward_listen = "127.0.0.1:${forwardPort}"\n` +
          `forward_advertise = "127.0.0.1:${forwardPort}"\n` +
          `tls_ca_file = ${str(f.caFile)}\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`,
        stateHeight: null,
      });
      homes.push(home);
      nodes.push({ id, home, token, forwardPort, proc: undefined, adminUrl: undefined, paused: false });
    }
    // What an operator does once for a new validator: `cometkms state init` for every chain.
    const chainIds = [opts.chainId, ...(opts.moreChains ?? []).map((c) => c.id)];
    if (opts.stateInit === 'direct') {
      const clients = createEtcdClients({ endpoints: etcd.endpoints, callTimeoutMs: 10_000 });
      try {
        for (const chainId of chainIds) {
          if (!(await initEtcdChainState(clients.client, CONFIG_DEFAULTS.etcdPrefix, chainId))) {
            throw new Error(`state init of ${chainId}: the state key already exists`);
          }
        }
      } finally {
        clients.close();
      }
    }
    for (const chainId of opts.stateInit === 'direct' ? [] : chainIds) {
      const first = homes[0]!;
      const init = await runCli(
        ['state', 'init', '--config', first.configPath, '--chain', chainId],
        first.env(),
      );
      if (init.code !== 0) throw new Error(`state init of ${chainId} failed: ${init.stderr}`);
    }
    const cluster: KmsCluster = {
      etcd,
      nodes,
      async start(i) {
        const node = nodes[i]!;
        node.adminUrl = undefined;
        node.paused = false;
        node.proc = node.home.start(opts.nodeEnv === undefined ? {} : { env: opts.nodeEnv });
        node.adminUrl = await node.proc.waitReady(30_000);
      },
      async signal(i, signal) {
        const p = nodes[i]!.proc;
        if (p === undefined || p.exitStatus !== undefined) return;
        if (signal === 'SIGKILL' || signal === 'SIGTERM') {
          p.kill('SIGCONT');
          nodes[i]!.paused = false;
        }
        p.kill(signal);
        if (signal === 'SIGKILL' || signal === 'SIGTERM') await p.waitExit(15_000);
      },
      pause(i) {
        nodes[i]!.proc?.kill('SIGSTOP');
        nodes[i]!.paused = true;
      },
      resume(i) {
        nodes[i]!.proc?.kill('SIGCONT');
        nodes[i]!.paused = false;
      },
      async status(i) {
        const node = nodes[i]!;
        if (
          node.paused ||
          node.proc === undefined ||
          node.proc.exitStatus !== undefined ||
          node.adminUrl === undefined
        ) {
          return undefined;
        }
        try {
          return await nodeStatus(node.adminUrl, node.home.adminToken);
        } catch {
          return undefined;
        }
      },
      async leaderIndex(ms = 15_000) {
        let found = -1;
        await waitFor('a serving leader', ms, async () => {
          for (let i = 0; i < n; i++) {
            const s = await cluster.status(i);
            if (s?.role === 'leader' && s.hsm.signing_session) {
              found = i;
              return true;
            }
          }
          return false;
        });
        return found;
      },
      cleanup,
    };
    await Promise.all(nodes.map((_, i) => cluster.start(i)));
    return cluster;
  } catch (err) {
    await cleanup();
    throw err;
  }
}
