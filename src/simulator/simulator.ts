/**
 * A CometBFT node stand-in: the listener side of privval (spec §1.2), driving a signer the way
 * consensus does and checking everything that comes back.
 *
 * Like a node it listens on `tcp://` (SecretConnection with a fresh random identity per start)
 * or `unix://` (raw), holds one signer connection at a time (later ones wait unhandshaken, like
 * in the kernel backlog), has one request in flight at a time, pings after 3333 ms of idleness,
 * drops the connection on a timeout, and re-sends a request after an empty or wrong-type reply,
 * a timeout or a transport error (RetrySignerClient, bounded).
 *
 * Per height it asks for a proposal (when it is the proposer), a prevote and a precommit, with
 * seeded random nil votes, round changes, identical retries and vote extensions. Every returned
 * signature is verified against the sign bytes the simulator computed itself, with the returned
 * vote timestamp applied first (the node copies it: the timestamp-only path of spec §7.2).
 * Extension signatures are verified too, and a misplaced or missing one is reported (a v0.38+
 * node would panic). Every valid signature goes into a {@link SignRecord}; sharing one record
 * between several simulators (sentries of one validator) detects double signs across them.
 */

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { sha256 } from '@noble/hashes/sha2.js';
import pino from 'pino';
import { CodecError } from '../cometbft/errors.ts';
import { toHex, validatorAddress } from '../cometbft/keys.ts';
import {
  isZeroBlockId,
  proposalSignBytes,
  voteExtensionSignBytes,
  voteSignBytes,
} from '../cometbft/signbytes.ts';
import {
  type BlockID,
  type HRS,
  type PrivvalMessage,
  type PrivvalMessageKind,
  type Proposal,
  type ProtocolVersion,
  type PubKey,
  SignedMsgType,
  Step,
  type Timestamp,
  type Vote,
} from '../cometbft/types.ts';
import { verifySignature } from '../cometbft/verify.ts';
import { formatPrivvalAddress, type PrivvalAddress, parsePrivvalAddress } from '../privval/address.ts';
import { nodeIdFromPubKey } from '../privval/identity.ts';
import { secretHandshake } from '../privval/secret-connection.ts';
import { SignerLink } from './link.ts';
import { Rng } from './rng.ts';
import { SignRecord } from './sign-record.ts';

/** Node constants (spec §1.2). */
const ACCEPT_TIMEOUT_MS = 3000;
const PING_INTERVAL_MS = 3333;
const HANDSHAKE_TIMEOUT_MS = 5000;
/** Upper bound on rounds per height, so a high round-change rate still terminates. */
const MAX_ROUNDS = 8;
/** Problems kept verbatim in the summary; later ones are only counted. */
const MAX_PROBLEMS = 50;

/** Options of {@link ValidatorSimulator}. */
export interface SimulatorOptions {
  /** `tcp://127.0.0.1:0` (any free port) or `unix:///path.sock`. */
  listen: string;
  chainId: string;
  protocol: ProtocolVersion;
  /** Target time per height; the simulator waits out the rest of it after the votes. */
  blockTimeMs: number;
  heights: number;
  /** First height (default 1). */
  startHeight?: bigint;
  /** Proposer at (height + round) % proposerEvery === 0 (default 4; 1 = every round). */
  proposerEvery?: number;
  /** Chance of a nil prevote/precommit (default 0.05). */
  nilVoteRate?: number;
  /** Chance that a round fails (nil precommit) and the height moves to the next round (default 0.05). */
  roundChangeRate?: number;
  /** Chance of re-sending an identical sign request after a success (default 0.05). */
  retryRate?: number;
  /** Vote extensions on non-nil precommits, v0.38/v1.0 only (default true there). */
  extensions?: boolean;
  /** Size of each random vote extension in bytes (default 32). */
  extensionBytes?: number;
  /** RNG seed for all random choices (default: random). */
  seed?: number;
  /** Deadline for one reply (default 5000, the node's read deadline). */
  requestTimeoutMs?: number;
  /** How long run() waits for the first signer connection (default 30000). */
  connectTimeoutMs?: number;
  /** RetrySignerClient: attempts per request and the pause between them (default 50 × 100 ms). */
  retry?: { attempts: number; delayMs: number };
  /** Shared with other simulators of the same validator to catch cross-sentry double signs. */
  record?: SignRecord;
  logger?: pino.Logger;
}

