/**
 * The Prometheus metrics of one CometKMS node. Every metric lives on the node's own Registry,
 * never prom-client's global one, so several nodes can run in one process (tests, `demo`)
 * without their series colliding.
 *
 * Two rules keep dashboards and alerts honest:
 * - Every labelled series a node can ever export for its configured chains, endpoints and
 *   (cluster) etcd operations and forwarding results exists from the start, at 0. A counter
 *   that first appears at 1 is invisible to `increase()`, so the first double-sign attempt
 *   after a restart would raise no alert.
 * - The last signed HRS and its time are read from the node's stored sign state at scrape time,
 *   so they are right straight after a start (before any new signature), and in a cluster every
 *   node, follower or leader, reports the replicated state it sees.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { decodeCanonicalProposal, decodeCanonicalVote } from '../cometbft/signbytes.ts';
import { SignedMsgType, Step } from '../cometbft/types.ts';
import { isDoubleSignRefusal } from '../guard/decide.ts';
import type { DecisionOutcome, GuardDecision } from '../guard/decision.ts';
import type { SignState } from '../store/types.ts';
import { VERSION } from '../version.ts';
import { StageHistogram } from './stage-histogram.ts';

/** Latency buckets in seconds: 0.1 ms (a bare SoftHSM sign) up to 1 s (a stuck etcd). */
export const LATENCY_BUCKETS_S = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/** Outcomes for which a signature went back to the validator node. */
const SIGNATURE_RETURNED = new Set<GuardDecision['outcome']>(['signed', 'resigned', 'timestamp_only']);

/**
 * The (type, outcome) pairs of `cometkms_sign_requests_total` a guard can produce, created at 0
 * for every chain. Votes and proposals can end any way but `served`; a public key request is
 * served, refused (wrong chain id) or retried; a SignBytes request is always refused.
 */
const REQUEST_SERIES: ReadonlyArray<[string, readonly DecisionOutcome[]]> = [
  ...(['prevote', 'precommit', 'proposal'] as const).map((type): [string, DecisionOutcome[]] => [
    type,
    ['signed', 'resigned', 'timestamp_only', 'refused', 'retry'],
  ]),
  ['pubkey', ['served', 'refused', 'retry']],
  ['sign_bytes', ['refused']],
];

/** The `reason` label values of `cometkms_double_sign_refused_total`: the guard's refusal codes. */
const DOUBLE_SIGN_REASONS = [
  'height_regression',
  'round_regression',
  'step_regression',
  'conflicting_data',
  'conflicting_extension',
] as const;

/**
 * Every result a follower reports for a forwarded request (cluster/cluster-handler.ts): the
 * leader's outcome, a local failure, or what the follower made of the reply. Created at 0.
 */
export const FORWARD_RESULTS = [
  'ok',
  'leader_retry',
  'bad_reply',
  'not_leader',
  'unknown_chain',
  'bad_request',
  'overloaded',
  'failed',
  'no_leader',
  'unavailable',
  'timeout',
  'leader_changed',
] as const;

/** Every etcd operation the store and the leadership report (created at 0 in cluster mode). */
export const ETCD_OPS = [
  'reserve',
  'record',
  'state_read',
  'campaign',
  'handover',
  'lease_grant',
  'lease_revoke',
  'lease_keepalive',
] as const;

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

/**
 * The time inside the sign bytes of `state` (the timestamp the validator node put in the vote or
 * proposal), in Unix seconds; undefined for a state without sign bytes or with a zero time.
 */
export function signedAtSeconds(state: SignState): number | undefined {
  if (state.signBytes.length === 0) return undefined;
  try {
    const ts =
      state.step === Step.Propose
        ? decodeCanonicalProposal(state.signBytes).timestamp
        : decodeCanonicalVote(state.signBytes).timestamp;
    if (ts.seconds <= 0n) return undefined;
    return Number(ts.seconds) + ts.nanos / 1e9;
  } catch {
    return undefined;
  }
}

/** What the metrics read from the running node at scrape time (kept cheap: no I/O). */
export interface NodeMetricsView {
  /** the last reserved state of a configured chain that this node knows of; undefined while unknown */
  chainState(chainId: string): SignState | undefined;
  /** the HSM answered the last operation */
  hsmUp(): boolean;
  /** cluster mode only: etcd answered the last full read */
  etcdUp?(): boolean;
}

/** The node as {@link Metrics.declareNode} needs it. */
export interface NodeMetricsInfo {
  nodeId: string;
  mode: 'single' | 'cluster';
  chains: ReadonlyArray<{ id: string; validators: ReadonlyArray<{ addr: string }> }>;
}

/** Options of {@link Metrics}. */
export interface MetricsOptions {
  /** also export prom-client's process metrics (CPU, RSS, event loop lag); default true */
  processMetrics?: boolean;
}

