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
 */
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3';
import type pino from 'pino';
import { compareHRS, type HRS } from '../../cometbft/types.ts';
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
export interface ClusterViewOptions {
  client: Etcd3;
  prefix: string;
  nodeId: string;
  advertise: string;
  /** TTL of this node's registry key */
  memberTtlS: number;
  /** period of the full read (members, leader, states, health) */
  pollMs: number;
  logger: pino.Logger;
  /** told about every readable state seen (watched or polled), by chain id */
  onState?: (chainId: string, hrs: HRS) => void;
}

/** A registration that succeeded; `lost` resolves when its lease is lost. */
interface Registration {
  lost: Promise<void>;
}

const membersPrefix = (prefix: string): string => `${prefix}members/`;

/** The registry, leader and replicated-state view of one node. */
export class ClusterView {
  readonly #opts: ClusterViewOptions;
  readonly #statePrefix: string;
  readonly #states = new Map<string, SignState>();
  #members: MemberInfo[] = [];
  #leaderRevision: number | undefined;
  #healthy = false;
  #lease: Lease | undefined;
  #watcher: Watcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #stopped = false;
  /** aborted by stop(): ends the registration loop's waits */
  readonly #stop = new AbortController();
  /** whether registration is failing (logged once on the way in, once on the way out) */
  #registerFailing = false;

  constructor(opts: ClusterViewOptions) {
    this.#opts = opts;
    this.#statePrefix = etcdKeys.state(opts.prefix, '').toString();
  }

  /** Registers this node and reads everything once; a failure here is logged, not fatal. */
  async start(): Promise<void> {
    void this.#keepRegistered(await this.#register());
    await this.#poll();
    // etcd3 re-establishes a broken watch by itself; the periodic read covers the gap.
    this.#watcher = this.#opts.client
      .watch()
      .prefix(this.#statePrefix)
      .watcher()
      .on('put', (kv) => this.#onState(kv))
      .on('error', (err) => this.#opts.logger.warn({ err }, 'cluster view: state watch failed'));
    this.#timer = setInterval(() => void this.#poll(), this.#opts.pollMs);
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
    clearInterval(this.#timer);
    await this.#watcher?.cancel().catch(() => undefined);
    await this.#lease?.revoke().catch(() => undefined);
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
      await this.#untilStopped(new Promise((resolve) => setTimeout(resolve, wait).unref()));
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
   * One registration attempt: a new lease (kept alive by etcd3) and this node's key on it.
   * Resolves with the registration on success, undefined on failure.
   */
  async #register(): Promise<Registration | undefined> {
    if (this.#stopped) return undefined;
    const lease = this.#opts.client.lease(this.#opts.memberTtlS);
    this.#lease = lease;
    const lost = new Promise<void>((resolve) => lease.once('lost', () => resolve()));
    try {
      await lease
        .put(`${membersPrefix(this.#opts.prefix)}${this.#opts.nodeId}`)
        .value(JSON.stringify({ nodeId: this.#opts.nodeId, advertise: this.#opts.advertise }));
    } catch (err) {
      // Drop the failed lease (no keepalive loop of its own); the next attempt grants a new one.
      lease.release();
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
    return { lost };
  }

  async #poll(): Promise<void> {
    // One full read at a time: with a slow etcd, reads must not pile up behind each other.
    if (this.#polling) return;
    this.#polling = true;
    try {
      const all = await this.#opts.client.getAll().prefix(this.#opts.prefix).exec();
      const members: MemberInfo[] = [];
      let leaderRevision: number | undefined;
      const leaderKey = etcdKeys.leader(this.#opts.prefix).toString();
      for (const kv of all.kvs) {
        const key = kv.key.toString();
        if (key === leaderKey) leaderRevision = Number(kv.create_revision);
        else if (key.startsWith(this.#statePrefix)) this.#onState(kv);
        else if (key.startsWith(membersPrefix(this.#opts.prefix))) {
          const m = parseMember(kv);
          if (m !== undefined) members.push(m);
        }
      }
      this.#members = members.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
      this.#leaderRevision = leaderRevision;
      this.#healthy = true;
    } catch {
      this.#healthy = false;
    } finally {
      this.#polling = false;
    }
  }

  #onState(kv: IKeyValue): void {
    const key = kv.key.toString();
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

function parseMember(kv: IKeyValue): MemberInfo | undefined {
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
