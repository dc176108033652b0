import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { type Clock, systemClock, type Timer } from '../ports/clock.ts';
import type { EtcdKv, EtcdPort, EtcdWatch, KeepaliveAnswer } from '../ports/etcd.ts';
import { type EtcdClientLike, toEtcdPort } from '../ports/etcd3.ts';
import type { PeerPort } from '../ports/peers.ts';
import {
  type EtcdCallObserver,
  etcdKeys,
  type FencingToken,
  fencingCompares,
  type LeadershipFence,
  observeEtcdCall,
} from '../store/etcd.ts';
import { LeaderWatch } from './leader-watch.ts';

/** Who leads, as written in the leader key. `advertise` is where followers forward to. */
export interface LeaderInfo {
  nodeId: string;
  advertise: string;
}

export type Role = 'leader' | 'follower';

/** The subset of a pino logger this module uses. */
export interface LeadershipLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface LeadershipOptions {
  /** client over all members: campaigns, watch, lease grant and revoke */
  client: EtcdClientLike;
  /** one single-member client per endpoint; keepalives go to all at once. Default: [client] */
  members?: EtcdClientLike[];
  /** key prefix, e.g. "cometkms/" */
  prefix: string;
  nodeId: string;
  /** host:port followers forward requests to */
  advertise: string;
  /** lease TTL in whole seconds (etcd raises it to ceil(1.5 × its election timeout)) */
  leaseTtlS: number;
  /** deadline of one keepalive; default min(300 ms, TTL/4) */
  keepaliveTimeoutMs?: number;
  /** how long non-preferred nodes wait after a transfer before campaigning anyway; default 300 ms */
  preferDelayMs?: number;
  logger?: LeadershipLogger;
  /**
   * told about every etcd call (ops `campaign`, `handover`, `lease_grant`, `lease_revoke`, and
   * `lease_keepalive` once per member and tick), e.g. for metrics
   */
  observer?: EtcdCallObserver;
  /** wall clock and timers (default: the system's; the simulator passes simulated time) */
  clock?: Clock;
  /**
   * the other KMS nodes: with it, a follower heartbeats the leader and pre-empts a silent one
   * (leader-watch.ts); without it, a dead leader is replaced once its lease expires
   */
  peers?: PeerPort;
  /** heartbeat period; default 50 ms */
  heartbeatMs?: number;
  /** silence after which a follower revokes the leader's lease and campaigns; default 250 ms */
  silenceMs?: number;
}

const silent: LeadershipLogger = { info() {}, warn() {} };

/**
 * The value of the preferred-leader hint written by a hand-over: `to` (if set) should win; if
 * not set, anyone but `from` should. Others wait `preferDelayMs` before campaigning anyway, so a
 * dead target costs that much extra, never liveness.
 */
interface PreferredHint {
  from: string;
  to?: string;
}

/**
 * Leader election on etcd with a fencing token (ARCHITECTURE.md §2.4, §4).
 *
 * The leader key `${prefix}leader` holds `{nodeId, advertise}`, bound to this node's lease. A
 * campaign is one transaction: "if the key does not exist, create it with my lease". The winner's
 * token is (lease id, create revision, value); `EtcdSignStateStore` compares all three in every
 * write, so safety never rests on this class's belief that it leads: being "leader" here only
 * means "worth trying to sign".
 *
 * The lease is kept alive by our own keepalive every TTL/4, sent to every member in parallel with
 * a short deadline (etcd3's built-in keepalive rides one stream and notices a dead member only
 * after a whole TTL). The lease counts as lost when etcd answers "not found", or when no
 * keepalive succeeded for a whole TTL; then a new lease is granted and the node campaigns again.
 * A slow call alone never makes the leader step down: only a lost lease, a changed leader key
 * (watch) or a failed fence (`stepDown`) do.
 *
 * Followers watch the leader key and campaign when it is deleted; they also campaign every TTL/4
 * (a failed campaign is a read) so that a stalled watch stream cannot leave them waiting.
 *
 * As a state machine: the state is (lease, token, known leader, leader-key revision, a deferred
 * campaign's timer); its inputs are the tick (every TTL/4: keepalive, then a polling campaign
 * while following), watch events on the leader key, `stepDown`, `resign`/`transferTo`, and the
 * answers of the etcd calls those make. Inputs that change the state run one at a time on a
 * queue. Time comes only from the `clock` port and etcd only from the `EtcdPort`, so the
 * deterministic simulator drives the very same class. A follower-side timer (e.g. one watching
 * the leader's liveness) belongs in `#tick`, next to the polling campaign.
 *
 * Fenced pre-emption: with `peers`, a follower heartbeats the leader (leader-watch.ts) and, when
 * it has been silent for `silenceMs`, revokes the lease the leader key is bound to (LeaseRevoke
 * needs only the id, which the key carries) and campaigns, instead of waiting up to a TTL for the
 * lease to expire. A revoked leader can no longer commit a fenced write, whatever it believes
 * (its in-flight reservation's lease compare fails), so a false alarm costs a leader change, not
 * safety.
 *
 * Events: 'leader' (token), 'follower' (LeaderInfo | undefined; also when the leader changes),
 * 'change' (after any change of role or leader), 'preempted' (the node id of a leader this node
 * found silent and revoked).
 */
