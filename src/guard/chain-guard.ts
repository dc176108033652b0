import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { bytesEqual } from '../cometbft/bytes.ts';
import { CodecError } from '../cometbft/errors.ts';
import { validatorAddress } from '../cometbft/keys.ts';
import {
  proposalSignBytes,
  timestampOnlyDifference,
  voteExtensionSignBytes,
  voteSignBytes,
} from '../cometbft/signbytes.ts';
import {
  type HRS,
  type PrivvalMessage,
  type ProtocolVersion,
  Step,
  type Timestamp,
  type Vote,
} from '../cometbft/types.ts';
import { verifySignature } from '../cometbft/verify.ts';
import type { RequestContext, RequestHandler } from '../privval/handler.ts';
import type { ReserveResult, SignState, SignStateStore } from '../store/types.ts';
import type { DecisionKind, DecisionOutcome, GuardDecision } from './decision.ts';
import { extensionPolicy } from './extensions.ts';
import { checkHRS, compareHRS, voteStep } from './hrs.ts';
import { AsyncMutex } from './mutex.ts';
import {
  assertWellFormedReply,
  refusedProposal,
  refusedPubKey,
  refusedSignBytes,
  refusedVote,
  tryAgain,
} from './replies.ts';
import type { Signer } from './signer.ts';
import { proposalProblem, type ValidationContext, voteProblem } from './validate.ts';

/** Options of a {@link ChainGuard}. */
export interface ChainGuardOptions {
  chainId: string;
  protocol: ProtocolVersion;
  signer: Signer;
  store: SignStateStore;
  /** refuse a height more than this above the last reserved one (unset: no limit) */
  maxHeightJump?: number;
  /** refuse a vote whose non-empty `validator_address` is not the key's address (default true) */
  checkValidatorAddress?: boolean;
  /** called once per handled request; exceptions it throws are swallowed */
  onDecision?: (decision: GuardDecision) => void;
  /** called when a signature could not be recorded after its reply went out (never fatal) */
  onRecordFailure?: (reason: string) => void;
  /** a monotonic clock in milliseconds (default `performance.now`) */
  now?: () => number;
}

/**
 * How many compare-and-set reservations one request may attempt before it gives up and asks
 * the node to retry. Each failed attempt means another writer moved the state on; deciding
 * again against the new state is cheap, but an unbounded loop is never right.
 */
const MAX_RESERVE_ATTEMPTS = 3;

const EMPTY = new Uint8Array();

/** A final refusal: becomes a RemoteSignerError reply. */
class Refusal extends Error {}

/** An unsure outcome: becomes an empty Message so that the node re-sends the request. */
class TryAgain extends Error {}

/** What is to be signed for one vote or proposal request. */
interface SignJob {
  kind: 'vote' | 'proposal';
  hrs: HRS;
  signBytes: Uint8Array;
  /** empty unless the vote's extension must be signed */
  extensionSignBytes: Uint8Array;
}

/** A successful pass through the pipeline. */
interface Signed {
  outcome: 'signed' | 'resigned' | 'timestamp_only';
  /** the signature over the sign bytes reserved at the job's HRS */
  signature: Uint8Array;
  /** the reserved timestamp, to put in the reply (timestamp-only path) */
  timestamp?: Timestamp;
  /** over the job's extension sign bytes; empty when it had none */
  extensionSignature: Uint8Array;
}

/** What one request contributes to its {@link GuardDecision}. */
interface Trace {
  type?: number;
  height?: bigint;
  round?: number;
  step?: number;
  signBytes?: Uint8Array;
  hsmMs?: number;
  reason?: string;
}

/**
 * The HRS guard of one (chain, key): decides whether a request may be signed, reserves the new
 * HRS and its exact sign bytes durably, signs in the HSM, verifies, records and replies
 * (ARCHITECTURE §1–§2, spec §7). One instance serves every validator endpoint of the chain.
 * Its requests are serialised, so requests arriving from several sentries at once are decided
 * one after another against an up-to-date state; across processes, the store's compare-and-set
 * reservation is what keeps two writers from both winning one HRS.
 *
 * Replies: a signed response; a refusal (the expected response type with a zero vote/proposal
 * and `error{code: 0}`), which is final; or an empty Message when the outcome is unsure (store,
 * HSM or verification failure), which makes the node retry. Nothing unreserved is ever signed.
 */