/** What a simulation observed. */
export interface SimulationSummary {
  chainId: string;
  /** The listen address of this simulator. */
  address: string;
  /** Validator public key the signer reported (hex), once known. */
  pubKey?: string;
  /** Signer connections established. */
  connects: number;
  /** Sign requests answered with a valid signature (identical retries are not counted again). */
  signed: number;
  /** Sign requests answered with a RemoteSignerError. */
  refused: number;
  /** Requests re-sent: deliberate identical retries and re-sends after empty replies or errors. */
  retried: number;
  /** Empty or wrong-type replies. */
  emptyReplies: number;
  /** Signatures (or extension signatures) that fail verification, missing or misplaced ones. */
  invalidSignatures: number;
  /** Double signs found in the shared record by this simulator. */
  doubleSigns: number;
  /** Proposals signed over another timestamp (the timestamp-only path; the node cannot use them). */
  staleProposals: number;
  /** Sign requests that got no usable reply within all retry attempts. */
  unanswered: number;
  heightsCompleted: number;
  lastHeight: number;
  /** Round-trip time of answered sign requests (since the start, or since restartLatencies). */
  latencyMs: { p50: number; p99: number };
  /**
   * The same by request type. In v0.38 and later a non-nil precommit carries two signatures (the
   * vote and its extension sign bytes, even when the extension is empty), the others one.
   */
  latencyByTypeMs: Record<TimedRequest, { p50: number; p99: number }>;
  /** The first problems observed, in words. */
  problems: string[];
}

const silentLogger = pino({ level: 'silent' });

/** One simulated CometBFT node for one chain. */
export class ValidatorSimulator {
  readonly record: SignRecord;
  private readonly target: PrivvalAddress;
  private readonly log: pino.Logger;
  private readonly rng: Rng;
  private readonly retry: { attempts: number; delayMs: number };
  private readonly requestTimeoutMs: number;
  private readonly extensions: boolean;

  private server: net.Server | undefined;
  private boundAddress: string | undefined;
  private identitySeed: Uint8Array = new Uint8Array(0);
  private link: SignerLink | undefined;
  /** The socket being handshaken, and sockets waiting for the current link to end. */
  private handshaking: net.Socket | undefined;
  private readonly waiting: net.Socket[] = [];
  private readonly linkWaiters = new Set<() => void>();
  private readonly sleepers = new Set<() => void>();
  private pingTimer: NodeJS.Timeout | undefined;
  /** Serialises requests on the link: one in flight at a time, like the node's mutex. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private pubKey: PubKey | undefined;

  private readonly stats = {
    connects: 0,
    signed: 0,
    refused: 0,
    retried: 0,
    emptyReplies: 0,
    invalidSignatures: 0,
    doubleSigns: 0,
    staleProposals: 0,
    unanswered: 0,
    heightsCompleted: 0,
    lastHeight: 0,
  };
  private readonly latencies: Record<TimedRequest, number[]> = { proposal: [], prevote: [], precommit: [] };
  private readonly problems: string[] = [];

  constructor(private readonly opts: SimulatorOptions) {
    this.target = parsePrivvalAddress(opts.listen);
    this.record = opts.record ?? new SignRecord();
    this.log = (opts.logger ?? silentLogger).child({ simulator: opts.listen, chainId: opts.chainId });
    this.rng = new Rng(opts.seed ?? randomBytes(4).readUInt32LE(0));
    this.retry = opts.retry ?? { attempts: 50, delayMs: 100 };
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    const supportsExtensions = opts.protocol === 'v0.38' || opts.protocol === 'v1.0';
    this.extensions = supportsExtensions && (opts.extensions ?? true);
  }

  /** The bound listen address (`tcp://127.0.0.1:PORT` with the real port); throws before listen(). */
  get address(): string {
    if (this.boundAddress === undefined) throw new Error('simulator is not listening');
    return this.boundAddress;
  }

  /** True while a signer connection is established (handshake done). */
  get connected(): boolean {
    return this.link !== undefined;
  }

