/**
 * The chaos run's etcd cluster: real members on 127.0.0.1 (data on tmpfs), started once per run,
 * with every fault the harness inflicts on it: kill or freeze a member, wipe one member and
 * re-add it, wipe the whole store, snapshot and restore an older snapshot, and cut members
 * apart. Only the PIDs started here are ever signalled; data dirs live under the run directory.
 *
 * Partitions between members: a member advertises one peer URL to all the others, so a proxy in
 * front of it cannot tell which peer a connection comes from. The peer URLs therefore name hosts
 * (`m1.etcd.chaos:<port>`), and each member runs in its own mount namespace (`unshare -m`) with
 * its own /etc/hosts bound over the system's: there, every other member's name points to a
 * loopback address of its own (127.0.<10+from>.<10+to>), where a proxy for exactly that ordered
 * pair listens and forwards to the member. Cutting a pair is cutting its two proxies. Nothing
 * leaves the loopback interface, and the machine's own /etc/hosts is never touched.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../../../src/cluster/free-port.ts';
import { TcpProxy } from '../net/proxy.ts';

const run = promisify(execFile);

interface Member {
  name: string;
  clientUrl: string;
  /** as advertised: `http://<name>.etcd.chaos:<peerPort>` */
  peerUrl: string;
  peerPort: number;
  dataDir: string;
  /** this member's /etc/hosts, bound over the system's in its own mount namespace */
  hostsFile: string;
  proc: ChildProcess | undefined;
  paused: boolean;
}

/** The loopback address on which member `from` reaches member `to` (through their proxy). */
const pairAddress = (from: number, to: number): string => `127.0.${10 + from}.${10 + to}`;

/**
 * `cmd args` in a mount namespace of its own where `hostsFile` is /etc/hosts. Both `unshare`
 * (without --fork) and the shell exec, so the PID is the command's own.
 */
function withHosts(hostsFile: string, cmd: string, args: string[]): [string, string[]] {
  return [
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      'mount --bind "$0" /etc/hosts && exec "$@"',
      hostsFile,
      cmd,
      ...args,
    ],
  ];
}

/** How long the membership changes of one wipe are retried while etcd refuses them as unsafe. */
const MEMBERSHIP_CHANGE_MS = 30_000;

interface ListedMember {
  id: string;
  peerUrl: string;
}

const alive = (p: ChildProcess | undefined): p is ChildProcess =>
  p !== undefined && p.exitCode === null && p.signalCode === null;

export class EtcdBed {
  private token: string;
  private generation = 0;

  /** `peers[from][to]`: the proxy member `from` reaches member `to` through (none on the diagonal) */
  private readonly peers: Array<Array<TcpProxy | undefined>>;

  private constructor(
    readonly dir: string,
    private readonly members: Member[],
    peers: Array<Array<TcpProxy | undefined>>,
  ) {
    this.token = `chaos-${process.pid}-${Date.now()}`;
    this.peers = peers;
  }

