/**
 * etcd members that serve clients and peers over mutual TLS on 127.0.0.1, the way a production
 * cluster runs (deploy/systemd/etcd-cometkms.service, README "Three nodes on one host"): client
 * URLs are `https://127.0.0.1:PORT`, an IP address, which is what makes grpc-js set an IP as the
 * TLS server name. Certificates come from deploy/tls/make-certs.sh (test/helpers/certs.ts). Every
 * process is tracked by PID and killed on stop() or when the test process exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort } from '../../src/cluster/free-port.ts';
import type { NodeCertFiles } from './certs.ts';

/** A running TLS etcd cluster. */
export interface TlsEtcd {
  /** `https://127.0.0.1:PORT`, one per member */
  endpoints: string[];
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/**
 * Starts one member per entry of `certs` (member i uses certs[i] for its client and peer
 * listeners) and returns at once: members elect a leader among themselves within a second, and
 * CometKMS waits for etcd by itself.
 */
export async function startTlsEtcd(certs: NodeCertFiles[]): Promise<TlsEtcd> {
  const dir = await mkdtemp(join(tmpdir(), 'cometkms-tls-etcd-'));
  const ports: Array<{ client: number; peer: number }> = [];
  for (const _ of certs) ports.push({ client: await freeLoopbackPort(), peer: await freeLoopbackPort() });
  const initialCluster = ports.map((p, i) => `m${i}=https://127.0.0.1:${p.peer}`).join(',');
  // one token for every member: members with different tokens form different clusters
  const clusterToken = `tls-${process.pid}-${Date.now()}`;
  const procs = certs.map((c, i) => {
    const { client, peer } = ports[i]!;
    const tlsFlags = (prefix: string) => [
      `--${prefix}client-cert-auth`,
      `--${prefix}trusted-ca-file=${c.caFile}`,
      `--${prefix}cert-file=${c.certFile}`,
      `--${prefix}key-file=${c.keyFile}`,
    ];
    const proc = spawn(
      'etcd',
      [
        `--name=m${i}`,
        `--data-dir=${join(dir, `m${i}`)}`,
        `--listen-client-urls=https://127.0.0.1:${client}`,
        `--advertise-client-urls=https://127.0.0.1:${client}`,
        `--listen-peer-urls=https://127.0.0.1:${peer}`,
        `--initial-advertise-peer-urls=https://127.0.0.1:${peer}`,
        `--initial-cluster=${initialCluster}`,
        '--initial-cluster-state=new',
        `--initial-cluster-token=${clusterToken}`,
        '--heartbeat-interval=50',
        '--election-timeout=500',
        '--logger=zap',
        '--log-level=error',
        ...tlsFlags(''),
        ...tlsFlags('peer-'),
      ],
      { stdio: 'ignore' },
    );
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    return proc;
  });
  return {
    endpoints: ports.map((p) => `https://127.0.0.1:${p.client}`),
    async stop() {
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((resolve) => {
              if (p.exitCode !== null || p.signalCode !== null) return resolve();
              p.once('exit', () => resolve());
              p.kill('SIGKILL');
            }),
        ),
      );
      await rm(dir, { recursive: true, force: true });
    },
  };
}
