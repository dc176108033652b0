/**
 * What a cluster node knows of the rest of the cluster, for `/status` only (never for a safety
 * decision): the members (one registry key per node, bound to a lease of its own, so a dead node
 * drops out after the TTL), the leader key, whether etcd answers, and the replicated sign state
 * of every chain (watched, so that followers report the HRS the leader reserved within
 * milliseconds; a periodic full read covers a stalled watch).
 *
 * While etcd is down nothing here floods the log: registration is retried with a bounded
 * back-off (100 ms doubling to 1 s) and logged only when it starts failing and when it recovers;
 * a failed full read only clears `etcdHealthy`.
 *
 * etcd is reached through the EtcdPort and time through the Clock port, so the deterministic
 * simulator runs this class as it is (its `onState` feeds the followers' high-water marks).
 */
import { compareHRS, type HRS } from '../../cometbft/types.ts';
import { type Clock, systemClock, type Timer } from '../../ports/clock.ts';
import type { EtcdKv, EtcdPort, EtcdWatch } from '../../ports/etcd.ts';
import { type EtcdClientLike, toEtcdPort } from '../../ports/etcd3.ts';
import { decodeSignState, etcdKeys } from '../../store/etcd.ts';
import type { SignState } from '../../store/types.ts';

/** One registered member. */
export interface MemberInfo {
  nodeId: string;
  advertise: string;
}

/** First and largest delay between registration attempts. */
const REGISTER_RETRY_MIN_MS = 100;
const REGISTER_RETRY_MAX_MS = 1_000;

/** Options of {@link ClusterView}. */
/** The subset of a pino logger the view uses. */
export interface ClusterViewLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface ClusterViewOptions {
  client: EtcdClientLike;
  prefix: string;
  nodeId: string;
  advertise: string;
  /** TTL of this node's registry key */
  memberTtlS: number;
  /** period of the full read (members, leader, states, health) */
  pollMs: number;
  logger: ClusterViewLogger;
  /** told about every readable state seen (watched or polled), by chain id */
  onState?: (chainId: string, hrs: HRS) => void;
  /** wall clock and timers (default: the system's) */
  clock?: Clock;
}

/** A registration that succeeded; `lost` resolves when its lease is lost. */
interface Registration {
  leaseId: string;
  lost: Promise<void>;
}

const membersPrefix = (prefix: string): string => `${prefix}members/`;

/** The registry, leader and replicated-state view of one node. */
export class ClusterView {
  readonly #opts: ClusterViewOptions;
  readonly #client: EtcdPort;
  readonly #clock: Clock;
  readonly #statePrefix: string;
  readonly #states = new Map<string, SignState>();
  #members: MemberInfo[] = [];
  #leaderRevision: number | undefined;
  #healthy = false;
  /** the registration's lease while registered */
  #leaseId: string | undefined;
  #watcher: EtcdWatch | undefined;
  #timer: Timer | undefined;
  /** the registration lease's keepalive, cancelled by stop() */
  #keepaliveTimer: Timer | undefined;
  #polling = false;
  #stopped = false;
  /** aborted by stop(): ends the registration loop's waits */
  readonly #stop = new AbortController();
  /** whether registration is failing (logged once on the way in, once on the way out) */
  #registerFailing = false;

  constructor(opts: ClusterViewOptions) {
    this.#opts = opts;
    this.#client = toEtcdPort(opts.client);
    this.#clock = opts.clock ?? systemClock;
    this.#statePrefix = etcdKeys.state(opts.prefix, '');
  }

  /** Registers this node and reads everything once; a failure here is logged, not fatal. */
  async start(): Promise<void> {
    void this.#keepRegistered(await this.#register());
    await this.#poll();
    // The client re-establishes a broken watch by itself; the periodic read covers the gap.
    this.#watcher = this.#client.watch(
      { prefix: this.#statePrefix },
      {
        put: (kv) => this.#onState(kv),
        delete: () => undefined,
        error: (err) => this.#opts.logger.warn({ err }, 'cluster view: state watch failed'),
      },
    );
    this.#timer = this.#clock.setInterval(() => void this.#poll(), this.#opts.pollMs);
  }

  /** Registered members, sorted by node id. */
  get members(): MemberInfo[] {
    return this.#members;
  }

  /** The create revision of the leader key as last read (the leader's term), if any. */
  get leaderRevision(): number | undefined {
    return this.#leaderRevision;
  }

  /** Whether the last full read succeeded. */
  get etcdHealthy(): boolean {
    return this.#healthy;
  }

  /** The highest replicated state seen for `chainId` (do not modify it). */
  replicated(chainId: string): SignState | undefined {
    return this.#states.get(chainId);
  }

