import { createHash } from 'node:crypto';
import { bytesEqual } from '../cometbft/bytes.ts';
import { validatorAddress } from '../cometbft/keys.ts';
import {
  assertWellFormedReply,
  refusedProposal,
  refusedPubKey,
  refusedSignBytes,
  refusedVote,
  tryAgain,
} from '../cometbft/replies.ts';
import { boundText } from '../cometbft/text.ts';
import {
  compareHRS,
  type PrivvalMessage,
  type ProtocolVersion,
  Step,
  type Timestamp,
} from '../cometbft/types.ts';
import { verifySignature } from '../cometbft/verify.ts';
import type { RequestContext, RequestHandler } from '../privval/handler.ts';
import { NO_STAGES, type SignStage, type StageObserver } from '../stages.ts';
import {
  NotLeaderError,
  PeerQuorumError,
  StateMissingError,
  StateRegressionError,
  StateStoreError,
} from '../store/errors.ts';
import type { SignState, SignStateStore } from '../store/types.ts';
import {
  type ChainRules,
  checkAdvance,
  decide,
  type RefusalCode,
  type ReplyTemplate,
  type SignRequest,
  type Verdict,
  voteStep,
} from './decide.ts';
import { type DecisionKind, type GuardDecision, type RetryCode, STATE_ALARM_CODES } from './decision.ts';
import { AsyncMutex } from './mutex.ts';
import type { Signer } from './signer.ts';

/** Options of a {@link ChainGuard}. */
export interface ChainGuardOptions {
  chainId: string;
  protocol: ProtocolVersion;
  signer: Signer;
  store: SignStateStore;
  /** refuse a height more than this above the last reserved one */
  maxHeightJump: number;
  /** refuse a vote whose non-empty `validator_address` is not the key's address (default true) */
  checkValidatorAddress?: boolean;
  /** called once per handled request; exceptions it throws are swallowed */
  onDecision?: (decision: GuardDecision) => void;
  /** called when a signature could not be recorded after signing (never fatal for ed25519) */
  onRecordFailure?: (reason: string) => void;
  /** called when the chain's state alarm is raised (with it) or cleared (undefined) */
  onAlarm?: (alarm: StateAlarm | undefined) => void;
  /** a monotonic clock in milliseconds (default `performance.now`) */
  now?: () => number;
  /** receives the duration of each stage of a signing request (src/stages.ts) */
  stages?: StageObserver;
  /** simulator only: see {@link GuardPlantedBugs} */
  plantedBugs?: GuardPlantedBugs;
}

/**
 * Protections the deterministic simulator can switch off, one at a time, to prove that its
 * checker notices (`npm run sim -- --plant-bug NAME`). Nothing in the product sets them: only the
 * simulator's node builder passes this option.
 */
export interface GuardPlantedBugs {
  /** sign a new HRS's bytes before the store confirmed their reservation */
  signBeforeReserve?: boolean;
}

/** Why this chain's state needs an operator, while it does. */
export interface StateAlarm {
  code: RetryCode;
  reason: string;
}

/**
 * How many compare-and-set reservations one request may attempt before it gives up and asks
 * the node to retry. Each failed attempt means another writer moved the state on; deciding
 * again against the new state is cheap, but an unbounded loop is never right.
 */
const MAX_RESERVE_ATTEMPTS = 3;

const EMPTY = new Uint8Array();

/** An unsure outcome: becomes an empty Message so that the node re-sends the request. */
class Retry extends Error {
  constructor(
    readonly code: RetryCode,
    message: string,
  ) {
    super(message);
  }
}

/** What one request contributes to its {@link GuardDecision}. */
interface Trace {
  type?: number;
  height?: bigint;
  round?: number;
  step?: number;
  signBytes?: Uint8Array;
  hsmMs?: number;
  /** who asked (endpoint, remote node, forwarding node): named in the decision, never decides it */
  context?: RequestContext;
}

/** A request's result before it becomes a reply and a decision. */
type Result =
  | { outcome: 'signed' | 'resigned' | 'timestamp_only' | 'served'; reply: PrivvalMessage }
  | { outcome: 'refused'; code: RefusalCode; reason: string }
  | { outcome: 'retry'; code: RetryCode; reason: string };

