/**
 * The validator side of a chaos run: per chain, a consensus stand-in that drives two sentries
 * (simulated CometBFT nodes) through heights, whatever the KMS does. Like a real network the
 * chain moves on when the validator fails to sign; a missed height is only a liveness cost.
 *
 * Every height, at every HRS, sentry A asks for block X and sentry B, at the same moment, for a
 * conflicting block Y (with another vote extension): the KMS must sign at most one. Seeded
 * extras: round changes, an identical retry, a timestamp-only retry (same vote, new timestamp),
 * and a laggard — B re-sending a conflicting prevote or precommit at a height already voted —
 * which a KMS that lost or regressed its state would sign. Every request and reply goes to the
 * history; every signature received becomes a delivery for the witness check.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import { type BlockID, type PrivvalMessage, SignedMsgType, type Vote } from '../../../src/cometbft/types.ts';
import { Rng } from '../../../src/simulator/rng.ts';
import type { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import type { ChainSentries } from './bed/testbed.ts';
import type { History } from './history.ts';
import type { Hrs } from './operator.ts';
import type { Delivery } from './witness/checker.ts';

export interface DriverOptions {
  blockTimeMs: number;
  /** how long one request is retried (empty replies, transport errors) before the stand-in moves on */
  requestDeadlineMs: number;
  seed: number;
}

type Outcome = 'signed' | 'refused' | 'unanswered';

const NIL: BlockID = { hash: new Uint8Array(0), partSetHeader: { total: 0, hash: new Uint8Array(0) } };

