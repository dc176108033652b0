/**
 * One simulated world: N nodes, M chains, K validator sentries per chain, an etcd model, the
 * network between them, a fault injector and an operator, all on one seeded scheduler. `runSeed`
 * runs it for a number of steps, checking the invariants after every step, and returns what
 * happened: steps, violations, and the history (its hash, and the last lines for a report).
 */
import { createHash } from 'node:crypto';
import type { ForwardResult } from '../src/cluster/forward.ts';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../src/cometbft/signbytes.ts';
import {
  type BlockID,
  compareHRS,
  type PrivvalMessage,
  type Timestamp,
  type Vote,
} from '../src/cometbft/types.ts';
import type { GuardPlantedBugs } from '../src/guard/chain-guard.ts';
import {
  decodeSignState,
  encodeSignState,
  etcdKeys,
  readEtcdStateRecord,
  type StorePlantedBugs,
  swapEtcdSignState,
} from '../src/store/etcd.ts';
import { freshSignState, type SignState } from '../src/store/types.ts';
import { Checker, hrsText } from './checker.ts';
import { EtcdModel, SimEtcdClient } from './etcd-model.ts';
import { Incarnation, type Peers, SimNode } from './node.ts';
import { type Owner, Scheduler } from './scheduler.ts';

export interface WorldOptions {
  seed: number;
  steps: number;
  nodes: number;
  chains: number;
  sentries: number;
  storeBugs?: StorePlantedBugs;
  guardBugs?: GuardPlantedBugs;
  /** planted bug `no-peer-marks` */
  noPeerMarks?: boolean;
  /** history lines kept for the report */
  keep?: number;
  /**
   * restore etcd and force lower imports even while a node lacks the newest state in its marks
   * (the peer marks must then keep a lagging leader from reserving a lost HRS again)
   */
  restoreAnytime?: boolean;
}

export interface RunResult {
  seed: number;
  steps: number;
  simMs: number;
  violations: string[];
  /** SHA-256 of the whole history */
  historyHash: string;
  /** the last lines of the history (the violation's context) */
  tail: string[];
  signatures: number;
  reservations: number;
}

const PREFIX = 'cometkms/';
const WRONG_PREFIX = 'cometkms-wrong/';
/** An owner for events of the world itself (never paused or crashed). */
const WORLD: Owner = { name: 'world', alive: true, paused: false, held: [] };

/** One validator's CometBFT node (a sentry) on one chain. */
interface Sentry {
  chainId: string;
  index: number;
  /** node it is connected to (every KMS node dials it; it keeps one connection) */
  conn: number;
  height: bigint;
  round: number;
  /** 0 proposal, 1 prevote, 2 precommit */
  phase: number;
  /** the request in flight: its id and how often it was sent */
  inflight: { id: number; request: PrivvalMessage; attempts: number } | undefined;
}

export class World {
  readonly s: Scheduler;
  readonly model: EtcdModel;
  readonly checker = new Checker();
  readonly nodes: SimNode[];
  readonly #o: WorldOptions;
  readonly #chains: string[];
  readonly #sentries: Sentry[] = [];
  /** the consensus height each chain has reached */
  readonly #chainHeight = new Map<string, bigint>();
  readonly #hash = createHash('sha256');
  readonly #tail: string[] = [];
  /** pairs of nodes that cannot reach each other ("a|b", sorted) */
  readonly #cut = new Set<string>();
  #nextId = 1;
  #operatorDue = false;

  constructor(o: WorldOptions) {
    this.#o = o;
    this.s = new Scheduler(o.seed);
    this.model = new EtcdModel(this.s);
    this.#chains = Array.from({ length: o.chains }, (_, i) => `chain-${i}`);
    this.nodes = Array.from({ length: o.nodes }, (_, i) => new SimNode(`n${i}`));
    this.model.onCommit = (key, kv, writer) => {
      const prefix = key.slice(0, key.indexOf('/') + 1);
      this.checker.committed(key, kv, writer, this.model.peek(etcdKeys.leader(prefix)));
      if (key.includes('/state/') && kv !== undefined) {
        this.log(`etcd ${key} = ${hrsOfValue(kv.value)} by ${writer === undefined ? 'lease' : writer.node}`);
      }
    };
  }