export class ChainGuard implements RequestHandler {
  private readonly chainId: string;
  private readonly protocol: ProtocolVersion;
  private readonly signer: Signer;
  private readonly store: SignStateStore;
  private readonly maxHeightJump: number | undefined;
  private readonly keyAddress: Uint8Array | undefined;
  private readonly onDecision: ((decision: GuardDecision) => void) | undefined;
  private readonly onRecordFailure: ((reason: string) => void) | undefined;
  private readonly now: () => number;
  private readonly mutex = new AsyncMutex();
  /**
   * The last state this guard knows the store to hold (loaded, reserved by us, or returned by a
   * failed compare-and-set). It never moves backwards; `undefined` until {@link init}.
   */
  private state: SignState | undefined;
  /**
   * The signature record of the last signed request, still being written. It runs after the
   * reply (recording is bookkeeping, see {@link recordInBackground}) and every later decision
   * waits for it under the mutex, so decisions always see the state the store holds.
   */
  private pendingRecord: Promise<void> = Promise.resolve();

  constructor(options: ChainGuardOptions) {
    this.chainId = options.chainId;
    this.protocol = options.protocol;
    this.signer = options.signer;
    this.store = options.store;
    this.maxHeightJump = options.maxHeightJump;
    this.keyAddress =
      (options.checkValidatorAddress ?? true) ? validatorAddress(options.signer.pubKey) : undefined;
    this.onDecision = options.onDecision;
    this.onRecordFailure = options.onRecordFailure;
    this.now = options.now ?? (() => performance.now());
  }

  /** Loads the last state from the store. Throws if the store fails: the node must not start. */
  async init(): Promise<void> {
    await this.mutex.run(async () => {
      this.state = await this.store.load(this.chainId);
    });
  }

  /** A copy of the last state this guard knows of (for status reporting). Throws before {@link init}. */
  lastState(): SignState {
    const s = this.current();
    return {
      ...s,
      signBytes: s.signBytes.slice(),
      extensionSignBytes: s.extensionSignBytes.slice(),
      signature: s.signature.slice(),
    };
  }

  /**
   * Answers one privval request (spec §8): PubKey, SignVote and SignProposal as described on the
   * class; SignBytes is refused; Ping gets a PingResponse; anything else an empty Message.
   */
  async handle(request: PrivvalMessage, ctx?: RequestContext): Promise<PrivvalMessage> {
    switch (request.kind) {
      case 'pubKeyRequest':
        return this.process('pubkey', refusedPubKey, async () => this.pubKey(request.chainId), ctx);
      case 'signVoteRequest':
        return this.process('vote', refusedVote, (trace) => this.signVote(request, trace), ctx);
      case 'signProposalRequest':
        return this.process('proposal', refusedProposal, (trace) => this.signProposal(request, trace), ctx);
      case 'signBytesRequest':
        // v1.0 SignBytes signs arbitrary bytes as they are, with no HRS check. With a validator
        // key those bytes could be the canonical sign bytes of a conflicting vote or proposal,
        // so serving it would be a way around every guard rule. CometKMS never does.
        return this.process('sign_bytes', refusedSignBytes, async () => refuseSignBytes(), ctx);
      case 'pingRequest':
        return { kind: 'pingResponse' };
      default:
        return tryAgain();
    }
  }

  /**
   * Runs `body` under the mutex and turns its result into the reply: a Refusal into `refuse`,
   * anything else thrown into an empty Message. Checks the reply's shape and reports the decision.
   */
  private async process(
    kind: DecisionKind,
    refuse: (description: string) => PrivvalMessage,
    body: (trace: Trace) => Promise<{ reply: PrivvalMessage; outcome: DecisionOutcome }>,
    ctx?: RequestContext,
  ): Promise<PrivvalMessage> {
    const start = this.now();
    const trace: Trace = {};
    const { reply, outcome } = await this.mutex.run(async () => {
      await this.pendingRecord;
      let result: { reply: PrivvalMessage; outcome: DecisionOutcome };
      try {
        result = await body(trace);
      } catch (err) {
        if (err instanceof Refusal) {
          trace.reason = err.message;
          result = { reply: refuse(err.message), outcome: 'refused' };
        } else {
          trace.reason = describe(err);
          result = { reply: tryAgain(), outcome: 'retry' };
        }
      }
      try {
        assertWellFormedReply(result.reply);
      } catch (err) {
        trace.reason = describe(err);
        result = { reply: tryAgain(), outcome: 'retry' };
      }
      return result;
    });
    this.report(kind, outcome, trace, this.now() - start, ctx);
    return reply;
  }