  /** Removes this node's registry key and stops watching. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stop.abort();
    this.#timer?.cancel();
    this.#keepaliveTimer?.cancel();
    await this.#watcher?.cancel().catch(() => undefined);
    const leaseId = this.#leaseId;
    this.#leaseId = undefined;
    if (leaseId !== undefined) await this.#client.leaseRevoke(leaseId).catch(() => undefined);
  }

  /**
   * Keeps this node registered: after the registration's lease is lost (or an attempt failed),
   * tries again after a delay that starts at 100 ms and doubles up to 1 s while attempts fail.
   * `registered` is the outcome of the first attempt.
   */
  async #keepRegistered(registered: Registration | undefined): Promise<void> {
    let current = registered;
    let delay = REGISTER_RETRY_MIN_MS;
    while (!this.#stopped) {
      if (current !== undefined) {
        await this.#untilStopped(current.lost);
        delay = REGISTER_RETRY_MIN_MS;
      }
      const wait = delay;
      await this.#untilStopped(
        new Promise((resolve) => this.#clock.setTimeout(() => resolve(), wait, { unref: true })),
      );
      current = await this.#register();
      if (current === undefined) delay = Math.min(delay * 2, REGISTER_RETRY_MAX_MS);
    }
  }

  /** Resolves with `p`, or as soon as the view is stopped. */
  async #untilStopped(p: Promise<void>): Promise<void> {
    const signal = this.#stop.signal;
    if (signal.aborted) return;
    let onAbort = (): void => undefined;
    const stopped = new Promise<void>((resolve) => {
      onAbort = resolve;
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([p, stopped]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * One registration attempt: a new lease and this node's key on it, the lease then kept alive
   * every TTL/3 until etcd no longer knows it or no keepalive succeeded for a whole TTL.
   * Resolves with the registration on success, undefined on failure.
   */
  async #register(): Promise<Registration | undefined> {
    if (this.#stopped) return undefined;
    let leaseId: string | undefined;
    try {
      leaseId = (await this.#client.leaseGrant(this.#opts.memberTtlS)).id;
      await this.#putMember(leaseId);
    } catch (err) {
      // Drop the failed lease (it expires by itself if the revoke fails too).
      if (leaseId !== undefined) void this.#client.leaseRevoke(leaseId).catch(() => undefined);
      if (!this.#registerFailing && !this.#stopped) {
        this.#registerFailing = true;
        this.#opts.logger.warn(
          { err: (err as Error).message },
          'cluster view: member registration failed; retrying (logged once until it succeeds)',
        );
      }
      return undefined;
    }
    if (this.#registerFailing) {
      this.#registerFailing = false;
      this.#opts.logger.info({}, 'cluster view: member registered again');
    }
    this.#leaseId = leaseId;
    return { leaseId, lost: this.#keepAlive(leaseId) };
  }

  /** Writes this node's registry key, bound to `leaseId`. */
  async #putMember(leaseId: string): Promise<void> {
    await this.#client.txn({
      compare: [],
      success: [
        {
          op: 'put',
          key: `${membersPrefix(this.#opts.prefix)}${this.#opts.nodeId}`,
          value: Buffer.from(JSON.stringify({ nodeId: this.#opts.nodeId, advertise: this.#opts.advertise })),
          lease: leaseId,
        },
      ],
      failure: [],
    });
  }

  /** Keeps `leaseId` alive; resolves once it is lost (or the view stops). */
  #keepAlive(leaseId: string): Promise<void> {
    const ttlMs = this.#opts.memberTtlS * 1000;
    let lastOk = this.#clock.now();
    return new Promise((resolve) => {
      this.#keepaliveTimer?.cancel();
      const timer = this.#clock.setInterval(() => {
        if (this.#stopped || this.#leaseId !== leaseId) {
          timer.cancel();
          resolve();
          return;
        }
        const sentAt = this.#clock.now();
        void this.#client.leaseKeepAliveOnce(leaseId, Math.min(1_000, ttlMs / 3)).then((answer) => {
          if (answer === 'ok') lastOk = sentAt;
          if (answer === 'not-found' || this.#clock.now() - lastOk >= ttlMs) {
            timer.cancel();
            if (this.#leaseId === leaseId) this.#leaseId = undefined;
            resolve();
          }
        });
      }, ttlMs / 3);
      this.#keepaliveTimer = timer;
    });
  }

  async #poll(): Promise<void> {
    // One full read at a time: with a slow etcd, reads must not pile up behind each other.
    if (this.#polling) return;
    this.#polling = true;
    try {
      const all = await this.#client.getPrefix(this.#opts.prefix);
      const members: MemberInfo[] = [];
      let leaderRevision: number | undefined;
      const leaderKey = etcdKeys.leader(this.#opts.prefix);
      for (const kv of all) {
        const key = kv.key;
        if (key === leaderKey) leaderRevision = Number(kv.createRevision);
        else if (key.startsWith(this.#statePrefix)) this.#onState(kv);
        else if (key.startsWith(membersPrefix(this.#opts.prefix))) {
          const m = parseMember(kv);
          if (m !== undefined) members.push(m);
        }
      }
      this.#members = members.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
      this.#leaderRevision = leaderRevision;
      this.#healthy = true;
      // Our key is gone while its lease lives (keys deleted by hand, a wiped or restored etcd
      // that kept the lease): write it again, or the others stop finding this node (peer marks).
      const leaseId = this.#leaseId;
      if (leaseId !== undefined && !members.some((m) => m.nodeId === this.#opts.nodeId)) {
        await this.#putMember(leaseId).catch(() => undefined);
      }
    } catch {
      this.#healthy = false;
    } finally {
      this.#polling = false;
    }
  }

  #onState(kv: EtcdKv): void {
    const key = kv.key;
    const chainId = key.slice(this.#statePrefix.length);
    try {
      const s = decodeSignState(kv.value, key);
      this.#opts.onState?.(chainId, { height: s.height, round: s.round, step: s.step });
      const known = this.#states.get(chainId);
      if (known === undefined || compareHRS(s, known) > 0) {
        this.#states.set(chainId, s);
      }
    } catch {
      // an unreadable state is the leader's problem to report; the view keeps the last good one
    }
  }
}

function parseMember(kv: EtcdKv): MemberInfo | undefined {
  try {
    const v = JSON.parse(kv.value.toString()) as Partial<MemberInfo>;
    if (typeof v.nodeId === 'string' && typeof v.advertise === 'string') {
      return { nodeId: v.nodeId, advertise: v.advertise };
    }
  } catch {
    // skipped
  }
  return undefined;
}