  /** Starts listening (a fresh SecretConnection identity each time) and returns the bound address. */
  async listen(): Promise<string> {
    if (this.server) return this.address;
    if (this.closed) throw new Error('simulator is closed');
    this.identitySeed = new Uint8Array(randomBytes(32));
    const server = net.createServer((socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (this.target.proto === 'tcp') server.listen(this.target.port, this.target.host, done);
      else server.listen(this.target.path, done);
    });
    server.on('error', (err) => this.log.error({ err }, 'listener error'));
    this.server = server;
    const bound = server.address();
    this.boundAddress =
      this.target.proto === 'tcp' && bound && typeof bound === 'object'
        ? formatPrivvalAddress({ proto: 'tcp', host: this.target.host, port: bound.port })
        : formatPrivvalAddress(this.target);
    this.log.info({ address: this.boundAddress }, 'listening for the signer');
    return this.boundAddress;
  }

  /** Resolves true once a signer is connected, false after `timeoutMs` or on close. */
  async waitForSigner(timeoutMs: number): Promise<boolean> {
    return (await this.awaitLink(timeoutMs)) !== undefined;
  }

  /**
   * Runs the whole simulation: waits for the signer (throws if none connects within
   * `connectTimeoutMs`), fetches its pubkey, then drives `heights` heights.
   */
  async run(): Promise<SimulationSummary> {
    await this.listen();
    const connectTimeoutMs = this.opts.connectTimeoutMs ?? 30_000;
    if (!(await this.waitForSigner(connectTimeoutMs))) {
      throw new Error(`no signer connected to ${this.address} within ${connectTimeoutMs} ms`);
    }
    await this.requestPubKey();
    const start = this.opts.startHeight ?? 1n;
    for (let i = 0; i < this.opts.heights && !this.closed; i++) {
      const began = Date.now();
      const height = start + BigInt(i);
      await this.simulateHeight(height);
      if (this.closed) break;
      this.stats.heightsCompleted++;
      this.stats.lastHeight = Number(height);
      await this.sleep(this.opts.blockTimeMs - (Date.now() - began));
    }
    return this.summary();
  }

  /**
   * Forgets the round trips recorded so far: later summaries report latency from here on (a
   * benchmark's measured window, without its warm-up). The counters are not reset.
   */
  restartLatencies(): void {
    for (const list of Object.values(this.latencies)) list.length = 0;
  }

  /** The counters so far. */
  summary(): SimulationSummary {
    const l = this.latencies;
    const s: SimulationSummary = {
      chainId: this.opts.chainId,
      address: this.boundAddress ?? this.opts.listen,
      ...this.stats,
      latencyMs: medianAndTail([...l.proposal, ...l.prevote, ...l.precommit]),
      latencyByTypeMs: {
        proposal: medianAndTail(l.proposal),
        prevote: medianAndTail(l.prevote),
        precommit: medianAndTail(l.precommit),
      },
      problems: [...this.problems],
    };
    if (this.pubKey) s.pubKey = toHex(this.pubKey.bytes);
    return s;
  }

  /** Asks the signer for its pubkey (with retries) and remembers it. Throws if refused. */
  async requestPubKey(): Promise<PubKey> {
    const reply = await this.send({ kind: 'pubKeyRequest', chainId: this.opts.chainId }, 'pubKeyResponse');
    if (reply?.kind !== 'pubKeyResponse')
      throw new Error(`signer at ${this.address} did not provide its pubkey`);
    if (reply.error || !reply.pubKey) {
      throw new Error(
        `signer refused the pubkey request: ${reply.error?.description ?? 'no key in the reply'}`,
      );
    }
    this.pubKey = reply.pubKey;
    return reply.pubKey;
  }

  /**
   * Race mode: sends one SignVoteRequest for exactly `vote` (one attempt, no retries), checks and
   * records the reply like any other, and returns it. Throws on a transport failure.
   * `skipExtensionSigning` defaults to what a node would send (v1.0 only).
   */
  async requestVote(vote: Vote, opts: { skipExtensionSigning?: boolean } = {}): Promise<PrivvalMessage> {
    const pubKey = this.pubKey ?? (await this.requestPubKey());
    const skip = opts.skipExtensionSigning ?? this.defaultSkip(vote);
    const request: PrivvalMessage = {
      kind: 'signVoteRequest',
      vote,
      chainId: this.opts.chainId,
      skipExtensionSigning: this.opts.protocol === 'v1.0' && skip,
    };
    const reply = await this.requestOnce(request);
    if (reply.kind === 'signedVoteResponse') this.checkVote(pubKey, vote, !skip, reply, false);
    else this.stats.emptyReplies++;
    return reply;
  }

