/**
 * The single-node runtime (ARCHITECTURE.md §4, the embedded default): builds every part of a
 * node from a Config, runs it, and takes it down again.
 *
 * Startup order, and why:
 *   1. home check and file store (takes the home lock, verifies every chain's state) — before
 *      the HSM, so a second process on the same home or a bad state file stops here;
 *   2. HSM: PIN, every chain's key, signing session (a single node is always the leader);
 *   3. one ChainGuard per chain, loaded from the store;
 *   4. audit log, admin API;
 *   5. one dialer per validator endpoint — last, so no request can arrive before everything it
 *      needs is in place, and any startup error happens before a validator is ever dialed.
 * Shutdown: stop the dialers (the request in flight finishes), close the HSM signing session,
 * the audit log, the store (releasing the lock) and last the admin API.
 */
import type pino from 'pino';
import type { AuditLog } from '../../admin/audit.ts';
import { Metrics } from '../../admin/metrics.ts';
import type { AdminRuntime, Readiness, TransferResult } from '../../admin/runtime-view.ts';
import type { NodeStatus } from '../../admin/types.ts';
import type { ChainSection, Config } from '../../config/types.ts';
import { ChainGuard } from '../../guard/chain-guard.ts';
import type { Hsm } from '../../pkcs11/hsm.ts';
import { loadIdentity } from '../../privval/identity.ts';
import { FileSignStateStore } from '../../store/file.ts';
import type { SignStateStore } from '../../store/types.ts';
import { VERSION } from '../../version.ts';
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
import { CrashAfterReserveStore } from './crash-hook.ts';
import { assertHomeInitialised } from './home.ts';
import { HsmHealth } from './hsm-health.ts';
import { openNodeHsm } from './hsm-keys.ts';

/** Options of {@link SingleNode.start}. */
export interface SingleNodeOptions {
  logger: pino.Logger;
  /** TEST-ONLY: probability of SIGKILL right after a reservation (see crash-hook.ts) */
  crashAfterReserve?: number;
}

/** One chain of the running node. */
interface ChainRuntime {
  config: ChainSection;
  guard: ChainGuard;
  /** the key's consensus address (upper-case hex) */
  address: string;
  /** one per [[chain.validator]], in config order */
  validators: ValidatorLink[];
}

/**
 * A running single node. Implements {@link AdminRuntime} for the admin API. Build it with
 * {@link SingleNode.start}; take it down with {@link SingleNode.stop}.
 */
export class SingleNode implements AdminRuntime {
  private readonly startedAt = Date.now();
  private readonly log: pino.Logger;
  private readonly metrics = new Metrics();
  private readonly health: HsmHealth;
  private readonly decisions: DecisionSink;
  private readonly chains: ChainRuntime[] = [];
  private store: SignStateStore | undefined;
  private hsm: Hsm | undefined;
  private audit: AuditLog | undefined;
  private admin: NodeAdmin | undefined;
  private stopping: Promise<boolean> | undefined;

  private constructor(
    private readonly config: Config,
    private readonly opts: SingleNodeOptions,
  ) {
    this.log = opts.logger;
    this.health = new HsmHealth(() => this.metrics.hsmError());
    this.decisions = new DecisionSink(this.metrics, this.log);
  }

