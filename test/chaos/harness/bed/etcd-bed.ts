/**
 * The chaos run's etcd cluster: real members on 127.0.0.1 (data on tmpfs), started once per run,
 * with every fault the harness inflicts on it: kill or freeze a member, wipe one member and
 * re-add it, wipe the whole store, snapshot and restore an older snapshot. Only the PIDs started
 * here are ever signalled; data dirs live under the run directory.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../../../src/cluster/etcd-launcher.ts';

const run = promisify(execFile);

interface Member {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  proc: ChildProcess | undefined;
  paused: boolean;
}

const alive = (p: ChildProcess | undefined): p is ChildProcess =>
  p !== undefined && p.exitCode === null && p.signalCode === null;

export class EtcdBed {
  private token: string;
  private generation = 0;

  private constructor(
    readonly dir: string,
    private readonly members: Member[],
  ) {
    this.token = `chaos-${process.pid}-${Date.now()}`;
  }

  /** Starts `n` members under `dir` (created; on tmpfs when possible) and waits until healthy. */
  static async start(dir: string, n: number): Promise<EtcdBed> {
    mkdirSync(dir, { recursive: true });
    const members: Member[] = [];
    for (let i = 0; i < n; i++) {
      members.push({
        name: `m${i}`,
        clientUrl: `http://127.0.0.1:${await freeLoopbackPort()}`,
        peerUrl: `http://127.0.0.1:${await freeLoopbackPort()}`,
        dataDir: join(dir, `m${i}`),
        proc: undefined,
        paused: false,
      });
    }
    const bed = new EtcdBed(dir, members);
    for (let i = 0; i < n; i++) bed.spawn(i, 'new');
    await bed.waitHealthy(
      members.map((_, i) => i),
      30_000,
    );
    return bed;
  }

  get size(): number {
    return this.members.length;
  }

  /** host:port of member i's client endpoint (what proxies forward to). */
  clientAddress(i: number): string {
    return this.members[i]!.clientUrl.slice('http://'.length);
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  isUp(i: number): boolean {
    const m = this.members[i]!;
    return alive(m.proc) && !m.paused;
  }

  private initialCluster(): string {
    return this.members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  }

  private spawn(i: number, state: 'new' | 'existing'): void {
    const m = this.members[i]!;
    const proc = spawn(
      'etcd',
      [
        `--name=${m.name}`,
        `--data-dir=${m.dataDir}`,
        `--listen-client-urls=${m.clientUrl}`,
        `--advertise-client-urls=${m.clientUrl}`,
        `--listen-peer-urls=${m.peerUrl}`,
        `--initial-advertise-peer-urls=${m.peerUrl}`,
        `--initial-cluster=${this.initialCluster()}`,
        `--initial-cluster-state=${state}`,
        `--initial-cluster-token=${this.token}`,
        '--heartbeat-interval=50',
        '--election-timeout=500',
        '--logger=zap',
        '--log-level=error',
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    liveProcs.add(proc);
    proc.once('exit', () => liveProcs.delete(proc));
    m.proc = proc;
    m.paused = false;
  }

  /** Sends `signal` to member i (thawing it first) and waits for the exit. */
  async kill(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const m = this.members[i]!;
    const p = m.proc;
    if (!alive(p)) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGCONT');
    m.paused = false;
    p.kill(signal);
    await exited;
  }

  pause(i: number): void {
    const m = this.members[i]!;
    if (alive(m.proc)) {
      m.proc.kill('SIGSTOP');
      m.paused = true;
    }
  }

  resume(i: number): void {
    const m = this.members[i]!;
    if (alive(m.proc)) m.proc.kill('SIGCONT');
    m.paused = false;
  }

  /** Starts member i again on its data dir (no-op if it runs) and waits until it is healthy. */
  async restart(i: number): Promise<void> {
    if (alive(this.members[i]!.proc)) {
      this.resume(i);
      return;
    }
    this.spawn(i, 'existing');
    await this.waitHealthy([i], 30_000);
  }

  /** Index of the Raft leader, or -1 if none answers within `ms`. */
  async raftLeader(ms = 5_000): Promise<number> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      for (let i = 0; i < this.members.length; i++) {
        if (!this.isUp(i)) continue;
        const st = await this.status(i);
        if (st?.leader !== undefined && st.leader !== '0' && st.leader === st.header?.member_id) return i;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return -1;
  }

  /** Member i wiped: removed from the cluster, its data deleted, added back and started empty. */
  async wipeMember(i: number): Promise<void> {
    const m = this.members[i]!;
    await this.kill(i);
    const other = this.members.findIndex((_, j) => j !== i && this.isUp(j));
    if (other < 0) throw new Error('no live member to re-add a wiped member through');
    const endpoint = `--endpoints=${this.members[other]!.clientUrl}`;
    const timeout = '--command-timeout=10s';
    // The simple format prints member IDs in hex (JSON numbers would lose their low bits).
    const list = (await run('etcdctl', [endpoint, timeout, 'member', 'list'], { timeout: 15_000 })).stdout;
    const line = list.split('\n').find((l) => l.includes(m.peerUrl));
    const id = line?.split(',')[0]?.trim();
    if (id !== undefined && id.length > 0) {
      await run('etcdctl', [endpoint, timeout, 'member', 'remove', id], { timeout: 15_000 });
    }
    rmSync(m.dataDir, { recursive: true, force: true });
    await run('etcdctl', [endpoint, 'member', 'add', m.name, `--peer-urls=${m.peerUrl}`], {
      timeout: 10_000,
    });
    this.spawn(i, 'existing');
    await this.waitHealthy([i], 30_000);
  }

  /** The whole store lost: every member killed and started empty as a new cluster. */
  async wipeAll(): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    for (const m of this.members) rmSync(m.dataDir, { recursive: true, force: true });
    this.token = `chaos-${process.pid}-${Date.now()}-${++this.generation}`;
    for (let i = 0; i < this.members.length; i++) this.spawn(i, 'new');
    await this.waitHealthy(
      this.members.map((_, i) => i),
      30_000,
    );
  }

  /** Saves a snapshot of the store to `file` through a live member. */
  async snapshot(file: string): Promise<void> {
    const i = this.members.findIndex((_, j) => this.isUp(j));
    if (i < 0) throw new Error('no live etcd member to snapshot');
    await run('etcdctl', [`--endpoints=${this.members[i]!.clientUrl}`, 'snapshot', 'save', file], {
      timeout: 20_000,
    });
  }

  /** Every member killed and restored from `file` (an older snapshot), then started. */
  async restore(file: string): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    this.token = `chaos-${process.pid}-${Date.now()}-${++this.generation}`;
    for (const m of this.members) {
      rmSync(m.dataDir, { recursive: true, force: true });
      await run(
        'etcdctl',
        [
          'snapshot',
          'restore',
          file,
          `--name=${m.name}`,
          `--data-dir=${m.dataDir}`,
          `--initial-cluster=${this.initialCluster()}`,
          `--initial-cluster-token=${this.token}`,
          `--initial-advertise-peer-urls=${m.peerUrl}`,
        ],
        { timeout: 20_000 },
      );
    }
    for (let i = 0; i < this.members.length; i++) this.spawn(i, 'new');
    await this.waitHealthy(
      this.members.map((_, i) => i),
      30_000,
    );
  }

  /** Kills every member and removes the data. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async status(i: number): Promise<{ header?: { member_id?: string }; leader?: string } | undefined> {
    try {
      const res = await fetch(`${this.members[i]!.clientUrl}/v3/maintenance/status`, {
        method: 'POST',
        body: '{}',
        signal: AbortSignal.timeout(300),
      });
      return (await res.json()) as { header?: { member_id?: string }; leader?: string };
    } catch {
      return undefined;
    }
  }

  private async waitHealthy(which: number[], ms: number): Promise<void> {
    const until = Date.now() + ms;
    for (;;) {
      const ok = await Promise.all(
        which.map(async (i) => {
          try {
            const res = await fetch(`${this.members[i]!.clientUrl}/health`, {
              signal: AbortSignal.timeout(500),
            });
            return res.ok && ((await res.json()) as { health?: string }).health === 'true';
          } catch {
            return false;
          }
        }),
      );
      if (ok.every(Boolean)) return;
      if (Date.now() > until) throw new Error(`etcd members ${which.join(',')} not healthy within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const liveProcs = new Set<ChildProcess>();
// A harness that dies must not leave etcd members behind.
process.on('exit', () => {
  for (const p of liveProcs) p.kill('SIGKILL');
});