  private async pubKey(chainId: string): Promise<{ reply: PrivvalMessage; outcome: DecisionOutcome }> {
    if (chainId !== this.chainId) {
      const text =
        this.protocol === 'v1.0' ? 'unable to provide pubkey type and bytes' : 'unable to provide pubkey';
      throw new Refusal(`${text}: chain id mismatch: got ${chainId}, want ${this.chainId}`);
    }
    return { reply: { kind: 'pubKeyResponse', pubKey: this.signer.pubKey }, outcome: 'served' };
  }

  private async signVote(
    request: Extract<PrivvalMessage, { kind: 'signVoteRequest' }>,
    trace: Trace,
  ): Promise<{ reply: PrivvalMessage; outcome: DecisionOutcome }> {
    if (request.chainId !== this.chainId) {
      throw new Refusal(
        `unable to sign vote: chain id mismatch: got ${request.chainId}, want ${this.chainId}`,
      );
    }
    const vote = request.vote;
    if (vote === undefined) throw new Refusal('unable to sign vote: missing vote');
    Object.assign(trace, { type: vote.type, height: vote.height, round: vote.round });
    const step = voteStep(vote.type);
    if (step === undefined) throw new Refusal(`error signing vote: invalid vote type ${vote.type}`);
    trace.step = step;
    const problem = voteProblem(vote, this.validationContext(true));
    if (problem !== undefined) throw new Refusal(`error signing vote: ${problem}`);

    const policy = extensionPolicy(this.protocol, vote, request.skipExtensionSigning);
    if (policy === 'forbid' && vote.extension.length > 0) {
      throw new Refusal(
        'error signing vote: unexpected vote extension - extensions are only allowed in non-nil precommits',
      );
    }
    const signBytes = encode('vote', () => voteSignBytes(this.chainId, vote));
    trace.signBytes = signBytes;
    // The extension sign bytes are reserved together with the vote's; at an HRS already
    // reserved only the reserved extension is signed again (see signSameHRS).
    const extensionSignBytes =
      policy === 'sign' ? encode('vote', () => voteExtensionSignBytes(this.chainId, vote)) : EMPTY;

    const signed = await this.sign(
      { kind: 'vote', hrs: { height: vote.height, round: vote.round, step }, signBytes, extensionSignBytes },
      trace,
    );
    // A v0.38+ node panics on an extension signature for a prevote or nil precommit, and on a
    // missing one for a non-nil precommit when it signs extensions.
    if ((policy === 'sign') !== signed.extensionSignature.length > 0) {
      throw new Error('extension signature does not match the extension policy');
    }
    const reply: Vote = {
      ...vote,
      timestamp: signed.timestamp ?? vote.timestamp,
      signature: signed.signature,
      // The node ignores the echoed extension (spec §1.2); leaving it out keeps the reply under
      // the 10240-byte limit whatever the extension's size.
      extension: EMPTY,
      extensionSignature: signed.extensionSignature,
    };
    return { reply: { kind: 'signedVoteResponse', vote: reply }, outcome: signed.outcome };
  }

  private async signProposal(
    request: Extract<PrivvalMessage, { kind: 'signProposalRequest' }>,
    trace: Trace,
  ): Promise<{ reply: PrivvalMessage; outcome: DecisionOutcome }> {
    if (request.chainId !== this.chainId) {
      throw new Refusal(
        `unable to sign proposal: chain id mismatch: got ${request.chainId}, want ${this.chainId}`,
      );
    }
    const proposal = request.proposal;
    if (proposal === undefined) throw new Refusal('unable to sign proposal: missing proposal');
    // A proposal is step 1 whatever its type field says (spec §7.1).
    Object.assign(trace, {
      type: proposal.type,
      height: proposal.height,
      round: proposal.round,
      step: Step.Propose,
    });
    const problem = proposalProblem(proposal, this.validationContext(false));
    if (problem !== undefined) throw new Refusal(`error signing proposal: ${problem}`);
    const signBytes = encode('proposal', () => proposalSignBytes(this.chainId, proposal));
    trace.signBytes = signBytes;

    const signed = await this.sign(
      {
        kind: 'proposal',
        hrs: { height: proposal.height, round: proposal.round, step: Step.Propose },
        signBytes,
        extensionSignBytes: EMPTY,
      },
      trace,
    );
    const reply = {
      ...proposal,
      timestamp: signed.timestamp ?? proposal.timestamp,
      signature: signed.signature,
    };
    return { reply: { kind: 'signedProposalResponse', proposal: reply }, outcome: signed.outcome };
  }