export class Leadership extends EventEmitter implements LeadershipFence {
  readonly #client: EtcdPort;
  readonly #members: EtcdPort[];
  readonly #nodeId: string;
  readonly #advertise: string;
  /** the leader key value this node writes */
  readonly #value: string;
  readonly #leaderKey: string;
  readonly #preferredKey: string;
  readonly #ttlMs: number;
  readonly #ttlS: number;
  readonly #keepaliveTimeoutMs: number;
  readonly #preferDelayMs: number;
  readonly #log: LeadershipLogger;
  readonly #observer: EtcdCallObserver | undefined;
  readonly #clock: Clock;

  #running = false;
  #leaseId: string | undefined;
  /** send time of the last keepalive etcd acknowledged for #leaseId */
  #lastKeepaliveOk = 0;
  #token: FencingToken | undefined;
  #leader: LeaderInfo | undefined;
  /** the lease the leader key was bound to when last read (another node's, while following) */
  #leaderLease: string | undefined;
  readonly #watch: LeaderWatch | undefined;
  /** mod revision of the leader key our view reflects; older watch events are ignored */
  #leaderRev = 0n;
  #watcher: EtcdWatch | undefined;
  #ticker: Timer | undefined;
  #deferredCampaign: Timer | undefined;
  #pollQueued = false;
  /**
   * whether the last queued step failed: a failing step is logged when it starts failing and
   * when steps succeed again, not on every tick (etcd down would otherwise log 4 lines a second)
   */
  #stepsFailing = false;
  /** serializes campaigns, hand-overs and role changes */
  #queue: Promise<void> = Promise.resolve();

  constructor(opts: LeadershipOptions) {
    super();
    if (!Number.isInteger(opts.leaseTtlS) || opts.leaseTtlS < 1) {
      throw new Error(`cluster: lease_ttl_s must be a whole number ≥ 1, got ${opts.leaseTtlS}`);
    }
    this.#client = toEtcdPort(opts.client);
    this.#members = (opts.members ?? [opts.client]).map(toEtcdPort);
    this.#clock = opts.clock ?? systemClock;
    this.#nodeId = opts.nodeId;
    this.#advertise = opts.advertise;
    this.#value = JSON.stringify({ nodeId: opts.nodeId, advertise: opts.advertise });
    this.#leaderKey = etcdKeys.leader(opts.prefix);
    this.#preferredKey = etcdKeys.preferred(opts.prefix);
    this.#ttlS = opts.leaseTtlS;
    this.#ttlMs = opts.leaseTtlS * 1000;
    this.#keepaliveTimeoutMs = opts.keepaliveTimeoutMs ?? Math.min(300, this.#ttlMs / 4);
    this.#preferDelayMs = opts.preferDelayMs ?? 300;
    this.#log = opts.logger ?? silent;
    this.#observer = opts.observer;
    this.#watch =
      opts.peers === undefined
        ? undefined
        : new LeaderWatch({
            peers: opts.peers,
            clock: this.#clock,
            ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
            ...(opts.silenceMs !== undefined ? { silenceMs: opts.silenceMs } : {}),
            onSilent: (leader, leaseId) => void this.#enqueue(() => this.#preempt(leader.nodeId, leaseId)),
          });
  }

  get role(): Role {
    return this.#token !== undefined ? 'leader' : 'follower';
  }

  /** The current leader as last seen (this node when leading); undefined if none is known. */
  get leader(): LeaderInfo | undefined {
    return this.#leader;
  }

  get token(): FencingToken | undefined {
    return this.#token;
  }

  /** The create revision of the leader key this node won (its term); undefined while following. */
  get term(): string | undefined {
    return this.#token?.createRevision;
  }

