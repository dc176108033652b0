/**
 * Starts a local etcd cluster of real `etcd` processes on 127.0.0.1, for the demo and the tests:
 * random free ports, one data dir per member, health wait, kill/restart/pause by PID, cleanup.
 *
 * Members use a 50 ms heartbeat and a 500 ms election timeout, so that an etcd election fits
 * well inside the 1 s leadership lease CometKMS uses (etcd's defaults, 100/1000 ms, do not).
 * Every process started here is tracked by PID: `stop()` kills them, and if the launching process
 * exits without stopping (a crash, a failed test), an exit hook SIGKILLs them and removes their
 * data, so no etcd is ever left behind. Nothing but these PIDs is ever signalled.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freeLoopbackPort } from './free-port.ts';

/** One etcd member. `pid` changes on restart. */
export interface EtcdMember {
  name: string;
  pid: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
}

/** A running local etcd cluster. */
export interface EtcdCluster {
  /** the members' client URLs (http://127.0.0.1:PORT) */
  endpoints: string[];
  members: EtcdMember[];
  /** the directory holding every member's data dir (removed by stop()) */
  dir: string;
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
  /** PIDs of the members that are still running */
  livePids(): number[];
  /** `etcdctl snapshot save` of the whole keyspace into `file` (from the first healthy member) */
  snapshot(file: string): Promise<void>;
  /**
   * What an operator's restore from a backup does: every member is killed, its data dir replaced
   * by `etcdctl snapshot restore` of `file`, and started again on the same URLs (a new cluster
   * holding the snapshot's keys at their older values).
   */
  restore(file: string): Promise<void>;
  /** kills every member (by PID) and removes the data dirs */
  stop(): Promise<void>;
}

/** Options of {@link launchEtcdCluster}. */
export interface EtcdLaunchOptions {
  /** number of members (default 3) */
  members?: number;
  /**
   * Directory to create for the members' data dirs (must not exist yet; removed by stop()).
   * Default: a fresh directory under the system temp dir.
   */
  dir?: string;
  /** the etcd executable (default: `etcd` found on PATH) */
  binary?: string;
  /**
   * Tests only: skip the cost of fsync. etcd 3.4 has no `--unsafe-no-fsync`; there the default
   * data dir goes to /dev/shm (tmpfs), where fsync costs nothing. Never for benchmarks.
   */
  unsafeNoFsync?: boolean;
  /** Own process group per member, so a terminal's Ctrl-C reaches only the launcher (default false). */
  detached?: boolean;
  /** How long to wait for every member to answer /health (default 20 s). */
  healthyWithinMs?: number;
  /** Called when a member exits with a non-zero code by itself (not by a signal), with its stderr tail. */
  onUnexpectedExit?: (name: string, code: number, stderrTail: string) => void;
}

const DEFAULT_HEALTHY_WITHIN_MS = 20_000;