  /** Race mode: one SignProposalRequest for exactly `proposal`; see {@link requestVote}. */
  async requestProposal(proposal: Proposal): Promise<PrivvalMessage> {
    const pubKey = this.pubKey ?? (await this.requestPubKey());
    const reply = await this.requestOnce({
      kind: 'signProposalRequest',
      proposal,
      chainId: this.opts.chainId,
    });
    if (reply.kind === 'signedProposalResponse') this.checkProposal(pubKey, proposal, reply, false);
    else this.stats.emptyReplies++;
    return reply;
  }

  /**
   * Race mode: sends exactly `msg` once (no retries, no checks, whatever it carries: another chain
   * id, out-of-range values) and returns the reply. For tests of hostile or broken requests.
   */
  async requestRaw(msg: PrivvalMessage): Promise<PrivvalMessage> {
    return await this.requestOnce(msg);
  }

  /** Sends one PingRequest and returns the reply (any type: the node does not check it). */
  ping(): Promise<PrivvalMessage> {
    return this.requestOnce({ kind: 'pingRequest' });
  }

  /** A vote as this node would build it, for race-mode tests. */
  buildVote(type: number, height: bigint, round: number, blockId: BlockID, extension?: Uint8Array): Vote {
    return {
      type,
      height,
      round,
      blockId,
      timestamp: nowTimestamp(this.rng),
      validatorAddress: this.pubKey ? validatorAddress(this.pubKey) : new Uint8Array(20),
      validatorIndex: 0,
      signature: new Uint8Array(0),
      extension: extension ?? new Uint8Array(0),
      extensionSignature: new Uint8Array(0),
    };
  }

  /** The block every simulator of a chain agrees on at (height, round). */
  blockIdFor(height: bigint, round: number): BlockID {
    const hash = sha256(new TextEncoder().encode(`${this.opts.chainId}/${height}/${round}`));
    return { hash, partSetHeader: { total: 1, hash: sha256(hash) } };
  }

  /** Stops listening, closes every connection and clears every timer. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.clearPingTimer();
    for (const wake of [...this.sleepers, ...this.linkWaiters]) wake();
    this.link?.close('simulator closed');
    this.handshaking?.destroy();
    for (const socket of this.waiting.splice(0)) socket.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    // Let a run() or request in progress observe the close before returning.
    await this.tail.catch(() => undefined);
  }

  // ---- driving consensus -------------------------------------------------------------------

  private async simulateHeight(height: bigint): Promise<void> {
    const pubKey = this.pubKey as PubKey;
    for (let round = 0; round < MAX_ROUNDS && !this.closed; round++) {
      const changeRound = round < MAX_ROUNDS - 1 && this.rng.chance(this.opts.roundChangeRate ?? 0.05);
      const block = this.blockIdFor(height, round);
      const nil: BlockID = { hash: new Uint8Array(0), partSetHeader: { total: 0, hash: new Uint8Array(0) } };
      const proposerEvery = this.opts.proposerEvery ?? 4;
      if ((height + BigInt(round)) % BigInt(proposerEvery) === 0n) {
        await this.signProposal(pubKey, {
          type: SignedMsgType.Proposal,
          height,
          round,
          polRound: -1,
          blockId: block,
          timestamp: nowTimestamp(this.rng),
          signature: new Uint8Array(0),
        });
      }
      const nilRate = this.opts.nilVoteRate ?? 0.05;
      const prevoteNil = this.rng.chance(nilRate);
      await this.signVote(
        pubKey,
        this.buildVote(SignedMsgType.Prevote, height, round, prevoteNil ? nil : block),
      );
      const precommitNil = changeRound || prevoteNil || this.rng.chance(nilRate);
      const extension =
        this.extensions && !precommitNil ? this.rng.bytes(this.opts.extensionBytes ?? 32) : new Uint8Array(0);
      await this.signVote(
        pubKey,
        this.buildVote(SignedMsgType.Precommit, height, round, precommitNil ? nil : block, extension),
      );
      if (!changeRound) return;
    }
  }

  private async signVote(pubKey: PubKey, vote: Vote): Promise<void> {
    const skip = this.defaultSkip(vote);
    const request: PrivvalMessage = {
      kind: 'signVoteRequest',
      vote,
      chainId: this.opts.chainId,
      skipExtensionSigning: this.opts.protocol === 'v1.0' && skip,
    };
    const timed = vote.type === SignedMsgType.Prevote ? 'prevote' : 'precommit';
    const first = await this.send(request, 'signedVoteResponse', timed);
    if (first?.kind !== 'signedVoteResponse') return;
    const ok = this.checkVote(pubKey, vote, !skip, first, false);
    if (ok && this.rng.chance(this.opts.retryRate ?? 0.05)) {
      this.stats.retried++;
      const again = await this.send(request, 'signedVoteResponse', timed);
      if (again?.kind === 'signedVoteResponse') this.checkVote(pubKey, vote, !skip, again, true);
    }
  }

  private async signProposal(pubKey: PubKey, proposal: Proposal): Promise<void> {
    const request: PrivvalMessage = { kind: 'signProposalRequest', proposal, chainId: this.opts.chainId };
    const first = await this.send(request, 'signedProposalResponse', 'proposal');
    if (first?.kind !== 'signedProposalResponse') return;
    const ok = this.checkProposal(pubKey, proposal, first, false);
    if (ok && this.rng.chance(this.opts.retryRate ?? 0.05)) {
      this.stats.retried++;
      const again = await this.send(request, 'signedProposalResponse', 'proposal');
      if (again?.kind === 'signedProposalResponse') this.checkProposal(pubKey, proposal, again, true);
    }
  }

  /**
   * A node skips extension signing except for precommits with extensions enabled (CometBFT
   * passes `!(extEnabled && precommit)`); only v1.0 puts the flag on the wire.
   */
  private defaultSkip(vote: Vote): boolean {
    return !(this.extensions && vote.type === SignedMsgType.Precommit);
  }

