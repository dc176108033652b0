/**
 * The Prometheus metrics of one CometKMS node. Every metric lives on the node's own Registry,
 * never prom-client's global one, so several nodes can run in one process (tests, `demo`)
 * without their series colliding.
 */
import { performance } from 'node:perf_hooks';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { SignedMsgType } from '../cometbft/types.ts';
import { isDoubleSignRefusal } from '../guard/decide.ts';
import type { GuardDecision } from '../guard/decision.ts';

/** Latency buckets in seconds: 0.1 ms (a bare SoftHSM sign) up to 1 s (a stuck etcd). */
export const LATENCY_BUCKETS_S = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/** Outcomes for which a signature went back to the validator node. */
const SIGNATURE_RETURNED = new Set<GuardDecision['outcome']>(['signed', 'resigned', 'timestamp_only']);

/** The `type` label of a decision: the vote type by name, else the request kind. */
export function decisionTypeLabel(d: GuardDecision): string {
  if (d.kind === 'vote') {
    if (d.type === SignedMsgType.Prevote) return 'prevote';
    if (d.type === SignedMsgType.Precommit) return 'precommit';
  }
  return d.kind;
}

/** The `reason` label of a refused double-sign attempt (its refusal code), else undefined. */
export function doubleSignReason(d: GuardDecision): string | undefined {
  return d.outcome === 'refused' && isDoubleSignRefusal(d.code) ? d.code : undefined;
}

/** Options of {@link Metrics}. */
export interface MetricsOptions {
  /** also export prom-client's process metrics (CPU, RSS, event loop lag); default true */
  processMetrics?: boolean;
}

/** The metrics of one node; the runtime reports events, `/metrics` renders {@link registry}. */
export class Metrics {
  /** this node's registry (render it with `registry.metrics()`) */
  readonly registry = new Registry();