/** The first executable `name` on PATH, or undefined (what `command -v name` finds). */
export function findExecutable(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Clusters not yet stopped; killed synchronously if the process exits without stopping them. */
const live = new Set<{ procs: (ChildProcess | undefined)[]; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) {
      for (const p of c.procs) {
        if (p?.pid !== undefined && running(p)) {
          try {
            process.kill(p.pid, 'SIGCONT');
            process.kill(p.pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
      rmSync(c.dir, { recursive: true, force: true });
    }
  });
}

const noFsyncFlag = new Map<string, boolean>();
function supportsNoFsyncFlag(binary: string): boolean {
  let known = noFsyncFlag.get(binary);
  if (known === undefined) {
    const help = spawnSync(binary, ['--help'], { encoding: 'utf8', timeout: 5_000 });
    known = `${help.stdout}${help.stderr}`.includes('--unsafe-no-fsync');
    noFsyncFlag.set(binary, known);
  }
  return known;
}

function running(p: ChildProcess): boolean {
  return p.exitCode === null && p.signalCode === null;
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
  if (!running(p)) return Promise.resolve();
  return new Promise((resolve) => p.once('exit', () => resolve()));
}

/**
 * Starts a fresh etcd cluster and waits until every member is healthy. On failure everything
 * started is killed and removed before the error is thrown.
 */
export async function launchEtcdCluster(opts: EtcdLaunchOptions = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 3;
  const binary = opts.binary ?? findExecutable('etcd');
  if (binary === undefined) throw new Error('etcd is not installed (no `etcd` on PATH)');
  const noFsyncByFlag = opts.unsafeNoFsync === true && supportsNoFsyncFlag(binary);
  const onTmpfs = opts.unsafeNoFsync === true && !noFsyncByFlag;
  let dir: string;
  if (opts.dir === undefined) {
    dir = mkdtempSync(join(onTmpfs ? '/dev/shm' : tmpdir(), 'cometkms-etcd-'));
  } else {
    mkdirSync(opts.dir, { mode: 0o700 });
    dir = opts.dir;
  }
  const procs: (ChildProcess | undefined)[] = [];
  const entry = { procs, dir };
  installExitHook();
  live.add(entry);

  const members: EtcdMember[] = [];
  for (let i = 0; i < n; i++) {
    const [c, p] = [await freeLoopbackPort(), await freeLoopbackPort()];
    members.push({
      name: `m${i}`,
      pid: 0,
      clientUrl: `http://127.0.0.1:${c}`,
      peerUrl: `http://127.0.0.1:${p}`,
      dataDir: join(dir, `m${i}`),
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  let token = `cometkms-${process.pid}-${Date.now()}`;
  const etcdctl = findExecutable('etcdctl');
  const runEtcdctl = (args: string[]): void => {
    if (etcdctl === undefined) throw new Error('etcdctl is not installed (no `etcdctl` on PATH)');
    const res = spawnSync(etcdctl, args, { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`etcdctl ${args[0]} ${args[1]} failed: ${res.stderr || res.error}`);
  };
  const waitHealthy = async (): Promise<void> =>
    await waitFor('all etcd members healthy', opts.healthyWithinMs ?? DEFAULT_HEALTHY_WITHIN_MS, async () =>
      (await Promise.all(members.map((m) => healthy(m.clientUrl)))).every(Boolean),
    );

  const spawnMember = (i: number): void => {
    const m = members[i] as EtcdMember;
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
    const proc = spawn(binary, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: opts.detached === true,
    });
    // keep the last lines of stderr for error messages
    let tail = '';
    proc.stderr?.on('data', (d: Buffer) => {
      tail = (tail + d.toString()).slice(-2000);
    });
    proc.once('exit', (code, sig) => {
      if (code !== 0 && code !== null && sig === null) opts.onUnexpectedExit?.(m.name, code, tail);
    });
    procs[i] = proc;
    m.pid = proc.pid ?? 0;
  };

  const kill = async (i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const p = procs[i];
    if (p?.pid === undefined || !running(p)) return;
    const done = exited(p);
    // A frozen member must be thawed to act on anything but SIGKILL.
    process.kill(p.pid, 'SIGCONT');
    process.kill(p.pid, signal);
    await done;
  };

  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.clientUrl),
    members,
    dir,
    kill,
    async restart(i) {
      await kill(i);
      spawnMember(i);
      const m = members[i] as EtcdMember;
      await waitFor(`member ${i} healthy`, opts.healthyWithinMs ?? DEFAULT_HEALTHY_WITHIN_MS, () =>
        healthy(m.clientUrl),
      );
    },
    pause(i) {
      process.kill((members[i] as EtcdMember).pid, 'SIGSTOP');
    },
    resume(i) {
      process.kill((members[i] as EtcdMember).pid, 'SIGCONT');
    },
    async raftLeaderIndex() {
      let found = -1;
      await waitFor('a Raft leader', 10_000, async () => {
        for (let i = 0; i < n; i++) {
          try {
            const res = await fetch(`${(members[i] as EtcdMember).clientUrl}/v3/maintenance/status`, {
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
    livePids() {
      return procs.flatMap((p) => (p?.pid !== undefined && running(p) ? [p.pid] : []));
    },
    async snapshot(file) {
      // etcdctl takes a snapshot from exactly one member: the first that answers /health
      for (const m of members) {
        if (await healthy(m.clientUrl)) {
          runEtcdctl(['snapshot', 'save', file, `--endpoints=${m.clientUrl}`]);
          return;
        }
      }
      throw new Error('etcd snapshot: no member answers');
    },
    async restore(file) {
      await Promise.all(members.map((_, i) => kill(i)));
      // A restored cluster is a new cluster: a new token keeps its members from talking to
      // anything left of the old one.
      token = `cometkms-${process.pid}-${Date.now()}-restored`;
      for (const m of members) {
        rmSync(m.dataDir, { recursive: true, force: true });
        runEtcdctl([
          'snapshot',
          'restore',
          file,
          `--name=${m.name}`,
          `--data-dir=${m.dataDir}`,
          `--initial-cluster=${initialCluster}`,
          `--initial-cluster-token=${token}`,
          `--initial-advertise-peer-urls=${m.peerUrl}`,
        ]);
      }
      for (let i = 0; i < n; i++) spawnMember(i);
      await waitHealthy();
    },
    async stop() {
      try {
        await Promise.all(members.map((_, i) => kill(i)));
      } finally {
        rmSync(dir, { recursive: true, force: true });
        live.delete(entry);
      }
    },
  };

  try {
    for (let i = 0; i < n; i++) spawnMember(i);
    await waitHealthy();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
