/**
 * What a cluster node knows of the rest of the cluster, for `/status` only (never for a safety
 * decision): the members (one registry key per node, bound to a lease of its own, so a dead node
 * drops out after the TTL), the leader key, whether etcd answers, and the replicated sign state
 * of every chain (watched, so that followers report the HRS the leader reserved within
 * milliseconds; a periodic full read covers a stalled watch).
 */
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3';
import type pino from 'pino';
import type { HRS } from '../../cometbft/types.ts';
import { compareHRS, decodeSignState, etcdKeys } from '../../store/etcd.ts';

/** One registered member. */
export interface MemberInfo {
  nodeId: string;
  advertise: string;
}

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
}

const membersPrefix = (prefix: string): string => `${prefix}members/`;

/** The registry, leader and replicated-state view of one node. */
export class ClusterView {
  readonly #opts: ClusterViewOptions;
  readonly #statePrefix: string;
  readonly #states = new Map<string, HRS>();
  #members: MemberInfo[] = [];
  #leaderRevision: number | undefined;
  #healthy = false;
  #lease: Lease | undefined;
  #watcher: Watcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(opts: ClusterViewOptions) {
    this.#opts = opts;
    this.#statePrefix = etcdKeys.state(opts.prefix, '').toString();
  }

  /** Registers this node and reads everything once; a failure here is logged, not fatal. */
  async start(): Promise<void> {
    await this.#register();
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

  /** The highest replicated HRS seen for `chainId`. */
  replicated(chainId: string): HRS | undefined {
    return this.#states.get(chainId);
  }

  /** Removes this node's registry key and stops watching. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#watcher?.cancel().catch(() => undefined);
    await this.#lease?.revoke().catch(() => undefined);
  }

  async #register(): Promise<void> {
    if (this.#stopped) return;
    const lease = this.#opts.client.lease(this.#opts.memberTtlS);
    this.#lease = lease;
    lease.on('lost', () => {
      if (this.#stopped || this.#lease !== lease) return;
      void this.#register();
    });
    try {
      await lease
        .put(`${membersPrefix(this.#opts.prefix)}${this.#opts.nodeId}`)
        .value(JSON.stringify({ nodeId: this.#opts.nodeId, advertise: this.#opts.advertise }));
    } catch (err) {
      this.#opts.logger.warn({ err: (err as Error).message }, 'cluster view: member registration failed');
    }
  }

  async #poll(): Promise<void> {
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
    }
  }

  #onState(kv: IKeyValue): void {
    const key = kv.key.toString();
    const chainId = key.slice(this.#statePrefix.length);
    try {
      const s = decodeSignState(kv.value, key);
      const known = this.#states.get(chainId);
      if (known === undefined || compareHRS(s, known) > 0) {
        this.#states.set(chainId, { height: s.height, round: s.round, step: s.step });
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
