/**
 * One simulated CometKMS cluster node, built from the production classes (Leadership,
 * EtcdSignStateStore, HighWaterMarks, ChainGuard, RoleTransitions, ClusterView,
 * ClusterChainHandler, leaderForwardHandler, PeerQuorum, PeerMarkedStore) on the simulator's
 * ports: the etcd model, the simulated HSM, simulated time, and the simulated network for
 * forwarding and for the peers' control requests (marks, raise, heartbeat).
 *
 * An incarnation is one run of the process. A crash ends it: its pending events are dropped and
 * only what was durable survives (the high-water marks written through `MarkStorage`, the
 * promised ballot through `BallotStorage`). A pause
 * holds its events until it resumes, with its beliefs as they were (a zombie leader).
 */

import { ClusterView } from '../src/cli/runtime/cluster-view.ts';
import { ClusterChainHandler, type Forwarder, leaderForwardHandler } from '../src/cluster/cluster-handler.ts';
import type { ForwardOutcome, ForwardResult } from '../src/cluster/forward.ts';
import { type LeaderInfo, Leadership } from '../src/cluster/leadership.ts';
import {
  type BallotStorage,
  PeerMarkedStore,
  PeerQuorum,
  rememberedMembers,
} from '../src/cluster/peer-marks.ts';
import { RoleTransitions } from '../src/cluster/role.ts';
import type { HRS } from '../src/cometbft/types.ts';
import { ChainGuard, type GuardPlantedBugs } from '../src/guard/chain-guard.ts';
import type { Clock, Timer } from '../src/ports/clock.ts';
import type { PeerAddress, PeerMark, PeerMarks, PeerPort } from '../src/ports/peers.ts';
import { EtcdSignStateStore, type StorePlantedBugs } from '../src/store/etcd.ts';
import { HighWaterMarks, type MarkStorage } from '../src/store/high-water.ts';
import type { Checker } from './checker.ts';
import { type EtcdModel, SimEtcdClient } from './etcd-model.ts';
import { SimHsm } from './hsm.ts';
import type { Owner, Scheduler } from './scheduler.ts';

/** A clock on simulated time whose timers are events of `owner`. */
export function simClock(s: Scheduler, owner: Owner): Clock {
  return {
    now: () => s.now,
    setTimeout(fn, ms) {
      let live = true;
      s.at(ms, () => live && fn(), owner);
      return { cancel: () => (live = false) };
    },
    setInterval(fn, ms): Timer {
      let live = true;
      const tick = () => {
        if (!live) return;
        s.at(ms, tick, owner);
        fn();
      };
      s.at(ms, tick, owner);
      return { cancel: () => (live = false) };
    },
    defer(fn) {
      s.at(0, fn, owner);
    },
  };
}

/** The node's disk: what a crash keeps. */
class DurableMarks implements MarkStorage {
  readonly #marks = new Map<string, HRS>();
  read(chainId: string): HRS | undefined {
    return this.#marks.get(chainId);
  }
  write(chainId: string, hrs: HRS): void {
    this.#marks.set(chainId, { ...hrs });
  }
}

/** The node's promised ballot: durable, like the marks. */
class DurableBallot implements BallotStorage {
  #ballot: string | undefined;
  read(): string | undefined {
    return this.#ballot;
  }
  write(ballot: string): void {
    this.#ballot = ballot;
  }
}

/** Settings shared by every node. */
export interface NodeSettings {
  chains: string[];
  /** how many KMS nodes the cluster has (the peer marks' majority) */
  clusterSize: number;
  leaseTtlS: number;
  maxHeightJump: number;
  storeBugs: StorePlantedBugs;
  guardBugs: GuardPlantedBugs;
  /** planted bug `no-peer-marks`: collect and confirm ask nobody */
  noPeerMarks: boolean;
}

/** What the world gives a node to reach the others. */
export interface Peers {
  /** delivers a forwarded request to `nodeId`'s leader side, or fails like the network would */
  forward(from: string, to: string, chainId: string, body: Uint8Array): Promise<ForwardResult>;
  /**
   * runs `answer` on `to`'s current incarnation as a control request over the network: undefined
   * when the network or the node gives no answer within `deadlineMs`
   */
  control<T>(
    from: string,
    to: string,
    answer: (target: Incarnation) => T | Promise<T>,
    deadlineMs: number,
  ): Promise<T | undefined>;
  /** a line for the history */
  log(line: string): void;
}

/** The PeerPort of node `from` on the simulated network. */
function simPeerPort(from: string, peers: Peers): PeerPort {
  return {
    marks: (peer: PeerAddress, ballot: string, deadlineMs: number): Promise<PeerMarks | undefined> =>
      peers.control(from, peer.nodeId, (t) => t.quorum.answerMarks(ballot), deadlineMs),
    raise: async (peer: PeerAddress, ballot: string, mark: PeerMark, deadlineMs: number): Promise<boolean> =>
      (await peers.control(from, peer.nodeId, (t) => t.quorum.answerRaise(ballot, mark), deadlineMs)) ===
      true,
    heartbeat: async (peer: PeerAddress, deadlineMs: number): Promise<boolean> =>
      (await peers.control(from, peer.nodeId, () => true, deadlineMs)) === true,
  };
}

