/**
 * The cluster runtime (ARCHITECTURE.md §4, `[cluster]` present): every node dials every validator;
 * the leader signs with its guards on the etcd sign-state store, followers forward to it over
 * mutual TLS, and leadership moves by election, hand-over or fencing.
 *
 * Startup order, and why:
 *   1. home check and home lock — two processes must never share a home (identity, audit log);
 *   2. TLS material, etcd clients, HSM: every chain's public key, and one login to check the PIN
 *      (closed again at once: only the leader holds a signing session);
 *   3. guards on the fenced etcd store (loaded only when this node wins: the cache may be stale);
 *   4. audit log, forwarding server, admin API, cluster view, leadership — then the dialers, so
 *      no request arrives before everything it needs is in place.
 * Role changes are serialised: on winning, every guard reloads the replicated state, then the
 * signing session opens, and only then does the node serve; on losing, it stops serving at once
 * and closes the signing session (waiting for a signature in progress) before anything else.
 * Shutdown: hand leadership over first (another node takes over at once, and this node's
 * validator connections relay to it meanwhile), then stop the dialers (the request in flight
 * finishes), then close forwarding, leadership, HSM, etcd, audit, lock and admin API.
 */
import { randomBytes } from 'node:crypto';
import type pino from 'pino';
import type { AuditLog } from '../../admin/audit.ts';
import { Metrics } from '../../admin/metrics.ts';
import type { AdminRuntime, Readiness, TransferResult } from '../../admin/runtime-view.ts';
import type { NodeStatus } from '../../admin/types.ts';
import { ClusterChainHandler, leaderForwardHandler } from '../../cluster/cluster-handler.ts';
import { createEtcdClients, type EtcdClients } from '../../cluster/etcd-client.ts';
import { clusterEtcdOptions } from '../../cluster/etcd-config.ts';
import { ForwardClient, ForwardServer } from '../../cluster/forward.ts';
import { type LeaderInfo, Leadership } from '../../cluster/leadership.ts';
import {
  answerControl,
  FileBallotStorage,
  PeerMarkedStore,
  PeerQuorum,
  rememberedMembers,
} from '../../cluster/peer-marks.ts';
import { RoleTransitions } from '../../cluster/role.ts';
import { loadClusterTls } from '../../cluster/tls.ts';
import { compareHRS, type PrivvalMessage, Step } from '../../cometbft/types.ts';
import type { ChainSection, ClusterSection, Config } from '../../config/types.ts';
import { ChainGuard } from '../../guard/chain-guard.ts';
import { voteStep } from '../../guard/decide.ts';
import type { Hsm } from '../../pkcs11/hsm.ts';
import { loadIdentity, type TransportIdentity } from '../../privval/identity.ts';
import { EtcdSignStateStore } from '../../store/etcd.ts';
import { HighWaterMarks } from '../../store/high-water.ts';
import { acquireHomeLock, type HomeLock } from '../../store/lock.ts';
import type { SignState } from '../../store/types.ts';
import { VERSION } from '../../version.ts';
import { ClusterView } from './cluster-view.ts';
import {
  type ChainLogSummary,
  chainLogSummary,
  chainStatus,
  createDialers,
  DecisionSink,
  hsmStatus,
  keyAddress,
  type NodeAdmin,
  openAuditLog,
  ShutdownSteps,
  startNodeAdmin,
  type ValidatorLink,
} from './common.ts';
import { assertHomeInitialised } from './home.ts';
import { HsmHealth } from './hsm-health.ts';
import { openNodeHsm } from './hsm-keys.ts';

/** Options of {@link ClusterNode.start}. */
export interface ClusterNodeOptions {
  logger: pino.Logger;
}

/** One chain of the running node. */
interface ChainRuntime {
  config: ChainSection;
  guard: ChainGuard;
  /** the key's consensus address (upper-case hex) */
  address: string;
  validators: ValidatorLink[];
}

/**
 * How long a shutdown step that only talks to etcd may take. A healthy etcd answers in
 * milliseconds; an unreachable or frozen one must not hold SIGTERM (what those steps remove is
 * lease-bound and expires by itself).
 */
const SHUTDOWN_ETCD_DEADLINE_MS = 1_000;

/** How long a transfer waits to see the new leader before it reports back. */
const TRANSFER_WAIT_MS = 3_000;