  /**
   * Builds and starts a node from `config`. Throws an operator-facing error, with everything
   * acquired so far released again, if any part cannot start.
   */
  static async start(config: Config, opts: SingleNodeOptions): Promise<SingleNode> {
    if (config.cluster) throw new Error('SingleNode runs a config without [cluster]');
    const node = new SingleNode(config, opts);
    try {
      await node.build();
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  /** The admin API's base URL (with the bound port when `listen` asked for port 0). */
  get adminUrl(): string {
    if (!this.admin) throw new Error('the admin API is not running');
    return this.admin.url;
  }

  status(): NodeStatus {
    return {
      node_id: this.config.node.id,
      version: VERSION,
      mode: 'single',
      role: 'leader',
      leader_id: this.config.node.id,
      term: 0,
      uptime_s: Math.floor((Date.now() - this.startedAt) / 1000),
      hsm: hsmStatus(this.config, this.health, this.hsm),
      chains: this.chains.map((c) =>
        chainStatus(c.config, c.address, c.guard.lastState(), c.validators, this.decisions, c.guard.alarm()),
      ),
    };
  }

  readiness(): Readiness {
    const checks: Record<string, boolean | string> = {
      running: this.stopping === undefined ? true : 'shutting down',
      hsm_signing_session: this.hsm?.signingSessionOpen ?? false,
      hsm_reachable: this.health.reachable ? true : (this.health.lastError ?? false),
    };
    return { ready: Object.values(checks).every((v) => v === true), checks };
  }

  /** What the lifecycle log lines (ready, stopped) say: version, node id, each chain's key and last HRS. */
  summary(): { version: string; nodeId: string; chains: ChainLogSummary[] } {
    return {
      version: VERSION,
      nodeId: this.config.node.id,
      chains: this.chains.map((c) => chainLogSummary(c.config.id, c.address, c.guard.lastState())),
    };
  }

  async transferLeadership(): Promise<TransferResult> {
    return { transferred: false, message: 'single-node mode has no other node' };
  }

  /**
   * Graceful shutdown in the order of the module comment. Idempotent; resolves true when every
   * step succeeded (a failed step is logged and the others still run).
   */
  stop(): Promise<boolean> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async build(): Promise<void> {
    const { config } = this;
    const home = config.node.home;
    const chainIds = config.chains.map((c) => c.id);
    await assertHomeInitialised(home);
    const fileStore = await FileSignStateStore.open(home, { chainIds, configPath: config.path });
    this.store = fileStore;
    const store =
      this.opts.crashAfterReserve === undefined
        ? fileStore
        : new CrashAfterReserveStore(fileStore, this.opts.crashAfterReserve);
    if (this.opts.crashAfterReserve !== undefined) {
      this.log.warn(
        { probability: this.opts.crashAfterReserve },
        'TEST-ONLY crash-after-reserve fault hook is armed: this node will SIGKILL itself',
      );
    }

    // A single node is always the leader: it keeps the signing session open from the start.
    const { hsm, signers } = await openNodeHsm(config);
    this.hsm = hsm;
    this.metrics.setLeader(true);

    for (const [i, chain] of config.chains.entries()) {
      const guard = new ChainGuard({
        chainId: chain.id,
        protocol: chain.protocol,
        signer: this.health.observe(signers[i]!),
        store,
        maxHeightJump: chain.max_height_jump,
        onDecision: this.decisions.record,
        onRecordFailure: this.decisions.recordFailure(chain.id),
        onAlarm: this.decisions.stateAlarm(chain.id),
        stages: this.metrics.stages,
      });
      await guard.init();
      this.chains.push({ config: chain, guard, address: keyAddress(signers[i]!.pubKey), validators: [] });
    }
    const guards = new Map(this.chains.map((c) => [c.config.id, c.guard]));
    this.metrics.declareNode(
      { nodeId: config.node.id, mode: 'single', chains: config.chains },
      { chainState: (id) => guards.get(id)?.lastState(), hsmUp: () => this.health.reachable },
    );

    this.audit = await openAuditLog(config, this.log);
    this.decisions.audit = this.audit;
    this.admin = await startNodeAdmin(config, this, this.metrics, this.log);

    const identity = await loadIdentity(home);
    for (const c of this.chains) {
      c.validators.push(...createDialers(c.config, c.guard, identity, this.metrics, this.log));
    }
    for (const c of this.chains) for (const v of c.validators) v.dialer.start();
    const summary = this.summary();
    this.log.info(
      {
        ...summary,
        mode: 'single',
        admin: this.adminUrl,
        chains: summary.chains.map((c, i) => ({
          ...c,
          validators: config.chains[i]!.validators.map((v) => v.addr),
        })),
      },
      'ready',
    );
  }

  private async shutdown(): Promise<boolean> {
    const steps = new ShutdownSteps(this.log);
    const step = steps.step.bind(steps);
    // Dialers first: no new request can arrive, and stop() waits for the one in flight, so the
    // HSM session below never closes under a signature.
    await step('stopping validator connections', () =>
      Promise.all(this.chains.flatMap((c) => c.validators.map((v) => v.dialer.stop()))),
    );
    const { hsm, audit, store, admin } = this;
    if (hsm) {
      await step('closing the HSM signing session', () => hsm.closeSigningSession());
      await step('closing the HSM', () => hsm.close());
    }
    this.metrics.setLeader(false);
    if (audit) await step('closing the audit log', () => audit.close());
    // Closing the store releases the home lock: only once nothing can sign any more.
    if (store) await step('closing the sign-state store', () => store.close());
    // Last, so /healthz and /status answer for as long as the node is up.
    if (admin) await step('closing the admin API', () => admin.server.close());
    return steps.clean;
  }
}