  /** Starts `n` members under `dir` (created; on tmpfs when possible) and waits until healthy. */
  static async start(dir: string, n: number): Promise<EtcdBed> {
    mkdirSync(dir, { recursive: true });
    const members: Member[] = [];
    for (let i = 0; i < n; i++) {
      const peerPort = await freeLoopbackPort();
      members.push({
        name: `m${i}`,
        clientUrl: `http://127.0.0.1:${await freeLoopbackPort()}`,
        peerUrl: `http://m${i}.etcd.chaos:${peerPort}`,
        peerPort,
        dataDir: join(dir, `m${i}`),
        hostsFile: join(dir, `hosts-m${i}`),
        proc: undefined,
        paused: false,
      });
    }
    const peers: Array<Array<TcpProxy | undefined>> = [];
    for (let from = 0; from < n; from++) {
      const row: Array<TcpProxy | undefined> = [];
      for (let to = 0; to < n; to++) {
        row.push(
          from === to
            ? undefined
            : await TcpProxy.start(`etcd m${from}→m${to}`, `127.0.0.1:${members[to]!.peerPort}`, {
                host: pairAddress(from, to),
                port: members[to]!.peerPort,
              }),
        );
      }
      peers.push(row);
      const names = members.map(
        (m, to) => `${to === from ? '127.0.0.1' : pairAddress(from, to)} ${m.name}.etcd.chaos`,
      );
      writeFileSync(members[from]!.hostsFile, ['127.0.0.1 localhost', ...names, ''].join('\n'));
    }
    const bed = new EtcdBed(dir, members, peers);
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

  /**
   * The proxies that carry member `a`'s traffic with member `b` (`a` dialing `b`, and `b`
   * dialing `a`); a Raft peer connection runs each way, and each carries both directions.
   */
  pairProxies(a: number, b: number): TcpProxy[] {
    return [this.peers[a]![b]!, this.peers[b]![a]!];
  }

  private spawn(i: number, state: 'new' | 'existing'): void {
    const m = this.members[i]!;
    const [cmd, args] = withHosts(m.hostsFile, 'etcd', [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=${m.clientUrl}`,
      `--advertise-client-urls=${m.clientUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=${m.peerUrl}`,
      `--initial-cluster=${this.initialCluster()}`,
      `--initial-cluster-state=${state}`,
      `--initial-cluster-token=${this.token}`,
      '--heartbeat-interval=50',
      '--election-timeout=500',
      '--logger=zap',
      '--log-level=error',
    ]);
    const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore'] });
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

  /**
   * Starts the given members again on their data dirs (thaws those that run), all at once, and
   * waits until they are healthy: after a quorum loss no restarted member is healthy before
   * enough of the others are back.
   */
  async restart(...which: number[]): Promise<void> {
    for (const i of which) {
      if (alive(this.members[i]!.proc)) this.resume(i);
      else this.spawn(i, 'existing');
    }
    await this.waitHealthy(which, 30_000);
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

  /**
   * Member i wiped: removed from the cluster, its data deleted, added back and started empty.
   * The cluster is whole first (every member up and healthy), and every membership change is
   * retried for a bounded time while etcd refuses it as unsafe: with the default strict
   * reconfiguration check a member refuses to remove or add a voting member until it has been
   * connected to every other voting member for 5 s ("unhealthy cluster"), which a member
   * restarted by the previous round has not. Once the member was removed it is always put back
   * (or this throws): a removed member must never be left to a later round, whose restart of
   * it could then never make the cluster healthy.
   */
  async wipeMember(i: number): Promise<void> {
    const m = this.members[i]!;
    await this.waitHealthy(
      this.members.map((_, j) => j),
      30_000,
    );
    await this.kill(i);
    const until = Date.now() + MEMBERSHIP_CHANGE_MS;
    await this.changeMembership(i, until, (listed) =>
      listed === undefined ? undefined : ['member', 'remove', listed.id],
    );
    rmSync(m.dataDir, { recursive: true, force: true });
    await this.changeMembership(i, until, (listed) =>
      listed === undefined ? ['member', 'add', m.name, `--peer-urls=${m.peerUrl}`] : undefined,
    );
    this.spawn(i, 'existing');
    await this.waitHealthy([i], 30_000);
  }

  /**
   * Moves member i's entry in the membership where `step` wants it: `step` gets the entry as
   * the cluster lists it now and returns the etcdctl command still needed (undefined: done).
   * Retried through the live members until `until` while etcd refuses the change; reading the
   * membership before every attempt makes a change whose answer was lost (a time-out) count as
   * done instead of being made twice.
   */
  private async changeMembership(
    i: number,
    until: number,
    step: (listed: ListedMember | undefined) => string[] | undefined,
  ): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const peerUrl = this.members[i]!.peerUrl;
        const cmd = step((await this.memberList(i, attempt)).find((x) => x.peerUrl === peerUrl));
        if (cmd === undefined) return;
        await this.etcdctl(i, attempt, cmd);
      } catch (err) {
        if (Date.now() > until) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** Runs `etcdctl` through a live member other than `not` (the `attempt`-th in turn). */
  private async etcdctl(not: number, attempt: number, args: string[]): Promise<string> {
    const live = this.members.map((_, j) => j).filter((j) => j !== not && this.isUp(j));
    if (live.length === 0) throw new Error('no live etcd member to run etcdctl through');
    const via = this.members[live[attempt % live.length]!]!;
    const res = await run('etcdctl', [`--endpoints=${via.clientUrl}`, '--command-timeout=5s', ...args], {
      timeout: 10_000,
    });
    return res.stdout;
  }

  /** The membership as a live member other than `not` sees it. */
  private async memberList(not: number, attempt: number): Promise<ListedMember[]> {
    // The simple format prints member IDs in hex (JSON numbers would lose their low bits):
    // "id, started|unstarted, name, peer urls, client urls, is learner".
    const out = await this.etcdctl(not, attempt, ['member', 'list']);
    return out
      .split('\n')
      .map((l) => l.split(',').map((f) => f.trim()))
      .filter((f) => f.length >= 4 && f[0]!.length > 0)
      .map((f) => ({ id: f[0]!, peerUrl: f[3]! }));
  }

  /**
   * Waits (bounded by `ms`) until the cluster is whole again: every member running and not
   * frozen, every member healthy, and the membership exactly these members, all started.
   * Returns what is still wrong (empty: whole). A fault's heal must leave the cluster whole;
   * the runner checks it after every round, so a broken heal fails the run where it happened
   * instead of surfacing rounds later as a liveness failure.
   */
  async untilWhole(ms: number): Promise<string[]> {
    const until = Date.now() + ms;
    for (;;) {
      const wrong: string[] = [];
      for (const m of this.members) {
        if (!alive(m.proc)) wrong.push(`${m.name} not running`);
        else if (m.paused) wrong.push(`${m.name} frozen`);
      }
      if (wrong.length === 0) {
        const healthy = await Promise.all(this.members.map((_, i) => this.healthy(i)));
        healthy.forEach((ok, i) => {
          if (!ok) wrong.push(`${this.members[i]!.name} not healthy`);
        });
      }
      // Every member's own view of the membership: exactly these members, all started.
      for (let i = 0; i < this.members.length && wrong.length === 0; i++) {
        const listed = await this.membership(i);
        if (listed === undefined) {
          wrong.push(`${this.members[i]!.name}: member list failed`);
          continue;
        }
        for (const m of this.members) {
          const l = listed.find((x) => x.peerUrls.includes(m.peerUrl));
          if (l === undefined) wrong.push(`${m.name} not a member (as ${this.members[i]!.name} sees it)`);
          else if (l.name !== m.name) wrong.push(`${m.name} listed but not started`);
        }
        if (listed.length !== this.members.length) wrong.push(`${listed.length} members listed`);
      }
      if (wrong.length === 0 || Date.now() > until) return wrong;
      await new Promise((r) => setTimeout(r, 200));
    }
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
      // in the member's own hosts view: the restore resolves the peer URLs it checks
      const [cmd, args] = withHosts(m.hostsFile, 'etcdctl', [
        'snapshot',
        'restore',
        file,
        `--name=${m.name}`,
        `--data-dir=${m.dataDir}`,
        `--initial-cluster=${this.initialCluster()}`,
        `--initial-cluster-token=${this.token}`,
        `--initial-advertise-peer-urls=${m.peerUrl}`,
      ]);
      await run(cmd, args, { timeout: 20_000 });
    }
    for (let i = 0; i < this.members.length; i++) this.spawn(i, 'new');
    await this.waitHealthy(
      this.members.map((_, i) => i),
      30_000,
    );
  }

  /** Kills every member, closes the peer proxies and removes the data. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    await Promise.all(this.peers.flat().map((p) => p?.close()));
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

  /** The membership as member i sees it; a member not started yet has no name. */
  private async membership(i: number): Promise<Array<{ name: string; peerUrls: string[] }> | undefined> {
    try {
      const res = await fetch(`${this.members[i]!.clientUrl}/v3/cluster/member/list`, {
        method: 'POST',
        body: '{}',
        signal: AbortSignal.timeout(1_000),
      });
      const body = (await res.json()) as { members?: Array<{ name?: string; peerURLs?: string[] }> };
      return (body.members ?? []).map((m) => ({ name: m.name ?? '', peerUrls: m.peerURLs ?? [] }));
    } catch {
      return undefined;
    }
  }

  /** Whether member i answers its /health with a leader and a served read. */
  private async healthy(i: number): Promise<boolean> {
    try {
      const res = await fetch(`${this.members[i]!.clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
      return res.ok && ((await res.json()) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  }

  private async waitHealthy(which: number[], ms: number): Promise<void> {
    const until = Date.now() + ms;
    for (;;) {
      const ok = await Promise.all(which.map((i) => this.healthy(i)));
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