  private readonly signRequests: Counter<'chain' | 'type' | 'outcome'>;
  private readonly signLatency: Histogram<'chain'>;
  private readonly hsmLatency: Histogram<'chain'>;
  private readonly lastHeight: Gauge<'chain'>;
  private readonly lastRound: Gauge<'chain'>;
  private readonly lastStep: Gauge<'chain'>;
  private readonly doubleSignRefused: Counter<'chain' | 'reason'>;
  private readonly forwards: Counter<'result'>;
  private readonly leader: Gauge;
  private readonly leaderChanges: Counter;
  private readonly linkUp: Gauge<'chain' | 'addr'>;
  private readonly reconnects: Counter<'chain' | 'addr'>;
  private readonly hsmErrors: Counter;
  private readonly etcdLatency: Histogram<'op'>;
  private readonly etcdFailures: Counter<'op'>;
  private readonly stateAlarms: Gauge<'chain_id'>;
  /** monotonic time (ms) of the last vote signature returned, by chain then vote type */
  private readonly lastVoteAt = new Map<string, Map<'prevote' | 'precommit', number>>();

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    this.signRequests = new Counter({
      name: 'cometkms_sign_requests_total',
      help: 'Requests decided by the HRS guard, by chain, type (prevote, precommit, proposal, pubkey, ...) and outcome',
      labelNames: ['chain', 'type', 'outcome'],
      registers,
    });
    this.signLatency = new Histogram({
      name: 'cometkms_sign_duration_seconds',
      help: 'Time from a request reaching the guard to its reply, for requests answered with a signature',
      labelNames: ['chain'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.hsmLatency = new Histogram({
      name: 'cometkms_hsm_sign_duration_seconds',
      help: 'Time spent in the HSM for requests that called it',
      labelNames: ['chain'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.lastHeight = new Gauge({
      name: 'cometkms_last_signed_height',
      help: 'Height of the last signature returned, by chain (exact below 2^53)',
      labelNames: ['chain'],
      registers,
    });
    this.lastRound = new Gauge({
      name: 'cometkms_last_signed_round',
      help: 'Round of the last signature returned, by chain',
      labelNames: ['chain'],
      registers,
    });
    this.lastStep = new Gauge({
      name: 'cometkms_last_signed_step',
      help: 'Step of the last signature returned (1 propose, 2 prevote, 3 precommit), by chain',
      labelNames: ['chain'],
      registers,
    });
    const lastVoteAt = this.lastVoteAt;
    new Gauge({
      name: 'cometkms_seconds_since_last_vote',
      help: 'Seconds since the last prevote or precommit signature was returned, by chain and type',
      labelNames: ['chain', 'type'],
      registers,
      // Computed at scrape time so a stalled chain shows a growing value without any timer.
      collect() {
        const now = performance.now();
        this.reset();
        for (const [chain, byType] of lastVoteAt) {
          for (const [type, at] of byType) this.set({ chain, type }, (now - at) / 1000);
        }
      },
    });
    this.doubleSignRefused = new Counter({
      name: 'cometkms_double_sign_refused_total',
      help: 'Requests refused because signing them could have been a double sign, by chain and reason',
      labelNames: ['chain', 'reason'],
      registers,
    });
    this.forwards = new Counter({
      name: 'cometkms_forwards_total',
      help: 'Requests a follower forwarded to the leader, by result',
      labelNames: ['result'],
      registers,
    });
    this.leader = new Gauge({
      name: 'cometkms_leader',
      help: '1 while this node is the leader, else 0',
      registers,
    });
    this.leader.set(0);
    this.leaderChanges = new Counter({
      name: 'cometkms_leader_changes_total',
      help: 'Leadership changes this node has seen',
      registers,
    });
    this.linkUp = new Gauge({
      name: 'cometkms_validator_link_up',
      help: '1 while the link to a validator endpoint has completed its handshake, else 0',
      labelNames: ['chain', 'addr'],
      registers,
    });
    this.reconnects = new Counter({
      name: 'cometkms_validator_reconnects_total',
      help: 'Reconnections to a validator endpoint',
      labelNames: ['chain', 'addr'],
      registers,
    });
    this.hsmErrors = new Counter({
      name: 'cometkms_hsm_errors_total',
      help: 'HSM operations that failed',
      registers,
    });
    this.etcdLatency = new Histogram({
      name: 'cometkms_etcd_call_duration_seconds',
      help: 'Duration of etcd calls, by operation',
      labelNames: ['op'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.etcdFailures = new Counter({
      name: 'cometkms_etcd_call_failures_total',
      help: 'etcd calls that failed, by operation',
      labelNames: ['op'],
      registers,
    });
    this.stateAlarms = new Gauge({
      name: 'cometkms_state_alarm',
      help:
        "1 while a chain's sign state needs an operator (missing, below this node's high-water mark, " +
        'unreadable or changed behind the node): nothing is signed for it; else 0',
      labelNames: ['chain_id'],
      registers,
    });
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** Accounts for one guard decision (call it from the guard's `onDecision`). */
  observeDecision(d: GuardDecision): void {
    const chain = d.chainId;
    const type = decisionTypeLabel(d);
    this.signRequests.inc({ chain, type, outcome: d.outcome });
    if (d.hsmMs !== undefined) this.hsmLatency.observe({ chain }, d.hsmMs / 1000);
    const reason = doubleSignReason(d);
    if (reason !== undefined) this.doubleSignRefused.inc({ chain, reason });
    if (!SIGNATURE_RETURNED.has(d.outcome)) return;
    this.signLatency.observe({ chain }, d.latencyMs / 1000);
    if (d.height !== undefined && d.round !== undefined && d.step !== undefined) {
      this.lastHeight.set({ chain }, Number(d.height));
      this.lastRound.set({ chain }, d.round);
      this.lastStep.set({ chain }, d.step);
    }
    if (type === 'prevote' || type === 'precommit') {
      let byType = this.lastVoteAt.get(chain);
      if (byType === undefined) {
        byType = new Map();
        this.lastVoteAt.set(chain, byType);
      }
      byType.set(type, performance.now());
    }
  }

  /** Sets the state alarm gauge of `chainId`. */
  stateAlarm(chainId: string, raised: boolean): void {
    this.stateAlarms.set({ chain_id: chainId }, raised ? 1 : 0);
  }

  /** Sets the leader gauge. */
  setLeader(isLeader: boolean): void {
    this.leader.set(isLeader ? 1 : 0);
  }

  /** Counts one leadership change. */
  leaderChanged(): void {
    this.leaderChanges.inc();
  }

  /** Marks the link to a validator endpoint up (handshake completed) or down. */
  validatorLink(chainId: string, addr: string, up: boolean): void {
    this.linkUp.set({ chain: chainId, addr }, up ? 1 : 0);
  }

  /** Counts one reconnection to a validator endpoint. */
  validatorReconnect(chainId: string, addr: string): void {
    this.reconnects.inc({ chain: chainId, addr });
  }

  /** Counts one forwarded request by its result (e.g. `ok`, `no_leader`, `error`). */
  forwarded(result: string): void {
    this.forwards.inc({ result });
  }

  /** Counts one failed HSM operation. */
  hsmError(): void {
    this.hsmErrors.inc();
  }

  /** Records one etcd call: its duration, and a failure when `ok` is false. */
  etcdCall(op: string, ms: number, ok: boolean): void {
    this.etcdLatency.observe({ op }, ms / 1000);
    if (!ok) this.etcdFailures.inc({ op });
  }
}