/**
 * The HRS guard of one (chain, key). It carries out what the pure rule `decide()` (decide.ts)
 * says: reserve the new HRS and its exact sign bytes durably, sign in the HSM, verify, record,
 * reply. It never chooses bytes to sign itself: it signs only what a verdict names, and only
 * after the store confirmed the reservation the verdict asked for (ARCHITECTURE §1–§2).
 *
 * One instance serves every validator endpoint of the chain; its requests are serialised, so
 * requests from several sentries at once are decided one after another against an up-to-date
 * state. Across processes, the store's compare-and-set reservation keeps two writers from both
 * winning one HRS.
 *
 * Replies: a signed response; a refusal (the expected response type with a zero vote/proposal
 * and `error{code: 0}`), which is final; or an empty Message when the outcome is unsure (no
 * usable state, store, HSM or verification failure), which makes the node retry.
 */
export class ChainGuard implements RequestHandler {
  private readonly rules: ChainRules;
  private readonly signer: Signer;
  private readonly store: SignStateStore;
  private readonly onDecision: ((decision: GuardDecision) => void) | undefined;
  private readonly onRecordFailure: ((reason: string) => void) | undefined;
  private readonly onAlarm: ((alarm: StateAlarm | undefined) => void) | undefined;
  private readonly now: () => number;
  private readonly stages: StageObserver;
  /**
   * secp256k1 signatures are recorded durably before they are returned: ECDSA from an HSM is
   * randomised, so a retry must get the recorded signature back rather than a new one (peers
   * drop a second, different valid signature for one vote). ed25519 re-signs identically.
   */
  private readonly durableRecords: boolean;
  private readonly mutex = new AsyncMutex();
  private readonly bugs: GuardPlantedBugs;
  /**
   * The last state this guard knows the store to hold (loaded, reserved by us, or returned by a
   * failed compare-and-set). It never moves backwards. `undefined` until a load succeeds.
   */
  private state: SignState | undefined;
  /** set while the stored state needs an operator; every signing request re-checks the store */
  private stateAlarm: StateAlarm | undefined;

  constructor(options: ChainGuardOptions) {
    this.rules = {
      chainId: options.chainId,
      protocol: options.protocol,
      maxHeightJump: options.maxHeightJump,
      ...((options.checkValidatorAddress ?? true)
        ? { validatorAddress: validatorAddress(options.signer.pubKey) }
        : {}),
    };
    this.signer = options.signer;
    this.store = options.store;
    this.durableRecords = options.signer.pubKey.type === 'secp256k1';
    this.onDecision = options.onDecision;
    this.onRecordFailure = options.onRecordFailure;
    this.onAlarm = options.onAlarm;
    this.now = options.now ?? (() => performance.now());
    this.stages = options.stages ?? NO_STAGES;
    this.bugs = options.plantedBugs ?? {};
  }

  get chainId(): string {
    return this.rules.chainId;
  }

  /**
   * Loads the chain's state from the store. A missing or unusable state does not throw: it
   * raises the chain's {@link alarm} and every signing request is answered "try again" until the
   * store holds a usable state again. Any other store failure throws.
   */
  async init(): Promise<void> {
    await this.mutex.run(async () => {
      try {
        await this.reload();
      } catch (err) {
        if (!(err instanceof Retry) || !STATE_ALARM_CODES.has(err.code)) throw err;
      }
    });
  }

  /** A copy of the last state this guard knows of; undefined while it has none. */
  lastState(): SignState | undefined {
    const s = this.state;
    if (s === undefined) return undefined;
    return {
      ...s,
      signBytes: s.signBytes.slice(),
      extensionSignBytes: s.extensionSignBytes.slice(),
      signature: s.signature.slice(),
    };
  }

  /** Why the chain's state needs an operator, or undefined when it is usable. */
  alarm(): StateAlarm | undefined {
    return this.stateAlarm;
  }

