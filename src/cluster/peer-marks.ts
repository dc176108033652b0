/**
 * Peer marks: the cluster's high-water marks as a majority quorum (docs/ARCHITECTURE.md, "Peer
 * marks"), so that a node which missed the last heights cannot take a restored (older) etcd state
 * for the real one when it becomes leader.
 *
 * Each node keeps durable per-chain marks (store/high-water.ts) and refuses an etcd state below
 * its own. That alone protects only the nodes that saw the newest state: the signing leader
 * raises its mark before it signs, followers learn it from a watch, later. This module makes the
 * newest signed HRS known to a MAJORITY before it is signed, and makes every new leader read a
 * majority before it serves, with a ballot, in two phases:
 *
 *   collect (a new leader, before serving): write a fresh random ballot as this node's promise
 *     (durably), ask the other nodes "marks?" under that ballot (each writes it as its promise,
 *     durably, then answers its marks), and once a majority has answered, counting itself, raise
 *     its own marks to the highest received (durably). The signing state is then read from etcd
 *     afresh (a new inner store, empty cache) and checked against the raised marks.
 *   confirm (before any signature at an HRS h): have a majority, counting itself, hold a durable
 *     mark >= h under the leader's ballot. A node raises its mark for a ballot only while that is
 *     still the ballot it last promised.
 *
 * Safety argument. Let σ be a signature at h by leader L under ballot b: a majority A held marks
 * >= h, each having raised it while its promise was b. Let L' be any leader that collects ballot
 * b' != b from a majority Q. A and Q share a node z. z's promise moved from b to b' when it
 * answered L' (ballots are fresh: z never promises b again), so z raised its mark for b BEFORE it
 * answered L', and that answer carried a mark >= h. L' raises its own mark to >= h before it reads
 * the etcd state it will sign from, so an etcd state below h (a restored snapshot, a wipe, a
 * forced lower import) is refused there (StateRegressionError, the chain's state alarm), and an
 * etcd state at or above h cannot lead L' to new bytes at h (the guard only reserves above its
 * state). If instead L' collected before z's raise, z refuses b's raise; then A cannot be a
 * majority without z unless another node of Q is in A, and the same holds for it. Marks are
 * durable and only go up, so the argument survives crashes; a leader's own "ack" is checked the
 * same way (its promise must still be its ballot when it counts itself).
 *
 * Cost: one round trip to the other nodes per NEW reservation (not per signature: re-signing the
 * reserved bytes needs none), in parallel with this node's own mark write; a majority of KMS
 * nodes must be up and reachable over the forward channel for the leader to sign (SECURITY.md).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compareHRS, type HRS } from '../cometbft/types.ts';
import type { PeerAddress, PeerMark, PeerMarks, PeerPort } from '../ports/peers.ts';
import { writeFileDurable } from '../store/durable.ts';
import { PeerQuorumError, StateRegressionError } from '../store/errors.ts';
import type { HighWaterMarks } from '../store/high-water.ts';
import { STATE_DIR } from '../store/paths.ts';
import { formatHrs } from '../store/state-codec.ts';
import type { Reservation, ReserveResult, SignState, SignStateStore } from '../store/types.ts';
import type { ForwardOutcome } from './forward.ts';
import {
  ControlKind,
  encodeMarksAnswer,
  HEARTBEAT_ANSWER,
  parseControlRequest,
  RAISE_ACCEPTED,
  RAISE_REFUSED,
} from './peer-wire.ts';

/** Where a node's promise (the ballot it last answered, or its own) is durable. */
export interface BallotStorage {
  /** the promised ballot; undefined: none yet */
  read(): string | undefined;
  /** makes `ballot` the durable promise before returning; throws when the disk fails */
  write(ballot: string): void;
}

/** The promise as a file in `<home>/state/peer-ballot` (written once per collection asked). */
export class FileBallotStorage implements BallotStorage {
  readonly #path: string;
  #cached: string | undefined;
  #loaded = false;

  constructor(home: string) {
    this.#path = join(home, STATE_DIR, 'peer-ballot');
  }

