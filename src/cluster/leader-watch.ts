/**
 * A follower's watch on the leader's liveness, for fenced pre-emption (docs/ARCHITECTURE.md §5):
 * a lease cannot be shorter than 1 s (etcd rounds TTLs to seconds), so a follower does not wait
 * for a dead leader's lease to expire. It sends the leader a heartbeat every `heartbeatMs` over
 * the forwarding connection (which keeps that connection warm for the requests it relays) and,
 * when no heartbeat was answered for `silenceMs`, reports the leader silent: Leadership then
 * revokes the leader's lease (which deletes the leader key) and campaigns.
 *
 * Safety does not depend on this being right: every reservation is fenced by the leader key's
 * value, create revision and lease, so a leader whose lease was revoked cannot commit anything,
 * whatever it believes. A false alarm costs a leader change (and perhaps a vote), so silence is
 * judged conservatively: only heartbeats this node actually sent count, and a gap in its own
 * timer (this process was paused or starved) restarts the count instead of blaming the leader.
 */
import type { Clock, Timer } from '../ports/clock.ts';
import type { PeerAddress, PeerPort } from '../ports/peers.ts';

export interface LeaderWatchOptions {
  peers: PeerPort;
  clock: Clock;
  /** period of the heartbeats; default 50 ms */
  heartbeatMs?: number;
  /** silence after which the leader counts as gone; default 250 ms */
  silenceMs?: number;
  /** told once per watched leader when it has been silent for `silenceMs` */
  onSilent: (leader: PeerAddress, leaseId: string) => void;
}

/** The leader being watched: who, its lease, and when it last answered. */
interface Watched {
  leader: PeerAddress;
  leaseId: string;
  /** when the oldest heartbeat not followed by an answer was sent; undefined: all answered */
  unansweredSince: number | undefined;
  reported: boolean;
}

export class LeaderWatch {
  readonly #o: LeaderWatchOptions;
  readonly #heartbeatMs: number;
  readonly #silenceMs: number;
  #watched: Watched | undefined;
  #timer: Timer | undefined;
  #lastTick = 0;

  constructor(options: LeaderWatchOptions) {
    this.#o = options;
    this.#heartbeatMs = options.heartbeatMs ?? 50;
    this.#silenceMs = options.silenceMs ?? 250;
  }

  /**
   * Watches `leader`, whose leader key is bound to `leaseId`; undefined stops watching (this node
   * leads, or no leader is known). Calling it again with the same leader and lease changes nothing.
   */
  follow(leader: PeerAddress | undefined, leaseId: string | undefined): void {
    const w = this.#watched;
    if (leader === undefined || leaseId === undefined) {
      this.#watched = undefined;
      this.#timer?.cancel();
      this.#timer = undefined;
      return;
    }
    if (
      w?.leaseId === leaseId &&
      w.leader.nodeId === leader.nodeId &&
      w.leader.advertise === leader.advertise
    ) {
      return;
    }
    this.#watched = { leader, leaseId, unansweredSince: undefined, reported: false };
    if (this.#timer === undefined) {
      this.#lastTick = this.#o.clock.now();
      this.#timer = this.#o.clock.setInterval(() => this.#tick(), this.#heartbeatMs);
    }
  }

  stop(): void {
    this.follow(undefined, undefined);
  }

  #tick(): void {
    const w = this.#watched;
    if (w === undefined) return;
    const now = this.#o.clock.now();
    const gap = now - this.#lastTick;
    this.#lastTick = now;
    // Our own timer ran late (this process paused or starved): what went unanswered meanwhile
    // says nothing about the leader.
    if (gap > 2 * this.#heartbeatMs) w.unansweredSince = undefined;
    if (w.unansweredSince !== undefined && now - w.unansweredSince >= this.#silenceMs && !w.reported) {
      w.reported = true;
      this.#o.onSilent(w.leader, w.leaseId);
      return;
    }
    const sentAt = now;
    void this.#o.peers.heartbeat(w.leader, this.#silenceMs).then((alive) => {
      if (this.#watched !== w) return;
      if (alive) {
        // An answer to a heartbeat sent at `sentAt` clears everything sent before it.
        if (w.unansweredSince !== undefined && w.unansweredSince <= sentAt) w.unansweredSince = undefined;
      }
    });
    w.unansweredSince ??= sentAt;
  }
}