export class ChainDriver {
  readonly deliveries: Delivery[] = [];
  /** highest HRS any sentry of this chain has asked for */
  maxRequested: Hrs = { height: 0n, round: 0, step: 0 };
  /** wall time (ms) of every precommit signature received, and its height */
  readonly signedAt: Array<{ at: number; height: bigint }> = [];
  height: bigint;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly rng: Rng;
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly s: ChainSentries,
    private readonly history: History,
    private readonly opts: DriverOptions,
    startHeight: bigint,
  ) {
    this.height = startHeight;
    this.rng = new Rng(opts.seed);
  }

  get chainId(): string {
    return this.s.chain.id;
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /**
   * Resolves when a precommit signature received after `since` (epoch ms; default: now) is
   * there — at once if one already is — or after `ms` (false).
   */
  nextSignature(ms: number, since = Date.now()): Promise<boolean> {
    if ((this.signedAt[this.signedAt.length - 1]?.at ?? -1) > since) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.listeners.delete(wake);
        resolve(ok);
      };
      const wake = (): void => done(true);
      const timer = setTimeout(() => done(false), ms);
      this.listeners.add(wake);
    });
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const began = Date.now();
      await this.height1(this.height);
      this.height++;
      const rest = this.opts.blockTimeMs - (Date.now() - began);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    }
  }

  private block(tag: string, height: bigint, round: number): BlockID {
    const hash = sha256(new TextEncoder().encode(`${this.chainId}/${height}/${round}/${tag}`));
    return { hash, partSetHeader: { total: 1, hash: sha256(hash) } };
  }

  private async height1(h: bigint): Promise<void> {
    const { a, b } = this.s;
    const ext = this.s.chain.protocol === 'v0.38' || this.s.chain.protocol === 'v1.0';
    for (let round = 0; round < 3 && !this.stopped; round++) {
      const roundFails = round < 2 && this.rng.chance(0.1);
      const x = this.block('x', h, round);
      const y = this.block('y', h, round);
      if ((h + BigInt(round)) % 2n === 0n) {
        await Promise.all([this.proposal(a, h, round, x), this.proposal(b, h, round, y)]);
      }
      await Promise.all([
        this.vote(a, a.buildVote(SignedMsgType.Prevote, h, round, x)),
        this.vote(b, b.buildVote(SignedMsgType.Prevote, h, round, roundFails ? NIL : y)),
      ]);
      const extA = ext && !roundFails ? this.rng.bytes(16) : undefined;
      const extB = ext ? this.rng.bytes(16) : undefined;
      const pcA = a.buildVote(SignedMsgType.Precommit, h, round, roundFails ? NIL : x, extA);
      await Promise.all([
        this.vote(a, pcA),
        this.vote(b, b.buildVote(SignedMsgType.Precommit, h, round, y, extB)),
      ]);
      if (this.rng.chance(0.1)) await this.vote(a, pcA, 'identical retry');
      if (this.rng.chance(0.1)) {
        const later = { ...pcA, timestamp: { ...pcA.timestamp, nanos: (pcA.timestamp.nanos + 1) % 1e9 } };
        await this.vote(a, later, 'timestamp-only retry');
      }
      if (h > 3n && this.rng.chance(0.3)) {
        const back = h - 1n - BigInt(this.rng.int(3));
        const type = this.rng.chance(0.5) ? SignedMsgType.Prevote : SignedMsgType.Precommit;
        await this.vote(b, b.buildVote(type, back, 0, this.block('late', back, 0)), 'laggard');
      }
      if (!roundFails) return;
    }
  }

  /**
   * A lagging sentry catching up after a fault: B re-sends conflicting prevotes and precommits
   * for the last `depth` heights (each already voted on). A KMS that lost or regressed its
   * state signs some of them; one that did not refuses them all. A request left unanswered ends
   * the burst: the signer is not answering this chain now (a stall under the fault), the rest
   * would only wait out their deadlines one by one and hold the round, and the next burst (or
   * the driver's own laggard votes) asks again.
   */
  async laggardBurst(depth: number): Promise<void> {
    const top = this.height;
    for (let back = top - BigInt(depth); back < top && !this.stopped; back++) {
      if (back < 2n) continue;
      for (const type of [SignedMsgType.Prevote, SignedMsgType.Precommit]) {
        // Only over a live signer link: the burst must not stall the round behind link time-outs.
        if (!this.s.b.connected) return;
        const outcome = await this.vote(
          this.s.b,
          this.s.b.buildVote(type, back, 0, this.block('burst', back, 0)),
          'laggard burst',
        );
        if (outcome === 'unanswered') return;
      }
    }
  }

  private noteRequest(hrs: Hrs): void {
    const m = this.maxRequested;
    if (
      hrs.height > m.height ||
      (hrs.height === m.height && (hrs.round > m.round || (hrs.round === m.round && hrs.step > m.step)))
    ) {
      this.maxRequested = hrs;
    }
  }

  private async proposal(
    sim: ValidatorSimulator,
    height: bigint,
    round: number,
    blockId: BlockID,
  ): Promise<void> {
    const proposal = {
      type: SignedMsgType.Proposal,
      height,
      round,
      polRound: -1,
      blockId,
      timestamp: sim.buildVote(SignedMsgType.Prevote, height, round, blockId).timestamp,
      signature: new Uint8Array(0),
    };
    this.noteRequest({ height, round, step: 1 });
    await this.request(
      sim,
      `proposal ${height}/${round}`,
      '',
      () => sim.requestProposal(proposal),
      (reply) => {
        if (reply.kind !== 'signedProposalResponse' || reply.error || reply.proposal.signature.length === 0)
          return;
        const signBytes = proposalSignBytes(this.chainId, {
          ...proposal,
          timestamp: reply.proposal.timestamp,
        });
        this.deliver(sim, signBytes, reply.proposal.signature);
      },
    );
  }

  private async vote(sim: ValidatorSimulator, vote: Vote, note = ''): Promise<Outcome> {
    const step = vote.type === SignedMsgType.Prevote ? 2 : 3;
    this.noteRequest({ height: vote.height, round: vote.round, step });
    const what = `${step === 2 ? 'prevote' : 'precommit'} ${vote.height}/${vote.round}`;
    return await this.request(
      sim,
      what,
      note,
      () => sim.requestVote(vote),
      (reply) => {
        if (reply.kind !== 'signedVoteResponse' || reply.error || reply.vote.signature.length === 0) return;
        const signed = { ...vote, timestamp: reply.vote.timestamp };
        this.deliver(sim, voteSignBytes(this.chainId, signed), reply.vote.signature);
        if (reply.vote.extensionSignature.length > 0) {
          this.deliver(sim, voteExtensionSignBytes(this.chainId, vote), reply.vote.extensionSignature);
        }
        if (step === 3 && note === '') {
          this.signedAt.push({ at: Date.now(), height: vote.height });
          for (const wake of [...this.listeners]) wake();
        }
      },
    );
  }

  private deliver(sim: ValidatorSimulator, signBytes: Uint8Array, signature: Uint8Array): void {
    this.deliveries.push({ sentry: sim.address, signBytes, signature });
  }

  /**
   * One request as a node's RetrySignerClient sends it: re-sent after an empty reply or a
   * transport error until `requestDeadlineMs`; a signature or a refusal ends it.
   */
  private async request(
    sim: ValidatorSimulator,
    what: string,
    note: string,
    send: () => Promise<PrivvalMessage>,
    onReply: (reply: PrivvalMessage) => void,
  ): Promise<Outcome> {
    const sentry = sim === this.s.a ? 'a' : 'b';
    const until = Date.now() + this.opts.requestDeadlineMs;
    let attempts = 0;
    /** why the last attempt got no answer (kept in the history to tell a stall from a refusal) */
    let last = '';
    while (!this.stopped) {
      attempts++;
      try {
        const reply = await send();
        const error =
          (reply.kind === 'signedVoteResponse' || reply.kind === 'signedProposalResponse') && reply.error
            ? reply.error.description
            : undefined;
        if (reply.kind === 'signedVoteResponse' || reply.kind === 'signedProposalResponse') {
          onReply(reply);
          const outcome: Outcome = error === undefined ? 'signed' : 'refused';
          this.history.write({ t: 'req', chain: this.chainId, sentry, what, note, attempts, outcome, error });
          return outcome;
        }
        last = `reply ${reply.kind}`;
      } catch (err) {
        // transport error: the link is gone; the sentry waits for the next signer connection
        last = (err as Error).message;
      }
      if (Date.now() >= until || this.stopped) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    this.history.write({
      t: 'req',
      chain: this.chainId,
      sentry,
      what,
      note,
      attempts,
      outcome: 'unanswered',
      last,
    });
    return 'unanswered';
  }
}