  read(): string | undefined {
    if (!this.#loaded) {
      try {
        this.#cached = readFileSync(this.#path, 'utf8').trim() || undefined;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      this.#loaded = true;
    }
    return this.#cached;
  }

  write(ballot: string): void {
    writeFileDurable(this.#path, `${ballot}\n`);
    this.#cached = ballot;
    this.#loaded = true;
  }
}

/**
 * The members `source` (the registry in etcd) lists now, together with every node it listed
 * before (by node id, at its latest address): a wiped or restored registry must not hide a node
 * that holds marks. A listed node that is gone only fails to answer.
 */
export function rememberedMembers(source: () => readonly PeerAddress[]): () => PeerAddress[] {
  const known = new Map<string, PeerAddress>();
  return () => {
    for (const m of source()) known.set(m.nodeId, { nodeId: m.nodeId, advertise: m.advertise });
    return [...known.values()];
  };
}

/** The subset of a pino logger this module uses. */
export interface PeerQuorumLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface PeerQuorumOptions {
  nodeId: string;
  peers: PeerPort;
  /** the cluster's nodes as the member registry names them (this node may be listed: skipped) */
  members: () => readonly PeerAddress[];
  /** how many KMS nodes the cluster has: a majority is floor(n/2) + 1, counting this node */
  clusterSize: number;
  marks: HighWaterMarks;
  /** the chains this node serves (marks of other chains are neither sent nor taken) */
  chains: readonly string[];
  ballots: BallotStorage;
  /** a fresh, unique ballot (random in production) */
  newBallot: () => string;
  /** deadline of one round of requests; default 500 ms */
  deadlineMs?: number;
  logger?: PeerQuorumLogger;
  /** simulator only: see {@link PeerPlantedBugs} */
  plantedBugs?: PeerPlantedBugs;
}

/**
 * Protections the deterministic simulator can switch off (`npm run sim -- --plant-bug NAME`);
 * nothing in the product sets them.
 */
export interface PeerPlantedBugs {
  /** `no-peer-marks`: collect and confirm ask nobody */
  noPeerMarks?: boolean;
  /** `no-high-water` (with the store's): confirm does not compare the state with this node's mark */
  noHighWater?: boolean;
}

const silent: PeerQuorumLogger = { info() {}, warn() {} };

/** The ballot of this node's current collection, with the store that reads under it. */
export interface Term {
  ballot: string;
  store: SignStateStore;
}

/**
 * One node's side of peer marks: the leader's collect and confirm, and the answers every node
 * gives to the others' "marks?" and "raise".
 */
export class PeerQuorum {
  readonly #o: PeerQuorumOptions;
  readonly #log: PeerQuorumLogger;
  readonly #deadlineMs: number;
  readonly #majority: number;
  /** the ballot of this node's last successful collection (only while it can still confirm) */
  #ballot: string | undefined;
  /** per chain: the highest HRS a majority holds under #ballot */
  readonly #confirmed = new Map<string, HRS>();
  #collecting: Promise<boolean> | undefined;

  constructor(options: PeerQuorumOptions) {
    if (!Number.isInteger(options.clusterSize) || options.clusterSize < 1) {
      throw new Error(`peer marks: the cluster size must be a whole number >= 1, got ${options.clusterSize}`);
    }
    this.#o = options;
    this.#log = options.logger ?? silent;
    this.#deadlineMs = options.deadlineMs ?? 500;
    this.#majority = Math.floor(options.clusterSize / 2) + 1;
  }

  /** The ballot of the current collection; undefined until one succeeded (or after it was lost). */
  get ballot(): string | undefined {
    return this.#ballot;
  }

  /** Forgets the current ballot: the next confirm (or an explicit collect) collects anew. */
  reset(): void {
    this.#ballot = undefined;
    this.#confirmed.clear();
  }

  /**
   * Phase 1 (see the file comment). Resolves true once a majority answered and this node's marks
   * are raised to the highest answered; false when no majority answered within the deadline (or
   * this node promised another ballot meanwhile). Concurrent calls share one collection.
   */
  collect(): Promise<boolean> {
    this.#collecting ??= this.#collect().finally(() => {
      this.#collecting = undefined;
    });
    return this.#collecting;
  }

  async #collect(): Promise<boolean> {
    this.reset();
    const ballot = this.#o.newBallot();
    if (this.#o.plantedBugs?.noPeerMarks) {
      this.#ballot = ballot;
      return true;
    }
    this.#o.ballots.write(ballot);
    const answers = await this.#gather((peer) => this.#o.peers.marks(peer, ballot, this.#deadlineMs));
    if (answers.length + 1 < this.#majority) {
      this.#log.warn(
        { answered: answers.length + 1, majority: this.#majority },
        'peer marks: no majority answered; not signing yet',
      );
      return false;
    }
    let raisedAbove: PeerMark[] = [];
    for (const answer of answers) raisedAbove = raisedAbove.concat(await this.#takeMarks(answer));
    if (this.#o.ballots.read() !== ballot) return false;
    if (raisedAbove.length > 0) {
      this.#log.warn(
        { marks: raisedAbove.map((m) => ({ chainId: m.chainId, hrs: formatHrs(m) })) },
        'peer marks: other nodes have seen states above this node’s marks; raised them',
      );
    }
    this.#ballot = ballot;
    return true;
  }