/** A running cluster node; implements {@link AdminRuntime}. */
export class ClusterNode implements AdminRuntime {
  private readonly startedAt = Date.now();
  private readonly log: pino.Logger;
  private readonly metrics = new Metrics();
  private readonly health: HsmHealth;
  private readonly cluster: ClusterSection;
  private readonly decisions: DecisionSink;
  private readonly chains: ChainRuntime[] = [];
  private lock: HomeLock | undefined;
  private etcd: EtcdClients | undefined;
  private hsm: Hsm | undefined;
  private pin = '';
  private leadership: Leadership | undefined;
  private store: PeerMarkedStore | undefined;
  private view: ClusterView | undefined;
  private forwardServer: ForwardServer | undefined;
  private forwardClient: ForwardClient | undefined;
  private audit: AuditLog | undefined;
  private admin: NodeAdmin | undefined;
  /** the serving flag and the role transitions (reload, session, serve) */
  private roles: RoleTransitions | undefined;
  private leaderChanges = 0;
  private lastLeaderId: string | undefined;
  /** reports every etcd call of the store and the leadership to /metrics */
  private readonly observeEtcd = (op: string, ms: number, ok: boolean): void =>
    this.metrics.etcdCall(op, ms, ok);
  private stopping: Promise<boolean> | undefined;

  private constructor(
    private readonly config: Config,
    opts: ClusterNodeOptions,
  ) {
    if (config.cluster === undefined) throw new Error('ClusterNode needs a [cluster] section');
    this.cluster = config.cluster;
    this.log = opts.logger;
    this.health = new HsmHealth(() => this.metrics.hsmError());
    this.decisions = new DecisionSink(this.metrics, this.log);
  }