  log(line: string): void {
    const text = `${this.s.now - START} ${line}`;
    this.#hash.update(text).update('\n');
    this.#tail.push(text);
    if (this.#tail.length > (this.#o.keep ?? 60)) this.#tail.shift();
  }

  async run(): Promise<RunResult> {
    // The operator initialises every chain, then the nodes start.
    for (const chainId of this.#chains) {
      this.model.txn(
        {
          compare: [],
          success: [
            { op: 'put', key: etcdKeys.state(PREFIX, chainId), value: encodeSignState(freshSignState(0n)) },
          ],
          failure: [],
        },
        { node: 'operator', kind: 'operator' },
      );
      this.#chainHeight.set(chainId, 1n);
    }
    for (const node of this.nodes) this.#boot(node, PREFIX);
    for (const chainId of this.#chains) {
      for (let k = 0; k < this.#o.sentries; k++) {
        const sentry: Sentry = {
          chainId,
          index: k,
          conn: this.s.rng.int(this.nodes.length),
          height: 1n,
          round: 0,
          phase: 0,
          inflight: undefined,
        };
        this.#sentries.push(sentry);
        this.s.at(this.s.between(50, 200), () => this.#next(sentry), WORLD);
      }
    }
    this.s.at(this.s.between(200, 600), () => this.#fault(), WORLD);
    await this.s.run(this.#o.steps, () => this.#afterStep());
    return {
      seed: this.#o.seed,
      steps: this.s.steps,
      simMs: this.s.now - START,
      violations: this.checker.violations,
      historyHash: this.#hash.digest('hex'),
      tail: this.#tail,
      signatures: this.checker.signatures,
      reservations: this.checker.reservations,
    };
  }

  #afterStep(): boolean {
    const tokens: Array<[string, string]> = [];
    for (const n of this.nodes) {
      const inc = n.current;
      if (inc === undefined || !inc.owner.alive) continue;
      const token = inc.servingToken();
      if (token !== undefined) tokens.push([n.id, token]);
    }
    this.checker.serving(tokens);
    if (this.checker.violations.length > 0) {
      for (const v of this.checker.violations) this.log(`VIOLATION ${v}`);
      return true;
    }
    return false;
  }

  // --- nodes ---

  #boot(node: SimNode, prefix: string): void {
    node.incarnations++;
    const inc = new Incarnation(
      this.s,
      this.model,
      this.checker,
      node.id,
      node.incarnations,
      node.marks,
      node.ballots,
      {
        chains: this.#chains,
        clusterSize: this.nodes.length,
        noPeerMarks: this.#o.noPeerMarks === true,
        leaseTtlS: 1,
        maxHeightJump: 100,
        storeBugs: this.#o.storeBugs ?? {},
        guardBugs: this.#o.guardBugs ?? {},
      },
      prefix,
      this.#peers,
    );
    node.current = inc;
    this.log(`${node.id} starts${prefix === PREFIX ? '' : ` with the wrong prefix ${prefix}`}`);
    this.s.at(
      0,
      () => void inc.start().catch((err: unknown) => this.log(`${node.id} start failed: ${String(err)}`)),
      inc.owner,
    );
  }

  #crash(node: SimNode): void {
    const inc = node.current;
    if (inc === undefined) return;
    inc.owner.alive = false;
    node.current = undefined;
    this.log(`${node.id} crashes`);
  }

  readonly #peers: Peers = {
    log: (line) => this.log(line),
    control: (from, to, answer, deadlineMs) => this.#control(from, to, answer, deadlineMs),
    forward: (from, to, chainId, body) =>
      new Promise<ForwardResult>((resolve) => {
        const sender = this.#node(from)?.current;
        const target = this.#node(to)?.current;
        let done = false;
        const finish = (r: ForwardResult) => {
          if (done) return;
          done = true;
          resolve(r);
        };
        const senderOwner = sender?.owner ?? WORLD;
        // the follower's deadline
        this.s.at(2_000, () => finish({ status: 'timeout', reason: 'forward deadline' }), senderOwner);
        if (target === undefined || this.#cut.has(pair(from, to))) {
          this.s.at(
            this.s.between(5, 50),
            () => finish({ status: 'unavailable', reason: 'no connection' }),
            senderOwner,
          );
          return;
        }
        this.s.at(
          this.s.between(0, 2),
          () =>
            void target.serveForwarded(chainId, body).then((outcome) => {
              if (this.#cut.has(pair(from, to))) return;
              this.s.at(this.s.between(0, 2), () => finish(outcome), senderOwner);
            }),
          target.owner,
        );
      }),
  };

  /** A control request between nodes: lost when either end is down or the pair is cut. */
  #control<T>(
    from: string,
    to: string,
    answer: (target: Incarnation) => T | Promise<T>,
    deadlineMs: number,
  ): Promise<T | undefined> {
    return new Promise<T | undefined>((resolve) => {
      const sender = this.#node(from)?.current;
      const target = this.#node(to)?.current;
      let done = false;
      const finish = (r: T | undefined) => {
        if (done) return;
        done = true;
        resolve(r);
      };
      const senderOwner = sender?.owner ?? WORLD;
      this.s.at(deadlineMs, () => finish(undefined), senderOwner);
      if (target === undefined || this.#cut.has(pair(from, to))) {
        this.s.at(this.s.between(5, 50), () => finish(undefined), senderOwner);
        return;
      }
      this.s.at(
        this.s.between(0, 2),
        () => {
          // The answer leaves once it is complete (a raise: once the mark is durable), unless the
          // target crashed or the pair was cut meanwhile; a failure is no answer.
          void (async () => answer(target))().then(
            (result) => {
              if (!target.owner.alive || this.#cut.has(pair(from, to))) return;
              this.s.at(this.s.between(0, 2), () => finish(result), senderOwner);
            },
            () => undefined,
          );
        },
        target.owner,
      );
    });
  }

  #node(id: string): SimNode | undefined {
    return this.nodes.find((n) => n.id === id);
  }