  /** Raises this node's marks to `answer`'s (durably); returns the marks that were above ours. */
  async #takeMarks(answer: PeerMarks): Promise<PeerMark[]> {
    const above: PeerMark[] = [];
    for (const m of answer.marks) {
      if (!this.#o.chains.includes(m.chainId)) continue;
      const own = this.#o.marks.get(m.chainId);
      if (own !== undefined && compareHRS(m, own) <= 0) continue;
      above.push(m);
    }
    await Promise.all(above.map((m) => this.#o.marks.raiseDurably(m.chainId, m)));
    return above;
  }

  /**
   * Phase 2: returns once a majority, counting this node, holds a durable mark >= `hrs` of
   * `chainId` under `ballot`. Throws PeerQuorumError otherwise (the ballot is then dropped: the
   * next term() collects anew), StateRegressionError when this node's mark is already above
   * `hrs` (a state read before marks moved up: never signed from).
   */
  async confirm(ballot: string, chainId: string, hrs: HRS): Promise<void> {
    // Without peer marks this node's own mark must still be durable before a signature.
    if (this.#o.plantedBugs?.noPeerMarks) return await this.#o.marks.raiseDurably(chainId, hrs);
    if (this.#ballot !== ballot)
      throw new PeerQuorumError('peer marks: the ballot changed; read the state again');
    const done = this.#confirmed.get(chainId);
    if (done !== undefined && compareHRS(hrs, done) <= 0) return;
    const own = this.#o.marks.get(chainId);
    if (own !== undefined && compareHRS(own, hrs) > 0 && !this.#o.plantedBugs?.noHighWater) {
      throw new StateRegressionError(
        `the state of chain ${JSON.stringify(chainId)} at ${formatHrs(hrs)} is below ${formatHrs(own)} that ` +
          'this node has seen: not signing from it',
      );
    }
    // This node's mark goes up in memory now (raiseDurably's first, synchronous step) and is
    // written while the others are asked: every mark only goes up, and the reservation at `hrs`
    // is already committed, so asking them before this node's write is done raises nothing above
    // what etcd holds. Nothing is signed before both are done.
    const ownDurable = this.#o.marks.raiseDurably(chainId, hrs);
    const mark: PeerMark = { chainId, height: hrs.height, round: hrs.round, step: hrs.step };
    const gathered = this.#gather(async (peer) =>
      (await this.#o.peers.raise(peer, ballot, mark, this.#deadlineMs)) ? true : undefined,
    );
    await ownDurable;
    // This node counts only while its promise is still its own ballot (it answered nobody since:
    // an answer after this point carries the mark, raised in memory when the call above began).
    // Ballots are fresh, so a promise that is `ballot` now was `ballot` since that raise.
    if (this.#o.ballots.read() !== ballot) {
      this.reset();
      throw new PeerQuorumError('peer marks: this node answered another leader’s ballot; collecting again');
    }
    const acks = await gathered;
    if (acks.length + 1 < this.#majority) {
      if (this.#ballot === ballot) this.reset();
      throw new PeerQuorumError(
        `peer marks: ${acks.length + 1} of the ${this.#majority} nodes needed hold ${formatHrs(hrs)} of chain ` +
          `${JSON.stringify(chainId)}; not signing it yet`,
      );
    }
    if (this.#ballot !== ballot)
      throw new PeerQuorumError('peer marks: the ballot changed; read the state again');
    const now = this.#confirmed.get(chainId);
    if (now === undefined || compareHRS(hrs, now) > 0) this.#confirmed.set(chainId, { ...hrs });
  }

  /**
   * Asks every other member at once; resolves with the answers once majority - 1 of them answered,
   * or all finished, or the deadline passed (the calls themselves are bounded by it).
   */
  async #gather<T>(ask: (peer: PeerAddress) => Promise<T | undefined>): Promise<T[]> {
    const seen = new Set<string>([this.#o.nodeId]);
    const others = this.#o.members().filter((m) => {
      if (seen.has(m.nodeId)) return false;
      seen.add(m.nodeId);
      return true;
    });
    const needed = this.#majority - 1;
    const answers: T[] = [];
    if (needed === 0 || others.length === 0) return answers;
    return await new Promise<T[]>((resolve) => {
      let pending = others.length;
      for (const peer of others) {
        void ask(peer).then(
          (answer) => {
            pending--;
            if (answer !== undefined) answers.push(answer);
            if (answers.length >= needed || pending === 0) resolve(answers.slice());
          },
          () => {
            pending--;
            if (pending === 0) resolve(answers.slice());
          },
        );
      }
    });
  }

  /** Answers another node's "marks?": promise `ballot` (durably), then tell every mark. */
  answerMarks(ballot: string): PeerMarks {
    this.#o.ballots.write(ballot);
    const marks: PeerMark[] = [];
    for (const chainId of this.#o.chains) {
      const m = this.#o.marks.get(chainId);
      if (m !== undefined) marks.push({ chainId, height: m.height, round: m.round, step: m.step });
    }
    return { nodeId: this.#o.nodeId, marks };
  }

  /** Answers another node's "raise": true once the mark is durable, false when refused. */
  async answerRaise(ballot: string, mark: PeerMark): Promise<boolean> {
    // The promise check and the in-memory raise (raiseDurably's first step) happen in one
    // synchronous step: an answer to a later "marks?" carries the mark even while its write is
    // in progress. The ack waits for the write.
    if (this.#o.ballots.read() !== ballot || !this.#o.chains.includes(mark.chainId)) return false;
    await this.#o.marks.raiseDurably(mark.chainId, mark);
    return true;
  }
}

/**
 * The leader's sign-state store with peer marks: every state it hands to the guard (a committed
 * reservation, the current state a failed one returns, a loaded one) is held by a majority first
 * (PeerQuorum.confirm), so the guard never signs an HRS a majority does not hold. Reads go to the
 * inner store of the current ballot: a new collection starts an inner store with an empty cache,
 * so that the state is read from etcd again and checked against the raised marks.
 */
export class PeerMarkedStore implements SignStateStore {
  readonly #quorum: PeerQuorum;
  readonly #newInner: () => SignStateStore;
  #term: Term | undefined;

  constructor(quorum: PeerQuorum, newInner: () => SignStateStore) {
    this.#quorum = quorum;
    this.#newInner = newInner;
  }

  /**
   * Collects the peers' marks (a new term: RoleTransitions calls it after every won election,
   * before the guards reload). False when no majority answered.
   */
  async collect(): Promise<boolean> {
    const ok = await this.#quorum.collect();
    if (ok) this.#startTerm();
    return ok;
  }

  async load(chainId: string): Promise<SignState | undefined> {
    const term = await this.#current();
    const state = await term.store.load(chainId);
    if (state !== undefined) await this.#quorum.confirm(term.ballot, chainId, state);
    return state;
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    const term = await this.#current();
    const result = await term.store.reserve(chainId, expected, next);
    await this.#quorum.confirm(term.ballot, chainId, result.ok ? next : result.current);
    return result;
  }

  async recordSignature(
    chainId: string,
    reserved: Reservation,
    signature: Uint8Array,
    opts: { durable: boolean },
  ): Promise<void> {
    const term = await this.#current();
    await term.store.recordSignature(chainId, reserved, signature, opts);
  }

  /**
   * The inner store's (nothing for etcd). The peers' marks are not left for this point, which
   * overlaps with the HSM: a majority holds the HRS before the HSM signs it at all (confirm).
   */
  async readyToReturn(chainId: string, reserved: Reservation): Promise<void> {
    await this.#term?.store.readyToReturn(chainId, reserved);
  }

  async close(): Promise<void> {
    await this.#term?.store.close();
  }

  /** The term whose ballot still holds; collects anew when it was dropped. */
  async #current(): Promise<Term> {
    const term = this.#term;
    if (term !== undefined && this.#quorum.ballot === term.ballot) return term;
    if (!(await this.#quorum.collect())) {
      throw new PeerQuorumError('peer marks: no majority of the cluster answered; not signing yet');
    }
    return this.#startTerm();
  }

  #startTerm(): Term {
    const ballot = this.#quorum.ballot;
    if (ballot === undefined) throw new PeerQuorumError('peer marks: no ballot');
    if (this.#term?.ballot === ballot) return this.#term;
    if (this.#term !== undefined) void this.#term.store.close();
    this.#term = { ballot, store: this.#newInner() };
    return this.#term;
  }
}

/**
 * The forwarding server's answer to a control request (peer-wire.ts), on every node whatever its
 * role: marks and raises go to `quorum`, a heartbeat is answered at once.
 */
export async function answerControl(quorum: PeerQuorum, body: Uint8Array): Promise<ForwardOutcome> {
  const req = parseControlRequest(body);
  if (req === undefined) return { status: 'bad_request' };
  switch (req.kind) {
    case ControlKind.heartbeat:
      return { status: 'ok', body: HEARTBEAT_ANSWER };
    case ControlKind.marks:
      return { status: 'ok', body: encodeMarksAnswer(quorum.answerMarks(req.ballot)) };
    case ControlKind.raise:
      return {
        status: 'ok',
        body: (await quorum.answerRaise(req.ballot, req.mark)) ? RAISE_ACCEPTED : RAISE_REFUSED,
      };
  }
}