  // ---- checking replies --------------------------------------------------------------------

  /** Checks a SignedVoteResponse; true when it carries a valid signature. */
  private checkVote(
    pubKey: PubKey,
    vote: Vote,
    extensionsRequested: boolean,
    reply: Extract<PrivvalMessage, { kind: 'signedVoteResponse' }>,
    isRetry: boolean,
  ): boolean {
    const what = `${voteName(vote.type)} ${vote.height}/${vote.round}`;
    if (reply.error) {
      this.stats.refused++;
      this.log.info({ vote: what, error: reply.error.description }, 'signer refused');
      if (isRetry) this.problem(`identical retry of ${what} refused: ${reply.error.description}`);
      return false;
    }
    // The node copies the returned timestamp into its vote (spec §1.2): verify over that.
    const signedVote: Vote = { ...vote, timestamp: reply.vote.timestamp };
    const signBytes = voteSignBytes(this.opts.chainId, signedVote);
    const signatureValid = verifySignature(pubKey, signBytes, reply.vote.signature);
    let valid = signatureValid;
    if (!signatureValid) this.invalid(`invalid signature on ${what}`);

    if (this.opts.protocol === 'v0.38' || this.opts.protocol === 'v1.0') {
      const nonNilPrecommit = vote.type === SignedMsgType.Precommit && !isZeroBlockId(vote.blockId);
      const extSig = reply.vote.extensionSignature;
      if (!nonNilPrecommit && extSig.length > 0) {
        valid = false;
        this.invalid(`extension signature on ${what} (a node would panic)`);
      } else if (nonNilPrecommit && this.extensions && extensionsRequested) {
        if (extSig.length === 0) {
          valid = false;
          this.invalid(`missing extension signature on ${what} (a node would panic)`);
        } else if (!verifySignature(pubKey, voteExtensionSignBytes(this.opts.chainId, vote), extSig)) {
          valid = false;
          this.invalid(`invalid extension signature on ${what}`);
        }
      }
    }
    if (signatureValid) {
      const step = vote.type === SignedMsgType.Prevote ? Step.Prevote : Step.Precommit;
      this.recordSignature({ height: vote.height, round: vote.round, step }, signBytes, reply.vote.signature);
    }
    if (valid && !isRetry) this.stats.signed++;
    return valid;
  }