  /**
   * Answers one privval request (spec §8): PubKey, SignVote and SignProposal as described on the
   * class; SignBytes is refused; Ping gets a PingResponse; anything else an empty Message.
   */
  async handle(request: PrivvalMessage, context?: RequestContext): Promise<PrivvalMessage> {
    switch (request.kind) {
      case 'pubKeyRequest':
        return this.process('pubkey', refusedPubKey, { context }, async () => this.pubKey(request.chainId));
      case 'signVoteRequest':
      case 'signProposalRequest': {
        const trace: Trace = { context };
        const kind = request.kind === 'signVoteRequest' ? 'vote' : 'proposal';
        const refuse = kind === 'vote' ? refusedVote : refusedProposal;
        const queued = this.now();
        return this.process(kind, refuse, trace, () =>
          this.mutex.run(() => {
            this.stage('queue', queued);
            return this.sign(request, trace);
          }),
        );
      }
      case 'signBytesRequest':
        // v1.0 SignBytes signs arbitrary bytes as they are, with no HRS check. With a validator
        // key those bytes could be the canonical sign bytes of a conflicting vote or proposal,
        // so serving it would be a way around every guard rule. CometKMS never does.
        return this.process('sign_bytes', refusedSignBytes, { context }, async () => ({
          outcome: 'refused',
          code: 'sign_bytes_refused',
          reason: 'unable to sign bytes: CometKMS does not sign arbitrary bytes with a validator key',
        }));
      case 'pingRequest':
        return { kind: 'pingResponse' };
      default:
        return tryAgain();
    }
  }

  /** Runs `body`, turns its result into the reply, checks the reply's shape and reports. */
  private async process(
    kind: DecisionKind,
    refuse: (description: string) => PrivvalMessage,
    trace: Trace,
    body: () => Promise<Result>,
  ): Promise<PrivvalMessage> {
    const start = this.now();
    let result: Result;
    try {
      result = await body();
    } catch (err) {
      result =
        err instanceof Retry
          ? { outcome: 'retry', code: err.code, reason: err.message }
          : { outcome: 'retry', code: 'store_unavailable', reason: describe(err) };
    }
    let reply: PrivvalMessage;
    if (result.outcome === 'refused') reply = refuse(result.reason);
    else if (result.outcome === 'retry') reply = tryAgain();
    else reply = result.reply;
    try {
      assertWellFormedReply(reply);
    } catch (err) {
      // Never reached by a correct guard; the node must still never see such a reply.
      result = { outcome: 'retry', code: 'signature_invalid', reason: describe(err) };
      reply = tryAgain();
    }
    const reported = this.now();
    this.report(kind, result, trace, reported - start);
    if (kind === 'vote' || kind === 'proposal') this.stage('report', reported);
    return reply;
  }

  /** Observes the time since `since` as `stage`; returns the current time. */
  private stage(stage: SignStage, since: number): number {
    const now = this.now();
    this.stages.observe(stage, now - since);
    return now;
  }

  private async pubKey(chainId: string): Promise<Result> {
    if (chainId !== this.rules.chainId) {
      const text =
        this.rules.protocol === 'v1.0'
          ? 'unable to provide pubkey type and bytes'
          : 'unable to provide pubkey';
      return {
        outcome: 'refused',
        code: 'pubkey_chain_id_mismatch',
        reason: `${text}: chain id mismatch: got ${boundText(chainId)}, want ${this.rules.chainId}`,
      };
    }
    return { outcome: 'served', reply: { kind: 'pubKeyResponse', pubKey: this.signer.pubKey } };
  }

  /**
   * Decide → (reserve) → sign → verify → record, under the mutex. The signer only ever sees
   * bytes a verdict named: `next.signBytes` after `reserve` resolved `{ok: true}`, or the bytes
   * already reserved at the requested HRS.
   */
  private async sign(request: SignRequest, trace: Trace): Promise<Result> {
    let last = await this.usableState();
    for (let attempt = 0; attempt < MAX_RESERVE_ATTEMPTS; attempt++) {
      const decideStart = this.now();
      const verdict = decide(last, request, this.rules);
      this.stage('decide', decideStart);
      traceVerdict(trace, request, verdict);
      switch (verdict.action) {
        case 'refuse':
          return { outcome: 'refused', code: verdict.code, reason: verdict.text };
        case 'sign_reserved':
          return await this.signReserved(last, verdict);
        case 'reserve': {
          if (this.bugs.signBeforeReserve) await this.hsmSign(verdict.next.signBytes, trace);
          const result = await this.reserve(last, verdict.next);
          if (result.ok) {
            this.state = verdict.next;
            return await this.signNew(verdict, trace);
          }
          this.adopt(last, result.current);
          last = result.current;
        }
      }
    }
    throw new Retry('contention', `state still changing after ${MAX_RESERVE_ATTEMPTS} reservation attempts`);
  }