  /**
   * Decide → reserve → sign → verify → record. Never calls the signer for bytes that are not
   * durably reserved at their HRS: either the reservation made here resolved `{ok: true}`, or
   * the state the store reported already holds exactly those bytes (same HRS).
   */
  private async sign(job: SignJob, trace: Trace): Promise<Signed> {
    let last = this.current();
    for (let attempt = 0; attempt < MAX_RESERVE_ATTEMPTS; attempt++) {
      const check = checkHRS(last, job.hrs);
      if (check.kind === 'refused') throw new Refusal(`error signing ${job.kind}: ${check.reason}`);
      if (check.kind === 'same') return this.signSameHRS(last, job, trace);

      const next: SignState = {
        ...job.hrs,
        signBytes: job.signBytes,
        extensionSignBytes: job.extensionSignBytes,
        signature: EMPTY,
      };
      let result: ReserveResult;
      try {
        result = await this.store.reserve(this.chainId, last, next);
      } catch (err) {
        // Unknown whether it was applied. Nothing is signed; if it was applied, the node's
        // retry finds our own reservation (a failed compare-and-set returning it) and signs
        // exactly those bytes then.
        throw new TryAgain(`reserve failed: ${describe(err)}`);
      }
      if (result.ok) {
        this.state = next;
        return {
          outcome: 'signed',
          signature: await this.signReserved(next, trace),
          extensionSignature: await this.signExtension(job.extensionSignBytes, trace),
        };
      }
      this.adopt(result.current);
      last = result.current;
    }
    throw new TryAgain(`state still changing after ${MAX_RESERVE_ATTEMPTS} reservation attempts`);
  }

  /**
   * The same HRS as `last` (spec §7.2 step 4, ARCHITECTURE §2 invariant 2). Only ever signs
   * `last.signBytes`, the bytes reserved at this HRS, so a retry can never produce a signature
   * over anything else.
   */
  private async signSameHRS(last: SignState, job: SignJob, trace: Trace): Promise<Signed> {
    let outcome: Signed['outcome'] = 'resigned';
    let timestamp: Timestamp | undefined;
    if (!bytesEqual(last.signBytes, job.signBytes)) {
      timestamp = timestampOnlyDifference(job.kind, last.signBytes, job.signBytes);
      if (timestamp === undefined) throw new Refusal(`error signing ${job.kind}: conflicting data`);
      outcome = 'timestamp_only';
      // What goes out is a signature over the reserved bytes: that is what the decision (and the
      // audit log, which `audit check` reads for conflicts) must name, not the request's bytes.
      trace.signBytes = last.signBytes;
    }
    // FilePV signs whatever extension the retry carries. Here the extension sign bytes are part
    // of the reservation (invariant 2): only the reserved ones may be signed at this HRS, so a
    // second, different extension signature at one HRS never exists, across the whole cluster
    // too. Refusing costs at most this precommit (an application that produced another extension
    // after a node crash); a plain retry carries the same extension and is served.
    if (job.extensionSignBytes.length > 0 && !bytesEqual(job.extensionSignBytes, last.extensionSignBytes)) {
      throw new Refusal(`error signing ${job.kind}: conflicting vote extension`);
    }
    // A reservation without a (valid) recorded signature is a crash or an HSM failure between
    // reserve and record: sign the reserved bytes again. ed25519 is deterministic, and a second
    // ECDSA signature over identical bytes is not equivocation.
    const signature = this.verifies(last.signBytes, last.signature)
      ? last.signature
      : await this.signReserved(last, trace);
    // The request's extension sign bytes, which the check above proved to be the reserved ones.
    const extensionSignature = await this.signExtension(job.extensionSignBytes, trace);
    return timestamp === undefined
      ? { outcome, signature, extensionSignature }
      : { outcome, signature, timestamp, extensionSignature };
  }

  /** Signs the sign bytes of `reserved` (durably reserved already), verifies, and records it. */
  private async signReserved(reserved: SignState, trace: Trace): Promise<Uint8Array> {
    const signature = await this.hsmSign(reserved.signBytes, trace);
    this.pendingRecord = this.recordInBackground(reserved, signature);
    return signature;
  }