  /** Checks a SignedProposalResponse; true when the signature is valid for the node's proposal. */
  private checkProposal(
    pubKey: PubKey,
    proposal: Proposal,
    reply: Extract<PrivvalMessage, { kind: 'signedProposalResponse' }>,
    isRetry: boolean,
  ): boolean {
    const what = `proposal ${proposal.height}/${proposal.round}`;
    if (reply.error) {
      this.stats.refused++;
      this.log.info({ proposal: what, error: reply.error.description }, 'signer refused');
      if (isRetry) this.problem(`identical retry of ${what} refused: ${reply.error.description}`);
      return false;
    }
    const hrs: HRS = { height: proposal.height, round: proposal.round, step: Step.Propose };
    // The node ignores a returned proposal timestamp (spec §1.2): the signature must cover ours.
    const signBytes = proposalSignBytes(this.opts.chainId, proposal);
    if (verifySignature(pubKey, signBytes, reply.proposal.signature)) {
      this.recordSignature(hrs, signBytes, reply.proposal.signature);
      if (!isRetry) this.stats.signed++;
      return true;
    }
    // Timestamp-only path: the signer returned a stored signature over its stored timestamp.
    // Safe (not a double sign), but the node cannot use it.
    const staleBytes = proposalSignBytes(this.opts.chainId, {
      ...proposal,
      timestamp: reply.proposal.timestamp,
    });
    if (verifySignature(pubKey, staleBytes, reply.proposal.signature)) {
      this.recordSignature(hrs, staleBytes, reply.proposal.signature);
      this.stats.staleProposals++;
      return false;
    }
    this.invalid(`invalid signature on ${what}`);
    return false;
  }

  private recordSignature(hrs: HRS, signBytes: Uint8Array, signature: Uint8Array): void {
    const outcome = this.record.record(this.opts.chainId, hrs, {
      signBytes,
      signature,
      source: this.boundAddress ?? this.opts.listen,
    });
    if (outcome === 'double-sign') {
      this.stats.doubleSigns++;
      const what = `DOUBLE SIGN at ${hrs.height}/${hrs.round}/${hrs.step} on ${this.opts.chainId}`;
      this.log.error({ height: String(hrs.height), round: hrs.round, step: hrs.step }, what);
      this.problem(what);
    }
  }

  private invalid(what: string): void {
    this.stats.invalidSignatures++;
    this.log.error(what);
    this.problem(what);
  }