/** One incarnation: the running process. */
export class Incarnation {
  readonly owner: Owner;
  readonly hsm: SimHsm;
  readonly leadership: Leadership;
  readonly roles: RoleTransitions;
  readonly quorum: PeerQuorum;
  readonly handlers = new Map<string, ClusterChainHandler>();
  readonly serveForwarded: (chainId: string, body: Uint8Array) => Promise<ForwardOutcome>;
  readonly #view: ClusterView;
  forwardTarget: LeaderInfo | undefined;

  constructor(
    s: Scheduler,
    model: EtcdModel,
    checker: Checker,
    readonly nodeId: string,
    n: number,
    marksStorage: MarkStorage,
    ballots: BallotStorage,
    settings: NodeSettings,
    readonly prefix: string,
    peers: Peers,
  ) {
    const owner: Owner = { name: `${nodeId}#${n}`, alive: true, paused: false, held: [] };
    this.owner = owner;
    const clock = simClock(s, owner);
    const writer = { node: nodeId, kind: 'kms' as const };
    const etcd = new SimEtcdClient(s, model, nodeId, owner, writer);
    const members = Array.from(
      { length: model.members },
      (_, i) => new SimEtcdClient(s, model, nodeId, owner, writer, i),
    );
    const log = {
      info: (_: object, msg: string) => peers.log(`${nodeId} ${msg}`),
      warn: (_: object, msg: string) => peers.log(`${nodeId} ${msg}`),
      error: (_: object, msg: string) => peers.log(`${nodeId} ${msg}`),
    };
    const peerPort = simPeerPort(nodeId, peers);
    this.leadership = new Leadership({
      client: etcd,
      members,
      prefix,
      nodeId,
      advertise: nodeId,
      leaseTtlS: settings.leaseTtlS,
      logger: log,
      clock,
      peers: peerPort,
    });
    const marks = new HighWaterMarks(
      marksStorage,
      (chainId) => peers.log(`${nodeId} mark of ${chainId} failed`),
      clock,
    );
    let ballotCount = 0;
    const view = new ClusterView({
      client: etcd,
      prefix,
      nodeId,
      advertise: nodeId,
      memberTtlS: 5,
      pollMs: 1_000,
      logger: log,
      onState: (chainId, hrs) => {
        if (settings.chains.includes(chainId)) marks.observe(chainId, hrs);
      },
      clock,
    });
    this.#view = view;
    this.quorum = new PeerQuorum({
      nodeId,
      peers: peerPort,
      members: rememberedMembers(() => view.members),
      clusterSize: settings.clusterSize,
      marks,
      chains: settings.chains,
      ballots,
      newBallot: () => `${nodeId}#${n}#${++ballotCount}`,
      logger: log,
      plantedBugs: {
        noPeerMarks: settings.noPeerMarks,
        noHighWater: settings.storeBugs.noHighWater === true,
      },
    });
    const leadership = this.leadership;
    const store = new PeerMarkedStore(
      this.quorum,
      () =>
        new EtcdSignStateStore({
          client: etcd,
          prefix,
          leadership,
          marks,
          markConfirmedByCaller: true,
          plantedBugs: settings.storeBugs,
        }),
    );
    this.hsm = new SimHsm(s, owner, nodeId, checker);
    const guards = settings.chains.map(
      (chainId) =>
        new ChainGuard({
          chainId,
          protocol: 'v0.38',
          signer: this.hsm,
          store,
          maxHeightJump: settings.maxHeightJump,
          now: clock.now,
          onAlarm: (alarm) => peers.log(`${nodeId} ${chainId} alarm ${alarm?.code ?? 'cleared'}`),
          plantedBugs: settings.guardBugs,
        }),
    );
    this.roles = new RoleTransitions({
      nodeId,
      leadership: this.leadership,
      guards: () => guards,
      session: this.hsm,
      setForwardTarget: (leader) => {
        this.forwardTarget = leader;
      },
      stopping: () => false,
      collectMarks: () => store.collect(),
      clock,
      log,
    });
    this.leadership.on('leader', () => this.roles.onLeader());
    this.leadership.on('follower', (leader: LeaderInfo | undefined) => this.roles.onFollower(leader));
    const forwarder: Forwarder = {
      forward: (chainId, body) => {
        const to = this.forwardTarget;
        if (to === undefined) return Promise.resolve({ status: 'no_leader', reason: 'no leader known' });
        return peers.forward(nodeId, to.nodeId, chainId, body);
      },
    };
    guards.forEach((guard, i) => {
      const chainId = settings.chains[i]!;
      this.handlers.set(
        chainId,
        new ClusterChainHandler({ chainId, protocol: 'v0.38', guard, leadership: this.roles, forwarder }),
      );
    });
    this.serveForwarded = leaderForwardHandler(
      new Map(guards.map((guard, i) => [settings.chains[i]!, { protocol: 'v0.38' as const, guard }])),
      this.roles,
    );
  }

  /** Starts the view and the election (as an event of this incarnation). */
  async start(): Promise<void> {
    await this.#view.start();
    await this.leadership.start();
  }

  /** "createRevision|lease|value" of the term this incarnation serves with, if it serves. */
  servingToken(): string | undefined {
    if (!this.roles.servesLocally()) return undefined;
    const t = this.leadership.token;
    return t === undefined ? undefined : `${t.createRevision}|${t.leaseId}|${t.leaderValue}`;
  }
}

/** A node across its incarnations: its id, its disk, and the current process if any. */
export class SimNode {
  readonly marks: MarkStorage = new DurableMarks();
  readonly ballots: BallotStorage = new DurableBallot();
  current: Incarnation | undefined;
  incarnations = 0;

  constructor(readonly id: string) {}
}