  /**
   * The new reservation is durable: sign exactly its bytes, wait for what must be durable before
   * a signature may be returned (the store started it with the reservation, so it overlapped the
   * signing), record, reply.
   */
  private async signNew(verdict: Extract<Verdict, { action: 'reserve' }>, trace: Trace): Promise<Result> {
    const { next } = verdict;
    const [signature, extensionSignature] = await this.signBoth(
      next.signBytes,
      next.extensionSignBytes,
      trace,
    );
    await this.readyToReturn(next);
    await this.record(next, signature);
    return { outcome: 'signed', reply: signedReply(verdict.reply, signature, extensionSignature) };
  }

  /**
   * The same HRS as `last`, asking for what is reserved there (spec §7.2 step 4, invariant 2):
   * the recorded signature when it verifies, else a new signature over the reserved bytes (a
   * crash or HSM failure between reserve and record; ed25519 gives the same signature again,
   * and a second ECDSA signature over identical bytes is not equivocation).
   */
  private async signReserved(
    last: SignState,
    verdict: Extract<Verdict, { action: 'sign_reserved' }>,
  ): Promise<Result> {
    let signature = verdict.recorded;
    let extensionSignature: Uint8Array;
    const recorded = this.verifies(verdict.signBytes, signature);
    if (recorded) {
      extensionSignature = await this.signExtension(verdict.extensionSignBytes, {});
    } else {
      [signature, extensionSignature] = await this.signBoth(
        verdict.signBytes,
        verdict.extensionSignBytes,
        {},
      );
    }
    await this.readyToReturn(last);
    if (!recorded) await this.record(last, signature);
    return {
      outcome: verdict.outcome,
      reply: signedReply(verdict.reply, signature, extensionSignature, verdict.timestamp),
    };
  }

  /** The store's compare-and-set; its failures become retries (and alarms for unusable state). */
  private async reserve(expected: SignState, next: SignState) {
    const start = this.now();
    try {
      const result = await this.store.reserve(this.rules.chainId, expected, next);
      this.stage('reserve', start);
      this.setAlarm(undefined);
      return result;
    } catch (err) {
      // Unknown whether it was applied. Nothing is signed; if it was applied, the node's retry
      // finds our own reservation (a failed compare-and-set returning it) and signs exactly
      // those bytes then.
      throw this.storeFailure(err, 'reserve');
    }
  }

  /**
   * Records `signature` for `reserved`. For secp256k1 the record must be durable before the
   * signature is returned, so its failure is a retry; for ed25519 it is bookkeeping (the
   * reservation already binds the HRS and the bytes re-sign identically), so a failure is only
   * reported.
   */
  private async record(reserved: SignState, signature: Uint8Array): Promise<void> {
    const start = this.now();
    try {
      await this.store.recordSignature(this.rules.chainId, reserved, signature, {
        durable: this.durableRecords,
      });
      this.stage('record', start);
    } catch (err) {
      if (this.durableRecords) throw new Retry('record_failed', `signature not recorded: ${describe(err)}`);
      try {
        this.onRecordFailure?.(`signature not recorded: ${describe(err)}`);
      } catch {
        // a failing observer must not disturb signing
      }
      return;
    }
    const s = this.state;
    if (s !== undefined && compareHRS(s, reserved) === 0 && bytesEqual(s.signBytes, reserved.signBytes)) {
      this.state = { ...s, signature };
    }
  }

  /**
   * Waits until the store holds durably everything a returned signature over `reserved` relies
   * on (reserve-before-sign covers the reservation itself; see SignStateStore.readyToReturn).
   * Its failure is a retry: the signature is not returned.
   */
  private async readyToReturn(reserved: SignState): Promise<void> {
    const start = this.now();
    try {
      await this.store.readyToReturn(this.rules.chainId, reserved);
    } catch (err) {
      throw this.storeFailure(err, 'making the reservation durable before returning its signature');
    }
    this.stage('seal', start);
  }

  /** The known state, re-read from the store while it is missing or alarmed. */
  private async usableState(): Promise<SignState> {
    if (this.state !== undefined && this.stateAlarm === undefined) return this.state;
    return await this.reload();
  }