/**
 * The metrics of one node; the runtime reports events, `/metrics` renders {@link registry}.
 * Call {@link declareNode} once the config is known, before the admin API serves.
 */
export class Metrics {
  /** this node's registry (render it with `registry.metrics()`) */
  readonly registry = new Registry();
  /**
   * `cometkms_sign_stage_duration_seconds{stage}`: hand it to the guards, sessions and the
   * forwarder as their stage observer (every stage is exported from the start, at 0).
   */
  readonly stages = new StageHistogram();

  private readonly signRequests: Counter<'chain_id' | 'type' | 'outcome'>;
  private readonly signLatency: Histogram<'chain_id'>;
  private readonly hsmLatency: Histogram<'chain_id'>;
  private readonly doubleSignRefused: Counter<'chain_id' | 'reason'>;
  private readonly stateAlarms: Gauge<'chain_id'>;
  private readonly forwards: Counter<'result'>;
  private readonly leader: Gauge;
  private readonly leaderChanges: Counter;
  private readonly leaderPreemptions: Counter;
  private readonly connected: Gauge<'chain_id' | 'addr'>;
  private readonly reconnects: Counter<'chain_id' | 'addr'>;
  private readonly hsmErrors: Counter;
  private readonly etcdLatency: Histogram<'op'>;
  private readonly etcdFailures: Counter<'op'>;
  /** set by declareNode; the scrape-time gauges read it */
  private node: { info: NodeMetricsInfo; view: NodeMetricsView } | undefined;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    this.signRequests = new Counter({
      name: 'cometkms_sign_requests_total',
      help: 'Requests decided by the HRS guard, by chain, type (prevote, precommit, proposal, pubkey, sign_bytes) and outcome',
      labelNames: ['chain_id', 'type', 'outcome'],
      registers,
    });
    this.signLatency = new Histogram({
      name: 'cometkms_sign_duration_seconds',
      help: 'Time from a request reaching the guard to its reply, for requests answered with a signature',
      labelNames: ['chain_id'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.hsmLatency = new Histogram({
      name: 'cometkms_hsm_sign_duration_seconds',
      help: 'Time spent in the HSM for requests that called it',
      labelNames: ['chain_id'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.scrapeTimeChainGauges(registers);
    this.stages.register(this.registry);
    this.doubleSignRefused = new Counter({
      name: 'cometkms_double_sign_refused_total',
      help: 'Requests refused because signing them could have been a double sign, by chain and reason',
      labelNames: ['chain_id', 'reason'],
      registers,
    });
    this.stateAlarms = new Gauge({
      name: 'cometkms_state_alarm',
      help: '1 while this node refuses to sign for the chain because the stored state is missing or below what it saw before, else 0',
      labelNames: ['chain_id'],
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
    this.leaderPreemptions = new Counter({
      name: 'cometkms_leader_preemptions_total',
      help: 'Leaders this node found silent on heartbeats and pre-empted (revoked their lease)',
      registers,
    });
    this.connected = new Gauge({
      name: 'cometkms_validator_connected',
      help: '1 while the connection to a validator endpoint has completed its handshake, else 0',
      labelNames: ['chain_id', 'addr'],
      registers,
    });
    this.reconnects = new Counter({
      name: 'cometkms_validator_reconnects_total',
      help: 'Reconnections to a validator endpoint',
      labelNames: ['chain_id', 'addr'],
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
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * The last signed height, round, step and time per chain, and whether the HSM answers: read
   * from the node at scrape time (see the module comment). A chain whose state is not known yet
   * (a cluster node that has not read etcd) has no series rather than a misleading 0.
   */
  private scrapeTimeChainGauges(registers: Registry[]): void {
    const chainStates = (): Array<[string, SignState]> => {
      const node = this.node;
      if (node === undefined) return [];
      const out: Array<[string, SignState]> = [];
      for (const c of node.info.chains) {
        const s = node.view.chainState(c.id);
        if (s !== undefined) out.push([c.id, s]);
      }
      return out;
    };
    const perChain = (name: string, help: string, value: (s: SignState) => number | undefined): void => {
      new Gauge({
        name,
        help,
        labelNames: ['chain_id'],
        registers,
        collect() {
          this.reset();
          for (const [chainId, s] of chainStates()) {
            const v = value(s);
            if (v !== undefined) this.set({ chain_id: chainId }, v);
          }
        },
      });
    };
    perChain(
      'cometkms_last_signed_height',
      'Height of the last reserved (signed) state of the chain, as stored (exact below 2^53)',
      (s) => Number(s.height),
    );
    perChain(
      'cometkms_last_signed_round',
      'Round of the last reserved (signed) state of the chain',
      (s) => s.round,
    );
    perChain(
      'cometkms_last_signed_step',
      'Step of the last reserved (signed) state of the chain (1 propose, 2 prevote, 3 precommit)',
      (s) => s.step,
    );
    perChain(
      'cometkms_last_signed_timestamp_seconds',
      'Unix time in the last reserved (signed) vote or proposal of the chain (the validator node’s timestamp)',
      signedAtSeconds,
    );
    const hsmUp = (): number | undefined => {
      if (this.node === undefined) return undefined;
      return this.node.view.hsmUp() ? 1 : 0;
    };
    new Gauge({
      name: 'cometkms_hsm_up',
      help: '1 while the HSM answered the last operation, else 0',
      registers,
      collect() {
        const up = hsmUp();
        if (up !== undefined) this.set(up);
      },
    });
  }

  /**
   * Declares the running node: `cometkms_build_info`, the scrape-time gauges read from `view`,
   * and every labelled series of every configured chain, endpoint and (cluster) etcd operation
   * and forwarding result, at 0. Call once, before the admin API serves.
   */
  declareNode(info: NodeMetricsInfo, view: NodeMetricsView): void {
    if (this.node !== undefined) throw new Error('Metrics.declareNode called twice');
    this.node = { info, view };
    new Gauge({
      name: 'cometkms_build_info',
      help: 'Always 1; the labels carry the CometKMS version, node id and mode',
      labelNames: ['version', 'node_id', 'mode'],
      registers: [this.registry],
    }).set({ version: VERSION, node_id: info.nodeId, mode: info.mode }, 1);
    for (const chain of info.chains) {
      const chain_id = chain.id;
      for (const [type, outcomes] of REQUEST_SERIES) {
        for (const outcome of outcomes) this.signRequests.inc({ chain_id, type, outcome }, 0);
      }
      for (const reason of DOUBLE_SIGN_REASONS) this.doubleSignRefused.inc({ chain_id, reason }, 0);
      this.signLatency.zero({ chain_id });
      this.hsmLatency.zero({ chain_id });
      // created at 0 without resetting an alarm a guard raised already
      this.stateAlarms.inc({ chain_id }, 0);
      for (const { addr } of chain.validators) {
        this.connected.set({ chain_id, addr }, 0);
        this.reconnects.inc({ chain_id, addr }, 0);
      }
    }
    if (info.mode !== 'cluster') return;
    for (const result of FORWARD_RESULTS) this.forwards.inc({ result }, 0);
    for (const op of ETCD_OPS) {
      this.etcdLatency.zero({ op });
      this.etcdFailures.inc({ op }, 0);
    }
    new Gauge({
      name: 'cometkms_etcd_up',
      help: '1 while etcd answered this node’s last full read of the cluster state, else 0',
      registers: [this.registry],
      collect() {
        this.set(view.etcdUp?.() === true ? 1 : 0);
      },
    });
  }

  /** Accounts for one guard decision (call it from the guard's `onDecision`). */
  observeDecision(d: GuardDecision): void {
    const chain_id = d.chainId;
    this.signRequests.inc({ chain_id, type: decisionTypeLabel(d), outcome: d.outcome });
    if (d.hsmMs !== undefined) this.hsmLatency.observe({ chain_id }, d.hsmMs / 1000);
    const reason = doubleSignReason(d);
    if (reason !== undefined) this.doubleSignRefused.inc({ chain_id, reason });
    if (SIGNATURE_RETURNED.has(d.outcome)) this.signLatency.observe({ chain_id }, d.latencyMs / 1000);
  }

  /** Raises (true) or clears (false) the state alarm of a chain. */
  stateAlarm(chainId: string, on: boolean): void {
    this.stateAlarms.set({ chain_id: chainId }, on ? 1 : 0);
  }

  /** Sets the leader gauge. */
  setLeader(isLeader: boolean): void {
    this.leader.set(isLeader ? 1 : 0);
  }

  /** Counts one leadership change. */
  leaderChanged(): void {
    this.leaderChanges.inc();
  }

  /** Counts a leader this node found silent and pre-empted (revoked its lease). */
  leaderPreempted(): void {
    this.leaderPreemptions.inc();
  }

  /** Marks the connection to a validator endpoint up (handshake completed) or down. */
  validatorConnected(chainId: string, addr: string, up: boolean): void {
    this.connected.set({ chain_id: chainId, addr }, up ? 1 : 0);
  }

  /** Counts one reconnection to a validator endpoint. */
  validatorReconnect(chainId: string, addr: string): void {
    this.reconnects.inc({ chain_id: chainId, addr });
  }

  /** Counts one forwarded request by its result (one of {@link FORWARD_RESULTS}). */
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
