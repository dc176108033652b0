/**
 * A cluster node's role transitions (ARCHITECTURE §4), apart from everything else the node
 * does, so that the runtime and the deterministic simulator run the same code:
 *   - on winning: the high-water marks of a majority are collected (peer-marks.ts; retried every
 *     `collectRetryMs` for as long as the term lasts: no majority, no signing), then every guard
 *     reloads the replicated state, then the HSM signing session opens, and only then does the
 *     node serve; a failure of the reload or the session hands the leadership over;
 *   - on losing (or a leader change): stop serving at once, then close the signing session
 *     (waiting for a signature in progress), then point forwarding at the current leader.
 * Transitions run one at a time, in order. Safety never rests on `serving`: every reservation
 * is fenced in etcd. It only keeps requests away from a node that cannot sign.
 */
import { type Clock, systemClock } from '../ports/clock.ts';
import type { LocalLeadership } from './cluster-handler.ts';
import type { LeaderInfo, Role } from './leadership.ts';

/** What the transitions need from the leadership (implemented by `Leadership`). */
export interface RoleLeadership {
  readonly role: Role;
  /** the current term's token, compared by identity to notice a term that ended meanwhile */
  readonly token: { readonly createRevision: string } | undefined;
  readonly leader: LeaderInfo | undefined;
  resign(): Promise<void>;
}

/** The HSM signing session (only the serving leader holds one). */
export interface SigningSession {
  open(): Promise<void>;
  /** waits for a signature in progress */
  close(): Promise<void>;
}

export interface RoleTransitionsOptions {
  nodeId: string;
  leadership: RoleLeadership;
  /** the chains' guards, reloaded in order on winning */
  guards: () => Iterable<{ init(): Promise<void> }>;
  session: SigningSession;
  /** where followers forward to (undefined: nowhere) */
  setForwardTarget: (leader: LeaderInfo | undefined) => void;
  /** true once the node is shutting down: no transition starts serving then */
  stopping: () => boolean;
  /**
   * collects the peers' high-water marks (PeerMarkedStore.collect); false: no majority answered.
   * Without it the node serves on its own marks alone.
   */
  collectMarks?: () => Promise<boolean>;
  /** pause between two collections that found no majority; default 200 ms */
  collectRetryMs?: number;
  /** timers for that pause (default: the system's) */
  clock?: Clock;
  /** told when serving starts (true) or stops (false) */
  onServing?: (serving: boolean) => void;
  log: {
    info(obj: object, msg: string): void;
    warn(obj: object, msg: string): void;
    error(obj: object, msg: string): void;
  };
}

/** The serving flag and the queue of role transitions of one node. */
export class RoleTransitions implements LocalLeadership {
  readonly #o: RoleTransitionsOptions;
  /** true only while leading with reloaded guards and an open signing session */
  #serving = false;
  #queue: Promise<void> = Promise.resolve();

  constructor(options: RoleTransitionsOptions) {
    this.#o = options;
  }

  /** True only while this node leads and is ready to sign. */
  servesLocally(): boolean {
    return this.#serving && this.#o.leadership.role === 'leader';
  }

  get serving(): boolean {
    return this.#serving;
  }

  /** Stops serving now (a hand-over or shutdown begins); returns whether it was serving. */
  stopServing(): boolean {
    const was = this.#serving;
    this.#serving = false;
    return was;
  }

  /** Serves again after a hand-over that did not reach etcd (the same term still holds). */
  resumeServing(was: boolean): void {
    this.#serving = was;
  }

  /** Resolves once every queued transition has run. */
  settled(): Promise<void> {
    return this.#queue;
  }

  /** Won an election: reload every guard, open the signing session, then serve. */
  onLeader(): void {
    const l = this.#o.leadership;
    const token = l.token;
    this.#o.setForwardTarget(undefined);
    this.#enqueue(async () => {
      // Lost again before this ran: the 'follower' transition queued after this one cleans up.
      if (l.token !== token || this.#o.stopping()) return;
      if (!(await this.#collectMarks(() => l.token === token && !this.#o.stopping()))) return;
      try {
        // The replicated state may be ahead of this node's cache (another leader signed since).
        for (const guard of this.#o.guards()) {
          // each reload is an etcd read: stop at once when the term ends or the node stops
          if (l.token !== token || this.#o.stopping()) return;
          await guard.init();
        }
        await this.#o.session.open();
      } catch (err) {
        this.#o.log.error({ err }, 'cannot serve as leader; handing leadership over');
        await this.#o.session.close().catch(() => undefined);
        await l.resign();
        return;
      }
      if (l.token !== token) return;
      this.#serving = true;
      this.#o.onServing?.(true);
      this.#o.log.info({ term: token?.createRevision }, 'leader: serving');
    });
  }

  /**
   * Collects the peers' marks until a majority answered (true) or `current()` turns false (the
   * term ended or the node stops). Never throws: a failure is one more attempt.
   */
  async #collectMarks(current: () => boolean): Promise<boolean> {
    const collect = this.#o.collectMarks;
    if (collect === undefined) return true;
    const clock = this.#o.clock ?? systemClock;
    let attempts = 0;
    for (;;) {
      if (!current()) return false;
      try {
        if (await collect()) return current();
      } catch (err) {
        if (attempts === 0) this.#o.log.error({ err }, 'leader: collecting the peers’ marks failed');
      }
      if (attempts++ === 0) {
        this.#o.log.warn(
          {},
          'leader: no majority of the cluster answered for its marks; not serving yet, retrying',
        );
      }
      await new Promise<void>((resolve) => clock.setTimeout(resolve, this.#o.collectRetryMs ?? 200));
    }
  }

  /** Lost (or never had) leadership, or the leader changed: stop serving first, then relay. */
  onFollower(leader: LeaderInfo | undefined): void {
    if (this.#serving) this.#o.onServing?.(false);
    this.#serving = false;
    this.#enqueue(async () => {
      // Closing waits for a signature in progress; nothing new can start (serving is false).
      await this.#o.session.close();
      // The leader may have changed again meanwhile: follow the latest.
      const l = this.#o.leadership;
      this.#o.setForwardTarget(l.role === 'leader' ? undefined : l.leader);
    });
    // Point forwarding at the new leader at once too (no need to wait for the HSM).
    if (leader !== undefined && leader.nodeId !== this.#o.nodeId) this.#o.setForwardTarget(leader);
  }

  #enqueue(fn: () => Promise<void>): void {
    this.#queue = this.#queue.then(fn).catch((err: unknown) => {
      this.#o.log.error({ err }, 'role transition failed');
    });
  }
}