  /** Starts keepalive, watch and campaigning; resolves after the first campaign attempt. */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    this.#watcher = this.#client.watch(
      { key: this.#leaderKey },
      {
        put: (kv) => void this.#enqueue(() => this.#onLeaderKeyEvent(kv, 'put')),
        delete: (kv) => void this.#enqueue(() => this.#onLeaderKeyEvent(kv, 'delete')),
        error: (err) => this.#log.warn({ err }, 'leader key watch failed; relying on polling'),
      },
    );
    const tick = Math.max(50, Math.floor(this.#ttlMs / 4));
    this.#ticker = this.#clock.setInterval(() => this.#tick(), tick);
    await this.#enqueue(() => this.#campaign(false));
  }

  /** The periodic input: keep the lease alive; while following, campaign (a failed one is a read). */
  #tick(): void {
    void this.#keepaliveTick();
    // at most one polling campaign queued, however slow etcd is
    if (this.role === 'leader' || this.#pollQueued) return;
    this.#pollQueued = true;
    void this.#enqueue(() => {
      this.#pollQueued = false;
      return this.#campaign(false);
    });
  }

  /**
   * Hands leadership over without waiting for the lease: in one fenced transaction, deletes the
   * leader key and writes a hint that this node should not win the next election. Others see the
   * delete on their watch and campaign at once. This node stays a follower (and campaigns again
   * only after `preferDelayMs`, if nobody else took over). A no-op when not leading.
   */
  async resign(): Promise<void> {
    await this.#enqueue(() => this.#handOver(undefined));
  }

  /**
   * Like `resign`, but the hint names `nodeId` as the preferred next leader: it campaigns at once
   * while the others wait `preferDelayMs` first. If `nodeId` is dead, another node takes over
   * after that delay. Without `nodeId`, equals `resign`.
   */
  async transferTo(nodeId?: string): Promise<void> {
    await this.#enqueue(() => this.#handOver(nodeId));
  }

  /**
   * Called by the store when a fenced transaction proved `token` is no longer the leadership.
   * Drops it, revokes the lease (so that whatever it still holds goes) and campaigns again with a
   * new lease. Ignored if `token` is not the current one (an older term's late failure).
   */
  stepDown(reason: string, token: FencingToken): void {
    if (!this.#sameToken(token)) return;
    this.#log.warn({ reason, term: token.createRevision }, 'stepping down');
    const leaseId = this.#leaseId;
    this.#leaseId = undefined;
    this.#setFollower(undefined);
    if (leaseId !== undefined) void this.#revoke(leaseId);
  }

  /**
   * Stops everything. With `revoke` (the default) the lease is revoked, which deletes the leader
   * key if this node held it; `revoke: false` lets it expire after the TTL, like a crash.
   */
  async stop(opts: { revoke?: boolean } = {}): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    this.#ticker?.cancel();
    this.#watch?.stop();
    this.#deferredCampaign?.cancel();
    await this.#queue;
    const leaseId = this.#leaseId;
    this.#leaseId = undefined;
    this.#setFollower(undefined);
    await this.#watcher?.cancel().catch(() => undefined);
    if (leaseId !== undefined && opts.revoke !== false) await this.#revoke(leaseId);
  }

  #enqueue(fn: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(fn).then(
      () => {
        if (!this.#stepsFailing) return;
        this.#stepsFailing = false;
        this.#log.info({}, 'leadership steps succeed again');
      },
      (err: unknown) => {
        if (this.#stepsFailing) return;
        this.#stepsFailing = true;
        this.#log.warn(
          { err },
          'leadership step failed; retrying on the next tick (logged once until it recovers)',
        );
      },
    );
    this.#queue = run;
    return run;
  }

  #sameToken(t: FencingToken): boolean {
    const cur = this.#token;
    return cur !== undefined && cur.leaseId === t.leaseId && cur.createRevision === t.createRevision;
  }

  #setLeader(token: FencingToken): void {
    this.#token = token;
    this.#leader = { nodeId: this.#nodeId, advertise: this.#advertise };
    this.#leaderLease = token.leaseId;
    this.#watch?.stop();
    this.#log.info({ term: token.createRevision, lease: token.leaseId }, 'became leader');
    this.emit('leader', token);
    this.emit('change');
  }

  /** Follows `leader` (undefined: none known), whose leader key is bound to `leaseId`. */
  #setFollower(leader: LeaderInfo | undefined, leaseId?: string): void {
    const wasLeader = this.#token !== undefined;
    const prev = this.#leader;
    this.#token = undefined;
    this.#leader = leader;
    this.#leaderLease = leader === undefined ? undefined : leaseId;
    if (this.#running) this.#watch?.follow(leader, this.#leaderLease);
    else this.#watch?.stop();
    const leaderChanged = prev?.nodeId !== leader?.nodeId || prev?.advertise !== leader?.advertise;
    if (!wasLeader && !leaderChanged) return;
    if (wasLeader) this.#log.warn({ leader: leader?.nodeId }, 'no longer leader');
    this.emit('follower', leader);
    this.emit('change');
  }

  /** Grants a lease if there is none; then, if nobody leads, tries to create the leader key. */
  async #campaign(ignoreHint: boolean): Promise<void> {
    if (!this.#running || this.#token !== undefined) return;
    if (this.#leaseId === undefined) await this.#grant();
    const leaseId = this.#leaseId;
    if (leaseId === undefined) return;
    const res = await this.#call('campaign', () =>
      this.#client.txn({
        compare: [
          { key: this.#leaderKey, target: 'create', revision: '0' },
          // a pending hand-over hint makes this attempt fail, so we can decide whether to defer
          ...(ignoreHint ? [] : [{ key: this.#preferredKey, target: 'create' as const, revision: '0' }]),
        ],
        success: [
          { op: 'put', key: this.#leaderKey, value: Buffer.from(this.#value), lease: leaseId },
          { op: 'delete', key: this.#preferredKey },
        ],
        failure: [
          { op: 'range', key: this.#leaderKey },
          { op: 'range', key: this.#preferredKey },
        ],
      }),
    );
    // The lease may have been lost or replaced while the call was in flight.
    if (!this.#running || this.#leaseId !== leaseId || this.#token !== undefined) return;
    if (res.succeeded) {
      // the key was created by this transaction, i.e. at its revision
      this.#leaderRev = BigInt(res.revision);
      this.#setLeader({ leaseId, createRevision: res.revision, leaderValue: this.#value });
      return;
    }
    const [leaderKv, hintKv] = res.ranges;
    if (leaderKv !== undefined) {
      this.#leaderRev = BigInt(leaderKv.modRevision);
      const mine = leaderKv.value.toString() === this.#value;
      if (mine && leaderKv.lease === leaseId) {
        // We created it earlier but lost the reply: it is ours, with that create revision.
        this.#setLeader({ leaseId, createRevision: leaderKv.createRevision, leaderValue: this.#value });
      } else if (mine) {
        // Written by this node under a lease it has given up as lost (e.g. etcd lost quorum and
        // then revived the lease). Nobody can use it: revoke it rather than wait for its expiry.
        this.#setFollower(undefined);
        await this.#revoke(leaderKv.lease);
      } else {
        this.#setFollower(this.#parseLeader(leaderKv), leaderKv.lease);
      }
      return;
    }
    this.#setFollower(undefined);
    if (hintKv === undefined) return;
    if (this.#hintFavoursMe(hintKv)) {
      await this.#campaign(true);
    } else if (this.#deferredCampaign === undefined) {
      this.#deferredCampaign = this.#clock.setTimeout(() => {
        this.#deferredCampaign = undefined;
        void this.#enqueue(() => this.#campaign(true));
      }, this.#preferDelayMs);
    }
  }

  #hintFavoursMe(kv: EtcdKv): boolean {
    try {
      const hint = JSON.parse(kv.value.toString()) as PreferredHint;
      return hint.to !== undefined ? hint.to === this.#nodeId : hint.from !== this.#nodeId;
    } catch {
      return true;
    }
  }

  #parseLeader(kv: EtcdKv): LeaderInfo | undefined {
    try {
      const v = JSON.parse(kv.value.toString()) as Partial<LeaderInfo>;
      if (typeof v.nodeId === 'string' && typeof v.advertise === 'string') {
        return { nodeId: v.nodeId, advertise: v.advertise };
      }
    } catch {
      // fall through
    }
    this.#log.warn({ value: kv.value.toString() }, 'leader key holds an unreadable value');
    return undefined;
  }

  async #onLeaderKeyEvent(kv: EtcdKv, kind: 'put' | 'delete'): Promise<void> {
    const rev = BigInt(kv.modRevision);
    if (!this.#running || rev <= this.#leaderRev) return;
    this.#leaderRev = rev;
    if (kind === 'put') {
      const ours =
        this.#token !== undefined &&
        kv.lease === this.#token.leaseId &&
        kv.createRevision === this.#token.createRevision &&
        kv.value.toString() === this.#value;
      if (!ours) this.#setFollower(this.#parseLeader(kv), kv.lease);
      return;
    }
    // Deleted: our lease expired or was revoked, or a hand-over. Nobody leads now.
    this.#setFollower(undefined);
    await this.#campaign(false);
  }

  /**
   * The leader `nodeId` has been silent (leader-watch.ts): revoke the lease its leader key is
   * bound to, unless the key has moved on since, and campaign at once.
   */
  async #preempt(nodeId: string, leaseId: string): Promise<void> {
    if (!this.#running || this.#token !== undefined || this.#leaderLease !== leaseId) return;
    this.#log.warn({ leader: nodeId, lease: leaseId }, 'leader silent; revoking its lease and campaigning');
    await this.#revoke(leaseId);
    this.emit('preempted', nodeId);
    if (this.#leaderLease === leaseId) this.#setFollower(undefined);
    await this.#campaign(false);
  }

  async #handOver(to: string | undefined): Promise<void> {
    const token = this.#token;
    if (!this.#running || token === undefined) return;
    const hint: PreferredHint = to === undefined ? { from: this.#nodeId } : { from: this.#nodeId, to };
    // The hint is bound to our lease: if we stop (revoke), it goes too. The winner deletes it.
    const res = await this.#call('handover', () =>
      this.#client.txn({
        compare: fencingCompares(this.#leaderKey, token),
        success: [
          {
            op: 'put',
            key: this.#preferredKey,
            value: Buffer.from(JSON.stringify(hint)),
            lease: token.leaseId,
          },
          { op: 'delete', key: this.#leaderKey },
        ],
        failure: [],
      }),
    );
    if (res.succeeded) this.#log.info({ to: to ?? null }, 'leader key released for a hand-over');
    else this.#log.warn({}, 'hand-over found the leadership already lost');
    this.#setFollower(undefined);
  }

  async #grant(): Promise<void> {
    const res = await this.#call('lease_grant', () => this.#client.leaseGrant(this.#ttlS));
    if (res.ttlS > this.#ttlS) {
      this.#log.warn(
        { asked: this.#ttlS, granted: res.ttlS },
        'etcd raised the lease TTL; lower its election timeout',
      );
    }
    this.#leaseId = res.id;
    this.#lastKeepaliveOk = this.#clock.now();
  }

  async #revoke(leaseId: string): Promise<void> {
    try {
      await this.#call('lease_revoke', () => this.#client.leaseRevoke(leaseId));
    } catch (err) {
      this.#log.warn({ err }, 'lease revoke failed; it will expire after its TTL');
    }
  }

  async #keepaliveTick(): Promise<void> {
    const leaseId = this.#leaseId;
    if (!this.#running || leaseId === undefined) return;
    const sentAt = this.#clock.now();
    const answers = await Promise.all(this.#members.map((m) => this.#keepaliveOnce(m, leaseId)));
    if (this.#leaseId !== leaseId) return;
    if (answers.includes('ok')) {
      this.#lastKeepaliveOk = sentAt;
    } else if (answers.includes('not-found')) {
      this.#loseLease(leaseId, 'etcd no longer knows the lease');
    } else if (this.#clock.now() - this.#lastKeepaliveOk >= this.#ttlMs) {
      this.#loseLease(leaseId, 'no keepalive succeeded for a whole TTL');
    }
  }

  #loseLease(leaseId: string, reason: string): void {
    this.#log.warn({ lease: leaseId, reason }, 'lease lost');
    void this.#enqueue(async () => {
      if (this.#leaseId !== leaseId) return;
      this.#leaseId = undefined;
      this.#setFollower(undefined);
      await this.#campaign(false);
    });
  }

  /** Reports `call` to the observer (see LeadershipOptions.observer). */
  #call<T>(op: string, call: () => Promise<T>): Promise<T> {
    return observeEtcdCall(this.#observer, op, call);
  }

  /** One keepalive on one member, reported to the observer ("not found" is an answer). */
  async #keepaliveOnce(member: EtcdPort, leaseId: string): Promise<KeepaliveAnswer> {
    const started = performance.now();
    const answer = await member.leaseKeepAliveOnce(leaseId, this.#keepaliveTimeoutMs);
    this.#observer?.('lease_keepalive', performance.now() - started, answer !== 'failed');
    return answer;
  }
}