  /**
   * Reads the chain's state from the store: the known state's replacement, which must not be
   * behind it (invariant 5). Missing or unusable: raises the alarm and throws a Retry.
   */
  private async reload(): Promise<SignState> {
    let loaded: SignState | undefined;
    try {
      loaded = await this.store.load(this.rules.chainId);
    } catch (err) {
      throw this.storeFailure(err, 'load');
    }
    if (loaded === undefined) {
      throw this.raise(
        'state_missing',
        `chain ${this.rules.chainId} has no sign state: a missing state is never read as an empty one`,
      );
    }
    if (this.state !== undefined) this.adopt(this.state, loaded);
    this.state = loaded;
    this.setAlarm(undefined);
    return loaded;
  }

  /** Takes `observed` (from the store) as the known state if it moves forward from `known`. */
  private adopt(known: SignState, observed: SignState): void {
    const advance = checkAdvance(known, observed);
    if (!advance.ok) throw this.raise('state_regression', advance.text);
    this.state = observed;
  }

  /** Sets the state alarm and returns the Retry that carries it. */
  private raise(code: RetryCode, reason: string): Retry {
    this.setAlarm({ code, reason });
    return new Retry(code, reason);
  }

  /** Changes the alarm, telling `onAlarm` when it is raised, changes or clears. */
  private setAlarm(alarm: StateAlarm | undefined): void {
    const was = this.stateAlarm;
    this.stateAlarm = alarm;
    if (was?.code === alarm?.code && was?.reason === alarm?.reason) return;
    try {
      this.onAlarm?.(alarm);
    } catch {
      // an observer's failure must not disturb signing
    }
  }

  /** A store failure as a Retry; the unusable-state kinds also raise the alarm. */
  private storeFailure(err: unknown, op: string): Retry {
    const reason = `${op} failed: ${describe(err)}`;
    if (err instanceof StateMissingError) return this.raise('state_missing', reason);
    if (err instanceof StateRegressionError) return this.raise('state_regression', reason);
    if (err instanceof StateStoreError) return this.raise('state_unusable', reason);
    if (err instanceof NotLeaderError) return new Retry('not_leader', reason);
    if (err instanceof PeerQuorumError) return new Retry('no_peer_quorum', reason);
    return new Retry('store_unavailable', reason);
  }

  /** Signs `bytes` (if any) with no state change: extension sign bytes only. */
  private async signExtension(bytes: Uint8Array, trace: Trace): Promise<Uint8Array> {
    return bytes.length === 0 ? EMPTY : this.hsmSign(bytes, trace);
  }

  /**
   * Signs `bytes` and the extension sign bytes, when there are any, and verifies both. Both go to
   * the signer at once: it starts on the extension as soon as the first signature is done, before
   * this continuation runs (its queue hands over within fewer microtask turns than the result
   * takes to come back here), so the token signs the extension while the first signature is
   * verified, and a v0.38 precommit has two HSM signatures but only one verification on its
   * critical path. Signing the extension bytes before the first signature is verified is safe:
   * they are reserved with it, and nothing is returned unless both verify. (No thread pool or
   * timer is involved, so the deterministic simulator sees the same steps.)
   */
  private async signBoth(
    bytes: Uint8Array,
    extensionBytes: Uint8Array,
    trace: Trace,
  ): Promise<[Uint8Array, Uint8Array]> {
    if (extensionBytes.length === 0) return [await this.hsmSign(bytes, trace), EMPTY];
    const start = this.now();
    const first = this.signer.sign(bytes);
    // Queued behind the first on the signer; awaited below unless the first fails.
    const second = this.signer.sign(extensionBytes);
    second.catch(() => undefined);
    const signature = this.verified(bytes, await this.signed(first, start, trace));
    const extensionSignature = await this.signed(second, this.now(), trace);
    return [signature, this.verified(extensionBytes, extensionSignature)];
  }

  /** Signs in the HSM and verifies here too (defence in depth). Any failure: try again. */
  private async hsmSign(bytes: Uint8Array, trace: Trace): Promise<Uint8Array> {
    const start = this.now();
    return this.verified(bytes, await this.signed(this.signer.sign(bytes), start, trace));
  }