  /** Builds and starts a cluster node; on failure releases what it acquired and throws. */
  static async start(config: Config, opts: ClusterNodeOptions): Promise<ClusterNode> {
    const node = new ClusterNode(config, opts);
    try {
      await node.build();
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  /** The admin API's base URL. */
  get adminUrl(): string {
    if (!this.admin) throw new Error('the admin API is not running');
    return this.admin.url;
  }

  /** The forwarding server's bound address. */
  get forwardAddress(): string {
    if (!this.forwardServer) throw new Error('forwarding is not running');
    return this.forwardServer.address;
  }

  status(): NodeStatus {
    const l = this.leadership;
    const leader = l?.leader;
    const view = this.view;
    const members = view?.members ?? [];
    return {
      node_id: this.config.node.id,
      version: VERSION,
      mode: 'cluster',
      role: l?.role ?? 'follower',
      leader_id: leader?.nodeId ?? null,
      term: Number(l?.term ?? (leader !== undefined ? (view?.leaderRevision ?? 0) : 0)),
      uptime_s: Math.floor((Date.now() - this.startedAt) / 1000),
      hsm: hsmStatus(this.config, this.health, this.hsm),
      cluster: {
        etcd_endpoints: this.cluster.etcd_endpoints,
        members: members.map((m) => ({
          node_id: m.nodeId,
          forward_addr: m.advertise,
          leader: m.nodeId === leader?.nodeId,
        })),
        etcd_healthy: view?.etcdHealthy ?? false,
        leader_changes: this.leaderChanges,
      },
      chains: this.chains.map((c) =>
        chainStatus(
          c.config,
          c.address,
          this.replicatedState(c),
          c.validators,
          this.decisions,
          c.guard.alarm(),
        ),
      ),
    };
  }

  readiness(): Readiness {
    const leading = this.leadership?.role === 'leader';
    const checks: Record<string, boolean | string> = {
      running: this.stopping === undefined ? true : 'shutting down',
      etcd_healthy: this.view?.etcdHealthy ?? false,
      hsm_reachable: this.health.reachable ? true : (this.health.lastError ?? false),
      ...(leading
        ? { serving: this.roles?.serving ? true : 'leader not ready yet' }
        : { leader_known: this.leadership?.leader !== undefined ? true : 'no leader' }),
    };
    return { ready: Object.values(checks).every((v) => v === true), checks };
  }

  async transferLeadership(to?: string): Promise<TransferResult> {
    const l = this.leadership;
    if (l === undefined || l.role !== 'leader') {
      return {
        transferred: false,
        message: `this node is not the leader (the leader is ${l?.leader?.nodeId ?? 'unknown'})`,
      };
    }
    const me = this.config.node.id;
    if (to === me) return { transferred: false, message: `${me} already leads` };
    if (to !== undefined && !(this.view?.members ?? []).some((m) => m.nodeId === to)) {
      return { transferred: false, message: `no member ${JSON.stringify(to)} is registered` };
    }
    // Stop serving before the hand-over transaction: nothing new reaches the guards meanwhile.
    const token = l.token;
    const wasServing = this.roles?.stopServing() ?? false;
    await l.transferTo(to);
    if (l.token !== undefined && l.token === token) {
      // The hand-over transaction did not go through (etcd did not answer) and this node still
      // holds the same term: serve again rather than sit as a leader that forwards nowhere.
      this.roles?.resumeServing(wasServing);
      return { transferred: false, message: 'the hand-over did not reach etcd; this node still leads' };
    }
    const takenBy = await this.handedOver(TRANSFER_WAIT_MS);
    if (takenBy !== undefined) return { transferred: true, message: `${takenBy} leads now` };
    return { transferred: true, message: 'leadership handed over; no new leader seen yet' };
  }

  /**
   * After this node released the leader key: waits up to `waitMs` for another node to lead, and
   * logs who took over (or that nobody was seen to). Resolves with the new leader's id.
   */
  private async handedOver(waitMs: number): Promise<string | undefined> {
    const me = this.config.node.id;
    const until = Date.now() + waitMs;
    let takenBy: string | undefined;
    for (;;) {
      const now = this.leadership?.leader?.nodeId;
      if (now !== undefined && now !== me) takenBy = now;
      if (takenBy !== undefined || Date.now() >= until) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    this.log.info(
      { ...this.summary(), takenBy: takenBy ?? null },
      takenBy === undefined
        ? `handed leadership over; no new leader seen within ${waitMs} ms`
        : 'handed leadership over',
    );
    return takenBy;
  }

  /** What lifecycle log lines say: version, node id, each chain's key and last HRS. */
  summary(): { version: string; nodeId: string; chains: ChainLogSummary[] } {
    return {
      version: VERSION,
      nodeId: this.config.node.id,
      chains: this.chains.map((c) => chainLogSummary(c.config.id, c.address, this.replicatedState(c))),
    };
  }

  /** True only while this node leads and is ready to sign (see LocalLeadership). */
  servesLocally(): boolean {
    return this.roles?.servesLocally() ?? false;
  }

  stop(): Promise<boolean> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async build(): Promise<void> {
    const { config, cluster } = this;
    const home = config.node.home;
    await assertHomeInitialised(home);
    this.lock = await acquireHomeLock(home);

    const tls = await loadClusterTls(cluster);
    this.etcd = createEtcdClients(await clusterEtcdOptions(cluster, tls));

    // A wrong PIN must stop the node now, not when it first wins an election; only the leader
    // keeps the signing session open.
    const { hsm, pin, signers } = await openNodeHsm(config);
    this.hsm = hsm;
    this.pin = pin;
    await hsm.closeSigningSession();

    const forwardLog = this.log.child({ component: 'forward' });
    const forwardClient = new ForwardClient({ tls, logger: forwardLog });
    this.forwardClient = forwardClient;
    const leadership = new Leadership({
      client: this.etcd.client,
      members: this.etcd.members,
      prefix: cluster.etcd_prefix,
      nodeId: config.node.id,
      advertise: cluster.forward_advertise,
      leaseTtlS: cluster.lease_ttl_s,
      logger: this.log.child({ component: 'leadership' }),
      observer: this.observeEtcd,
      // fenced pre-emption: heartbeats to the leader over the (kept warm) forwarding connection
      peers: forwardClient,
    });
    this.leadership = leadership;
    const marks = new HighWaterMarks(home, (chainId, err) =>
      this.log.error({ chainId, err }, 'cannot write the high-water mark of a chain'),
    );
    // Read every chain's mark now: a damaged one must stop the node here, not at its first vote.
    for (const chain of config.chains) marks.get(chain.id);
    const etcdClient = this.etcd.client;
    // Peer marks (peer-marks.ts): every host runs one etcd member and one KMS node, so the
    // cluster has as many nodes as etcd endpoints; a majority of them must hold an HRS before
    // the leader signs it, and a new leader reads a majority before it serves.
    const quorum = new PeerQuorum({
      nodeId: config.node.id,
      peers: forwardClient,
      members: rememberedMembers(() => this.view?.members ?? []),
      clusterSize: cluster.etcd_endpoints.length,
      marks,
      chains: config.chains.map((c) => c.id),
      ballots: new FileBallotStorage(home),
      newBallot: () => randomBytes(16).toString('hex'),
      logger: this.log.child({ component: 'peer-marks' }),
    });
    const store = new PeerMarkedStore(
      quorum,
      () =>
        new EtcdSignStateStore({
          client: etcdClient,
          prefix: cluster.etcd_prefix,
          leadership,
          marks,
          // the PeerMarkedStore's confirm makes it durable along with the peers' marks
          markConfirmedByCaller: true,
          observer: this.observeEtcd,
        }),
    );
    this.store = store;
    for (const [i, chain] of config.chains.entries()) {
      const guard = new ChainGuard({
        chainId: chain.id,
        protocol: chain.protocol,
        signer: this.health.observe(signers[i]!),
        store: this.store,
        maxHeightJump: chain.max_height_jump,
        onDecision: this.decisions.record,
        onRecordFailure: this.decisions.recordFailure(chain.id),
        onAlarm: this.decisions.stateAlarm(chain.id),
        stages: this.metrics.stages,
      });
      this.chains.push({ config: chain, guard, address: keyAddress(signers[i]!.pubKey), validators: [] });
    }
    const chainsById = new Map(this.chains.map((c) => [c.config.id, c]));
    this.metrics.declareNode(
      { nodeId: config.node.id, mode: 'cluster', chains: config.chains },
      {
        chainState: (id) => {
          const c = chainsById.get(id);
          return c === undefined ? undefined : this.replicatedState(c);
        },
        hsmUp: () => this.health.reachable,
        etcdUp: () => this.view?.etcdHealthy ?? false,
      },
    );

    this.audit = await openAuditLog(config, this.log);
    this.decisions.audit = this.audit;
    this.forwardServer = await ForwardServer.start({
      listen: cluster.forward_listen,
      tls,
      handle: leaderForwardHandler(
        new Map(this.chains.map((c) => [c.config.id, { protocol: c.config.protocol, guard: c.guard }])),
        this,
      ),
      control: (body) => answerControl(quorum, body),
      logger: forwardLog,
    });
    this.admin = await startNodeAdmin(config, this, this.metrics, this.log.child({ component: 'admin' }));

    this.view = new ClusterView({
      client: this.etcd.client,
      prefix: cluster.etcd_prefix,
      nodeId: config.node.id,
      advertise: cluster.forward_advertise,
      memberTtlS: Math.max(5, cluster.lease_ttl_s * 3),
      pollMs: 1_000,
      logger: this.log.child({ component: 'cluster-view' }),
      // A follower remembers what the leader reserved too, so that a later etcd restore or wipe is
      // caught by every node, not only by the one that signed.
      onState: (chainId, hrs) => {
        if (this.chains.some((c) => c.config.id === chainId)) marks.observe(chainId, hrs);
      },
    });
    await this.view.start();

    const roles = new RoleTransitions({
      nodeId: config.node.id,
      leadership,
      guards: () => this.chains.map((c) => c.guard),
      session: { open: () => hsm.openSigningSession(this.pin), close: () => hsm.closeSigningSession() },
      setForwardTarget: (leader) => forwardClient.setLeader(leader),
      collectMarks: () => store.collect(),
      stopping: () => this.stopping !== undefined,
      onServing: (serving) => {
        this.metrics.setLeader(serving);
        if (!serving) {
          const leader = this.leadership?.leader?.nodeId ?? null;
          this.log.info({ ...this.summary(), leader }, 'leader: stepped down');
        }
      },
      // Its one info line, 'leader: serving' (the takeover), names what every lifecycle line does.
      log: {
        info: (obj, msg) => this.log.info({ ...this.summary(), ...obj }, msg),
        warn: (obj, msg) => this.log.warn(obj, msg),
        error: (obj, msg) => this.log.error(obj, msg),
      },
    });
    this.roles = roles;
    leadership.on('leader', () => roles.onLeader());
    leadership.on('change', () => this.countLeaderChange());
    leadership.on('preempted', () => this.metrics.leaderPreempted());
    leadership.on('follower', (leader: LeaderInfo | undefined) => roles.onFollower(leader));
    await leadership.start();
    if (!this.view.etcdHealthy) {
      // Not fatal (see start.ts): the node relays "try again" and campaigns once etcd answers.
      this.log.warn(
        { endpoints: cluster.etcd_endpoints },
        'etcd does not answer: following and signing nothing until it does',
      );
    }

    this.startDialers(await loadIdentity(home), forwardClient);
    const summary = this.summary();
    this.log.info(
      {
        ...summary,
        mode: 'cluster',
        role: leadership.role,
        leader: leadership.leader?.nodeId ?? null,
        admin: this.adminUrl,
        forward: this.forwardServer.address,
        chains: summary.chains.map((c, i) => ({
          ...c,
          validators: config.chains[i]!.validators.map((v) => v.addr),
        })),
      },
      'ready',
    );
  }

  private startDialers(identity: TransportIdentity, forwarder: ForwardClient): void {
    for (const c of this.chains) {
      const handler = new ClusterChainHandler({
        chainId: c.config.id,
        protocol: c.config.protocol,
        guard: c.guard,
        leadership: this,
        forwarder,
        onForward: (result) => this.metrics.forwarded(result),
        stages: this.metrics.stages,
        onRefusalRelayed: (request, reason, ctx) =>
          this.log.warn(
            {
              chainId: c.config.id,
              ...requestHrs(request),
              reason,
              ...ctx,
              leader: forwarder.target?.nodeId,
            },
            `${request.kind === 'signProposalRequest' ? 'proposal' : 'vote'} refused by the leader`,
          ),
      });
      c.validators.push(...createDialers(c.config, handler, identity, this.metrics, this.log, true));
    }
    for (const c of this.chains) for (const v of c.validators) v.dialer.start();
  }

  /** Counts a change of the known leader (to another node, or to none). */
  private countLeaderChange(): void {
    const now = this.leadership?.leader?.nodeId;
    if (now === this.lastLeaderId) return;
    this.lastLeaderId = now;
    this.leaderChanges++;
    this.metrics.leaderChanged();
  }

  /**
   * The state /status and the metrics report for a chain: the replicated state every node
   * watches, so that all nodes report the same; the leader's own guard when it is ahead (its
   * watch event may lag).
   */
  private replicatedState(c: ChainRuntime): SignState | undefined {
    let state = this.view?.replicated(c.config.id);
    if (this.servesLocally()) {
      const own = c.guard.lastState();
      if (own !== undefined && (state === undefined || compareHRS(own, state) > 0)) state = own;
    }
    return state;
  }

  private async shutdown(): Promise<boolean> {
    const steps = new ShutdownSteps(this.log);
    const step = steps.step.bind(steps);
    const l = this.leadership;
    // Hand over first: the others see the leader key deleted and one takes over at once, while
    // this node's validator connections keep relaying to it until they are stopped below.
    let handOver: Promise<unknown> = Promise.resolve();
    if (l?.role === 'leader') {
      this.roles?.stopServing();
      await steps.bounded('handing leadership over', SHUTDOWN_ETCD_DEADLINE_MS, () => l.resign());
      // Named in the log once seen; meanwhile the validator connections are taken down.
      handOver = this.handedOver(SHUTDOWN_ETCD_DEADLINE_MS);
    }
    await step('stopping validator connections', () =>
      Promise.all(this.chains.flatMap((c) => c.validators.map((v) => v.dialer.stop()))),
    );
    await handOver;
    this.roles?.stopServing();
    if (this.forwardServer)
      await step('closing forwarding', () => (this.forwardServer as ForwardServer).close());
    this.forwardClient?.close();
    if (l) {
      await steps.bounded('leaving the election', SHUTDOWN_ETCD_DEADLINE_MS, () => l.stop({ revoke: true }));
    }
    await step('finishing role transitions', () => this.roles?.settled() ?? Promise.resolve());
    const view = this.view;
    if (view)
      await steps.bounded('leaving the member registry', SHUTDOWN_ETCD_DEADLINE_MS, () => view.stop());
    if (this.hsm) {
      const hsm = this.hsm;
      await step('closing the HSM signing session', () => hsm.closeSigningSession());
      await step('closing the HSM', () => hsm.close());
    }
    this.metrics.setLeader(false);
    if (this.store) await step('closing the sign-state store', () => (this.store as PeerMarkedStore).close());
    this.etcd?.close();
    if (this.audit) await step('closing the audit log', () => (this.audit as AuditLog).close());
    if (this.lock) await step('releasing the home lock', () => (this.lock as HomeLock).release());
    const admin = this.admin;
    if (admin) await step('closing the admin API', () => admin.server.close());
    return steps.clean;
  }
}

/** The HRS a vote or proposal request asks for, as log fields. */
function requestHrs(request: PrivvalMessage): Record<string, unknown> {
  const m =
    request.kind === 'signVoteRequest'
      ? request.vote
      : request.kind === 'signProposalRequest'
        ? request.proposal
        : undefined;
  if (m === undefined) return {};
  const step = request.kind === 'signProposalRequest' ? Step.Propose : voteStep(m.type);
  return { height: m.height.toString(), round: m.round, step };
}