  private problem(what: string): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(what);
  }

  // ---- requests ----------------------------------------------------------------------------

  /**
   * RetrySignerClient: sends `msg` until a reply of the `expected` kind arrives, at most
   * `retry.attempts` times. Returns undefined when every attempt failed (or on close).
   */
  private async send(
    msg: PrivvalMessage,
    expected: PrivvalMessageKind,
    timed?: TimedRequest,
  ): Promise<PrivvalMessage | undefined> {
    for (let attempt = 1; attempt <= this.retry.attempts && !this.closed; attempt++) {
      if (attempt > 1) {
        this.stats.retried++;
        await this.sleep(this.retry.delayMs);
      }
      const link = await this.awaitLink(ACCEPT_TIMEOUT_MS);
      if (!link) continue;
      const began = performance.now();
      try {
        const reply = await this.exclusive(link, msg);
        if (reply.kind === expected) {
          if (timed !== undefined) this.latencies[timed].push(performance.now() - began);
          return reply;
        }
        this.stats.emptyReplies++;
        this.log.warn({ request: msg.kind, reply: reply.kind }, 'unexpected reply; re-sending');
      } catch (err) {
        this.log.warn({ request: msg.kind, err: errorText(err) }, 'request failed; re-sending');
      }
    }
    if (!this.closed) {
      this.stats.unanswered++;
      this.problem(`${msg.kind} unanswered after ${this.retry.attempts} attempts`);
    }
    return undefined;
  }

  /** One attempt on the current (or next, within the accept timeout) connection. */
  private async requestOnce(msg: PrivvalMessage): Promise<PrivvalMessage> {
    const link = await this.awaitLink(ACCEPT_TIMEOUT_MS);
    if (!link) throw new Error('endpoint connection timed out');
    return this.exclusive(link, msg);
  }

  /** Runs one request on `link` after any request already in flight (the node's mutex). */
  private exclusive(link: SignerLink, msg: PrivvalMessage): Promise<PrivvalMessage> {
    const result = this.tail.then(async () => {
      this.clearPingTimer();
      try {
        return await link.request(msg, this.requestTimeoutMs);
      } finally {
        this.armPingTimer();
      }
    });
    this.tail = result.catch(() => undefined);
    return result;
  }

  private armPingTimer(): void {
    this.clearPingTimer();
    const link = this.link;
    if (!link || this.closed) return;
    this.pingTimer = setTimeout(() => {
      this.pingTimer = undefined;
      // Any transport error on a ping drops the connection (spec §1.2 step 4); the reply type
      // is not checked.
      this.exclusive(link, { kind: 'pingRequest' }).catch((err) => {
        if (err instanceof CodecError) link.close(`undecodable ping reply: ${err.message}`);
      });
    }, PING_INTERVAL_MS);
  }

  private clearPingTimer(): void {
    if (this.pingTimer) clearTimeout(this.pingTimer);
    this.pingTimer = undefined;
  }

  // ---- connections -------------------------------------------------------------------------

  private onConnection(socket: net.Socket): void {
    socket.on('error', () => {});
    if (this.closed) {
      socket.destroy();
      return;
    }
    if (this.link || this.handshaking) {
      // Held while another signer is connected, like a node's un-accepted backlog.
      this.waiting.push(socket);
      socket.once('close', () => {
        const i = this.waiting.indexOf(socket);
        if (i >= 0) this.waiting.splice(i, 1);
      });
      return;
    }
    void this.adopt(socket);
  }

  private async adopt(socket: net.Socket): Promise<void> {
    this.handshaking = socket;
    try {
      let stream: Duplex = socket;
      let remoteNodeId: string | undefined;
      if (this.target.proto === 'tcp') {
        socket.setNoDelay(true);
        const conn = await secretHandshake(socket, this.identitySeed, { timeoutMs: HANDSHAKE_TIMEOUT_MS });
        stream = conn;
        remoteNodeId = nodeIdFromPubKey(conn.remotePubKey);
      }
      if (this.closed) {
        stream.destroy();
        return;
      }
      const link = new SignerLink(stream, this.opts.protocol, (what) => this.problem(what), remoteNodeId);
      link.onClose((reason) => this.onLinkClosed(link, reason));
      if (link.closed) return;
      this.link = link;
      this.stats.connects++;
      this.log.info({ remoteNodeId }, 'signer connected');
      for (const wake of [...this.linkWaiters]) wake();
      this.armPingTimer();
    } catch (err) {
      socket.destroy();
      this.log.warn({ err: errorText(err) }, 'signer handshake failed');
    } finally {
      this.handshaking = undefined;
      if (!this.link) this.adoptNext();
    }
  }

  private onLinkClosed(link: SignerLink, reason: string): void {
    if (this.link !== link) return;
    this.link = undefined;
    this.clearPingTimer();
    this.log.info({ reason }, 'signer disconnected');
    if (!this.handshaking) this.adoptNext();
  }

  private adoptNext(): void {
    if (this.closed) return;
    for (let socket = this.waiting.shift(); socket; socket = this.waiting.shift()) {
      if (!socket.destroyed) {
        void this.adopt(socket);
        return;
      }
    }
  }

  /** The current link, or the next one within `timeoutMs`; undefined on timeout or close. */
  private awaitLink(timeoutMs: number): Promise<SignerLink | undefined> {
    if (this.link || this.closed) return Promise.resolve(this.link);
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.linkWaiters.delete(wake);
        resolve(this.link);
      };
      const timer = setTimeout(wake, timeoutMs);
      this.linkWaiters.add(wake);
    });
  }

  /** Sleeps `ms` (nothing if ≤ 0), cut short by close(). */
  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }
}

/** The current time with a random sub-millisecond part, so nanoseconds reach the sign bytes. */
function nowTimestamp(rng: Rng): Timestamp {
  const ms = Date.now();
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 + rng.int(1_000_000) };
}

/** Sign requests whose round trips the summary reports by type. */
export type TimedRequest = 'proposal' | 'prevote' | 'precommit';

function medianAndTail(list: number[]): { p50: number; p99: number } {
  const sorted = list.sort((a, b) => a - b);
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
}

/** Nearest-rank percentile of an ascending list (0 when empty). */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

function voteName(type: number): string {
  return type === SignedMsgType.Prevote
    ? 'prevote'
    : type === SignedMsgType.Precommit
      ? 'precommit'
      : `vote(${type})`;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