  /** The signature `op` yields (its failure is a retry), timed as stage `hsm` from `since`. */
  private async signed(op: Promise<Uint8Array>, since: number, trace: Trace): Promise<Uint8Array> {
    try {
      return await op;
    } catch (err) {
      throw new Retry('signer_failed', `signer failed: ${describe(err)}`);
    } finally {
      const now = this.stage('hsm', since);
      trace.hsmMs = (trace.hsmMs ?? 0) + (now - since);
    }
  }

  /** `signature` once it verifies over `bytes` under the key; otherwise a retry. */
  private verified(bytes: Uint8Array, signature: Uint8Array): Uint8Array {
    const start = this.now();
    const valid = this.verifies(bytes, signature);
    this.stage('verify', start);
    if (!valid) throw invalidSignature();
    return signature;
  }

  private verifies(message: Uint8Array, signature: Uint8Array): boolean {
    if (signature.length === 0) return false;
    try {
      return verifySignature(this.signer.pubKey, message, signature);
    } catch {
      return false;
    }
  }

  private report(kind: DecisionKind, result: Result, trace: Trace, latencyMs: number): void {
    if (this.onDecision === undefined) return;
    const decision: GuardDecision = {
      chainId: this.rules.chainId,
      kind,
      outcome: result.outcome,
      latencyMs,
      ...trace.context,
    };
    if (trace.type !== undefined) decision.type = trace.type;
    if (trace.height !== undefined) decision.height = trace.height;
    if (trace.round !== undefined) decision.round = trace.round;
    if (trace.step !== undefined) decision.step = trace.step;
    if (result.outcome === 'refused' || result.outcome === 'retry') {
      decision.code = result.code;
      decision.reason = result.reason;
    }
    if (trace.signBytes !== undefined) {
      decision.signBytesSha256 = createHash('sha256').update(trace.signBytes).digest('hex');
    }
    if (trace.hsmMs !== undefined) decision.hsmMs = trace.hsmMs;
    try {
      this.onDecision(decision);
    } catch {
      // An observer's failure must not change what the node is told.
    }
  }
}

/** What the decision of `request` reports: its type and HRS, and the bytes a signature covers. */
function traceVerdict(trace: Trace, request: SignRequest, verdict: Verdict): void {
  const payload = request.kind === 'signVoteRequest' ? request.vote : request.proposal;
  if (payload !== undefined) {
    // A refusal names its step too (audit log, metrics), whenever the request has one.
    const step = request.kind === 'signVoteRequest' ? voteStep(payload.type) : Step.Propose;
    Object.assign(trace, { type: payload.type, height: payload.height, round: payload.round, step });
  }
  if (verdict.action === 'refuse') return;
  trace.step = verdict.hrs.step;
  // What goes out is a signature over these bytes: for a timestamp-only answer the reserved
  // ones, which is what the audit log (and `audit check`) must name.
  trace.signBytes = verdict.action === 'reserve' ? verdict.next.signBytes : verdict.signBytes;
}

/**
 * The signed response for `template`. The echoed vote extension is left out: the node ignores it
 * (spec §1.2), and leaving it out keeps the reply under the 10240-byte limit whatever its size.
 * A v0.38+ node panics on an extension signature for a prevote or nil precommit, and on a missing
 * one for a non-nil precommit when it signs extensions: decide() only names extension bytes when
 * the extension policy is "sign", so `extensionSignature` is present exactly then.
 */
function signedReply(
  template: ReplyTemplate,
  signature: Uint8Array,
  extensionSignature: Uint8Array,
  timestamp?: Timestamp,
): PrivvalMessage {
  if (template.kind === 'vote') {
    const vote = template.vote;
    return {
      kind: 'signedVoteResponse',
      vote: {
        ...vote,
        timestamp: timestamp ?? vote.timestamp,
        signature,
        extension: EMPTY,
        extensionSignature,
      },
    };
  }
  const proposal = template.proposal;
  return {
    kind: 'signedProposalResponse',
    proposal: { ...proposal, timestamp: timestamp ?? proposal.timestamp, signature },
  };
}

function invalidSignature(): Retry {
  return new Retry('signature_invalid', 'signature from the signer failed verification');
}

function describe(err: unknown): string {
  return boundText(err instanceof Error ? err.message : String(err), 1024);
}