  /**
   * Records `signature` for the reservation `reserved` without delaying the reply. Recording is
   * bookkeeping, not protection: the reservation of exactly these bytes at this HRS is already
   * durable, so no other bytes can be signed at this HRS or below it whatever happens here; a
   * later request for this HRS that finds no signature re-signs the same reserved bytes. The
   * next decision of this guard waits for this promise (see {@link pendingRecord}); it never
   * rejects.
   */
  private async recordInBackground(reserved: SignState, signature: Uint8Array): Promise<void> {
    try {
      await this.store.recordSignature(this.chainId, reserved, reserved.signBytes, signature);
      const s = this.current();
      if (compareHRS(s, reserved) === 0 && bytesEqual(s.signBytes, reserved.signBytes)) {
        this.state = { ...s, signature };
      }
    } catch (err) {
      try {
        this.onRecordFailure?.(`signature not recorded: ${describe(err)}`);
      } catch {
        // a failing observer must not disturb signing
      }
    }
  }

  /** Resolves once the last signature record has been written (or has failed). */
  async drain(): Promise<void> {
    await this.mutex.run(async () => {
      await this.pendingRecord;
    });
  }

  /** Signs `bytes` (if any) with no state change: extension sign bytes only. */
  private async signExtension(bytes: Uint8Array, trace: Trace): Promise<Uint8Array> {
    return bytes.length === 0 ? EMPTY : this.hsmSign(bytes, trace);
  }

  /** Signs in the HSM and verifies here too (defence in depth). Any failure: try again. */
  private async hsmSign(bytes: Uint8Array, trace: Trace): Promise<Uint8Array> {
    const start = this.now();
    let signature: Uint8Array;
    try {
      signature = await this.signer.sign(bytes);
    } catch (err) {
      throw new TryAgain(`signer failed: ${describe(err)}`);
    } finally {
      trace.hsmMs = (trace.hsmMs ?? 0) + (this.now() - start);
    }
    if (!this.verifies(bytes, signature)) throw new TryAgain('signature from the signer failed verification');
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

  /**
   * Takes `current` (reported by a failed compare-and-set) as the new last state. A state behind
   * the one already known (a lower HRS, or other bytes at the same HRS) means the store went
   * backwards: that stops signing instead of becoming a new baseline (ARCHITECTURE §2, inv. 3).
   */
  private adopt(current: SignState): void {
    const known = this.current();
    const order = compareHRS(current, known);
    const forward =
      order > 0 ||
      (order === 0 &&
        bytesEqual(current.signBytes, known.signBytes) &&
        bytesEqual(current.extensionSignBytes, known.extensionSignBytes));
    if (!forward) {
      throw new TryAgain(
        `store state went backwards: ${current.height}/${current.round}/${current.step} ` +
          `after ${known.height}/${known.round}/${known.step}`,
      );
    }
    this.state = current;
  }

  private current(): SignState {
    if (this.state === undefined) throw new Error(`guard for chain ${this.chainId} is not initialised`);
    return this.state;
  }

  private validationContext(isVote: boolean): ValidationContext {
    const ctx: ValidationContext = { lastHeight: this.current().height };
    if (this.maxHeightJump !== undefined) ctx.maxHeightJump = this.maxHeightJump;
    if (isVote && this.keyAddress !== undefined) ctx.validatorAddress = this.keyAddress;
    return ctx;
  }

  private report(
    kind: DecisionKind,
    outcome: DecisionOutcome,
    trace: Trace,
    latencyMs: number,
    ctx?: RequestContext,
  ): void {
    if (this.onDecision === undefined) return;
    // who asked (endpoint, remote node, forwarding node): named in the decision, never decides it
    const decision: GuardDecision = { chainId: this.chainId, kind, outcome, latencyMs, ...ctx };
    if (trace.type !== undefined) decision.type = trace.type;
    if (trace.height !== undefined) decision.height = trace.height;
    if (trace.round !== undefined) decision.round = trace.round;
    if (trace.step !== undefined) decision.step = trace.step;
    if (trace.reason !== undefined) decision.reason = trace.reason;
    if (trace.signBytes !== undefined) decision.signBytesSha256 = bytesToHex(sha256(trace.signBytes));
    if (trace.hsmMs !== undefined) decision.hsmMs = trace.hsmMs;
    try {
      this.onDecision(decision);
    } catch {
      // An observer's failure must not change what the node is told.
    }
  }
}

function refuseSignBytes(): never {
  throw new Refusal('unable to sign bytes: CometKMS does not sign arbitrary bytes with a validator key');
}

/** Computes sign bytes; a CodecError (e.g. a hash that is neither 0 nor 32 bytes) is a refusal. */
function encode(kind: 'vote' | 'proposal', fn: () => Uint8Array): Uint8Array {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CodecError) throw new Refusal(`error signing ${kind}: ${err.message}`);
    throw err;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