  // --- validators ---

  /** The sentry's next request: where it stands, now and then a racing or hostile variant. */
  #next(sentry: Sentry): void {
    const chainHeight = this.#chainHeight.get(sentry.chainId)!;
    if (sentry.height < chainHeight - 2n) {
      // far behind: catch up like a node that synced blocks
      sentry.height = chainHeight;
      sentry.round = 0;
      sentry.phase = 0;
    }
    const r = this.s.rng.next();
    let height = sentry.height;
    const round = sentry.round;
    let phase = sentry.phase;
    if (r < 0.03 && height > 3n)
      height -= BigInt(this.s.between(1, 3)); // a late or replayed request
    else if (r < 0.035)
      height += BigInt(this.s.between(2, 20)); // a jump within max_height_jump
    else if (r < 0.037) height += 500n; // beyond it
    if (phase === 0 && (Number(height) + round + sentry.index) % 2 !== 0) phase = 1; // not the proposer
    const request = this.#request(sentry, height, round, phase);
    sentry.inflight = { id: this.#nextId++, request, attempts: 0 };
    this.#send(sentry);
  }

  #request(sentry: Sentry, height: bigint, round: number, phase: number): PrivvalMessage {
    const { chainId } = sentry;
    // Sentries of one validator mostly agree on the block; sometimes they race another one.
    const block = this.s.rng.chance(0.1) ? this.s.between(1, 3) : Number(height % 7n) + 1;
    const nil = this.s.rng.chance(0.05);
    const timestamp: Timestamp = {
      seconds: BigInt(Math.floor(this.s.now / 1000)),
      nanos: (this.s.now % 1000) * 1e6,
    };
    const blockId: BlockID = nil
      ? { hash: new Uint8Array(), partSetHeader: { total: 0, hash: new Uint8Array() } }
      : { hash: fill(block), partSetHeader: { total: 1, hash: fill(block + 100) } };
    if (phase === 0) {
      const proposal = {
        type: 32,
        height,
        round,
        polRound: -1,
        blockId,
        timestamp,
        signature: new Uint8Array(),
      };
      this.checker.asked(
        chainId,
        `${height}/${round}/1`,
        proposalSignBytes(chainId, proposal),
        new Uint8Array(),
      );
      return { kind: 'signProposalRequest', chainId, proposal };
    }
    const precommit = phase === 2;
    const vote: Vote = {
      type: precommit ? 2 : 1,
      height,
      round,
      blockId,
      timestamp,
      validatorAddress: new Uint8Array(),
      validatorIndex: 0,
      signature: new Uint8Array(),
      extension: precommit && !nil ? fill(this.s.rng.chance(0.9) ? 7 : 8) : new Uint8Array(),
      extensionSignature: new Uint8Array(),
    };
    const ext = precommit && !nil ? voteExtensionSignBytes(chainId, vote) : new Uint8Array();
    this.checker.asked(chainId, `${height}/${round}/${phase + 1}`, voteSignBytes(chainId, vote), ext);
    return { kind: 'signVoteRequest', chainId, vote, skipExtensionSigning: false };
  }

  /** Sends the in-flight request over the network (which may drop, delay or duplicate it). */
  #send(sentry: Sentry): void {
    const flight = sentry.inflight;
    if (flight === undefined) return;
    flight.attempts++;
    const id = flight.id;
    const copies = this.s.rng.chance(0.02) ? 2 : this.s.rng.chance(0.02) ? 0 : 1;
    for (let c = 0; c < copies; c++) {
      const inc = this.nodes[sentry.conn]!.current;
      if (inc === undefined) continue;
      this.s.at(
        this.s.between(0, 3),
        () => {
          const handler = inc.handlers.get(sentry.chainId)!;
          void handler.handle(flight.request).then((reply) => {
            this.s.at(this.s.between(0, 3), () => this.#reply(sentry, id, reply), WORLD);
          });
        },
        inc.owner,
      );
    }
    // the node's read deadline: re-send, and maybe the connection moved to another KMS node
    this.s.at(
      1_000,
      () => {
        if (sentry.inflight?.id !== id || sentry.inflight.attempts !== flight.attempts) return;
        if (this.s.rng.chance(0.5)) sentry.conn = this.s.rng.int(this.nodes.length);
        this.#retryOrMoveOn(sentry);
      },
      WORLD,
    );
  }

  #reply(sentry: Sentry, id: number, reply: PrivvalMessage): void {
    if (sentry.inflight?.id !== id) return; // a late or duplicated reply
    if (reply.kind === 'empty') {
      this.s.at(
        50,
        () => {
          if (sentry.inflight?.id === id) this.#retryOrMoveOn(sentry);
        },
        WORLD,
      );
      return;
    }
    sentry.inflight = undefined;
    this.#advance(sentry);
    this.s.at(this.s.between(5, 30), () => this.#next(sentry), WORLD);
  }

  #retryOrMoveOn(sentry: Sentry): void {
    const flight = sentry.inflight;
    if (flight === undefined) return;
    if (flight.attempts < 20) {
      this.#send(sentry);
      return;
    }
    sentry.inflight = undefined;
    this.#advance(sentry);
    this.s.at(this.s.between(5, 30), () => this.#next(sentry), WORLD);
  }

  /** Proposal → prevote → precommit; then the next height, or now and then the next round. */
  #advance(sentry: Sentry): void {
    if (sentry.phase < 2) {
      sentry.phase++;
      return;
    }
    sentry.phase = 0;
    if (this.s.rng.chance(0.05)) {
      sentry.round++;
      return;
    }
    sentry.height++;
    sentry.round = 0;
    const h = this.#chainHeight.get(sentry.chainId)!;
    if (sentry.height > h) this.#chainHeight.set(sentry.chainId, sentry.height);
  }

  // --- faults and the operator ---

  #fault(): void {
    this.s.at(this.s.between(100, 700), () => this.#fault(), WORLD);
    const nodes = this.nodes;
    const node = nodes[this.s.rng.int(nodes.length)]!;
    const r = this.s.rng.next();
    if (r < 0.18) {
      this.#crash(node);
      this.s.at(
        this.s.between(100, 3_000),
        () => {
          if (node.current === undefined) this.#boot(node, PREFIX);
        },
        WORLD,
      );
    } else if (r < 0.36) {
      const inc = node.current;
      if (inc === undefined || inc.owner.paused) return;
      inc.owner.paused = true;
      this.log(`${node.id} pauses`);
      this.s.at(
        this.s.between(200, 3_000),
        () => {
          this.log(`${node.id} resumes`);
          this.s.resume(inc.owner);
        },
        WORLD,
      );
    } else if (r < 0.5) {
      this.model.setPartitioned(node.id, true);
      this.log(`${node.id} cut off from etcd`);
      this.s.at(
        this.s.between(200, 3_000),
        () => {
          this.log(`${node.id} reaches etcd again`);
          this.model.setPartitioned(node.id, false);
        },
        WORLD,
      );
    } else if (r < 0.6) {
      const other = nodes[this.s.rng.int(nodes.length)]!;
      if (other === node) return;
      const p = pair(node.id, other.id);
      this.#cut.add(p);
      this.log(`${p} partitioned`);
      this.s.at(
        this.s.between(200, 2_000),
        () => {
          this.#cut.delete(p);
          this.log(`${p} healed`);
        },
        WORLD,
      );
    } else if (r < 0.72) {
      const m = this.s.rng.int(this.model.members);
      if (!this.model.membersUp[m]) return;
      this.model.setMember(m, false);
      this.log(`etcd member ${m} down${this.model.quorum() ? '' : ' (quorum lost)'}`);
      this.s.at(
        this.s.between(200, 3_000),
        () => {
          this.model.setMember(m, true);
          this.log(`etcd member ${m} up`);
        },
        WORLD,
      );
    } else if (r < 0.82) {
      this.model.callFaultRate = 0.25;
      this.log('etcd calls flaky');
      this.s.at(
        this.s.between(100, 1_000),
        () => {
          this.model.callFaultRate = 0.01;
        },
        WORLD,
      );
    } else if (r < 0.9) {
      const inc = node.current;
      if (inc === undefined) return;
      inc.hsm.failRate = 0.3;
      this.log(`${node.id} hsm flaky`);
      this.s.at(
        this.s.between(100, 1_000),
        () => {
          inc.hsm.failRate = 0;
        },
        WORLD,
      );
    } else if (r < 0.93) {
      this.log('etcd wiped');
      this.model.wipe();
      this.#operatorRepairs();
    } else if (r < 0.96) {
      if (!this.#everyNodeSawTheNewestState()) return;
      const rev = this.model.restoreOldest();
      if (rev === undefined) return;
      this.log(`etcd restored to revision ${rev}`);
      this.#operatorRepairs();
    } else if (r < 0.98) {
      this.#forcedLowerImport();
    } else {
      // a node restarted with the wrong etcd_prefix, fixed by another restart later
      this.#crash(node);
      this.#boot(node, WRONG_PREFIX);
      this.s.at(
        this.s.between(500, 3_000),
        () => {
          this.#crash(node);
          this.#boot(node, PREFIX);
        },
        WORLD,
      );
    }
  }

  /**
   * Whether every node runs and has the newest state of every chain in its durable marks. A
   * restore or a forced lower import is simulated only then, unless `restoreAnytime`: then a node
   * that has not seen the lost states (it was down meanwhile) may lead after the restore, and
   * only the peer marks (a majority holds every signed HRS; a new leader reads a majority) keep
   * it from taking the restored state for the real one.
   */
  #everyNodeSawTheNewestState(): boolean {
    if (this.#o.restoreAnytime) return true;
    return this.nodes.every((n) => {
      if (n.current === undefined || n.current.owner.paused || n.current.prefix !== PREFIX) return false;
      return this.#chains.every((chainId) => {
        const high = this.checker.high(etcdKeys.state(PREFIX, chainId));
        const mark = n.marks.read(chainId);
        return high === undefined || (mark !== undefined && compareHRS(mark, high) >= 0);
      });
    });
  }

  /** A mistaken `state import --force` of a state below the chain's last one. */
  #forcedLowerImport(): void {
    if (!this.#everyNodeSawTheNewestState()) return;
    const chainId = this.#chains[this.s.rng.int(this.#chains.length)]!;
    const key = etcdKeys.state(PREFIX, chainId);
    const high = this.checker.high(key);
    if (high === undefined || high.height < 3n) return;
    const lower = freshSignState(high.height - 2n);
    this.model.txn(
      { compare: [], success: [{ op: 'put', key, value: encodeSignState(lower) }], failure: [] },
      { node: 'operator', kind: 'operator' },
    );
    this.log(`operator forced ${chainId} down to ${hrsText(lower)}`);
    this.#operatorRepairs();
  }

  /**
   * The operator sees the alarms and, a few seconds later, imports every chain's last signed
   * state (from the audit log; here the highest state committed) where etcd lacks it or holds
   * less, with the same compare-and-swap `cometkms state import` uses.
   */
  #operatorRepairs(): void {
    if (this.#operatorDue) return;
    this.#operatorDue = true;
    const operator: Owner = { name: 'operator', alive: true, paused: false, held: [] };
    const client = new SimEtcdClient(this.s, this.model, 'operator', operator, {
      node: 'operator',
      kind: 'operator',
    });
    this.s.at(
      this.s.between(2_000, 6_000),
      () => {
        this.#operatorDue = false;
        for (const chainId of this.#chains) {
          const high = this.checker.high(etcdKeys.state(PREFIX, chainId));
          if (high === undefined) continue;
          void (async () => {
            const record = await readEtcdStateRecord(client, PREFIX, chainId);
            const current = record === undefined ? undefined : decodeOrUndefined(record.value);
            if (current !== undefined && compareHRS(current, high) >= 0) return;
            const bare = { ...freshSignState(high.height), round: high.round, step: high.step };
            const ok = await swapEtcdSignState(client, PREFIX, chainId, record, bare);
            this.log(`operator imported ${chainId} at ${hrsText(bare)}: ${ok ? 'done' : 'raced'}`);
            if (!ok) this.#operatorRepairs();
          })().catch(() => this.#operatorRepairs());
        }
      },
      WORLD,
    );
  }
}

const START = 1_700_000_000_000;

function pair(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

function fill(n: number): Uint8Array {
  return new Uint8Array(32).fill(n);
}

function decodeOrUndefined(raw: Buffer): SignState | undefined {
  try {
    return decodeSignState(raw, 'sim');
  } catch {
    return undefined;
  }
}

function hrsOfValue(raw: Buffer): string {
  const s = decodeOrUndefined(raw);
  return s === undefined ? '?' : hrsText(s);
}

/** Runs one seed. */
export async function runSeed(o: WorldOptions): Promise<RunResult> {
  return await new World(o).run();
}
