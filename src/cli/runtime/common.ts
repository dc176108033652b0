/**
 * The parts every node runtime shares, single node and cluster alike: the audit log and the
 * decision sink, the admin API (token, optional TLS), validator dialers with their metrics, the
 * /status pieces built from them, and the step runner of a graceful shutdown.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type pino from 'pino';
import { AuditLog } from '../../admin/audit.ts';
import { doubleSignReason, type Metrics } from '../../admin/metrics.ts';
import type { AdminRuntime } from '../../admin/runtime-view.ts';
import type { AdminServer } from '../../admin/server.ts';
import type { ChainStatus, HsmStatus } from '../../admin/types.ts';
import { STUCK_LINK_HOLD_OFF_MS, YieldWhenStuck } from '../../cluster/stuck-link.ts';
import { toHexUpper, validatorAddress } from '../../cometbft/keys.ts';
import { type HRS, type PubKey, Step } from '../../cometbft/types.ts';
import type { ChainSection, Config } from '../../config/types.ts';
import type { StateAlarm } from '../../guard/chain-guard.ts';
import { voteStep } from '../../guard/decide.ts';
import type { GuardDecision } from '../../guard/decision.ts';
import type { Hsm } from '../../pkcs11/hsm.ts';
import { ValidatorDialer } from '../../privval/dialer.ts';
import type { RequestHandler } from '../../privval/handler.ts';
import type { TransportIdentity } from '../../privval/identity.ts';
import { readAdminSecrets } from './admin-secrets.ts';
import type { HsmHealth } from './hsm-health.ts';

/** Where the audit log of a home lives. */
export function auditLogPath(home: string): string {
  return join(home, 'audit', 'audit.jsonl');
}

/** Opens the audit log of `config`'s home (creating its directory, mode 0700). */
export async function openAuditLog(config: Config, log: pino.Logger): Promise<AuditLog> {
  const path = auditLogPath(config.node.home);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  return await AuditLog.open({ path, nodeId: config.node.id, logger: log.child({ component: 'audit' }) });
}

const SIGNED_OUTCOMES = new Set<GuardDecision['outcome']>(['signed', 'resigned', 'timestamp_only']);

/** What one node refused or failed to sign for one chain since it started (for /status). */
export interface ChainCounts {
  /** requests refused (a final RemoteSignerError) */
  refused: number;
  /** of those, refusals that prevented a double sign */
  doubleSignRefused: number;
  /** requests answered "try again" because something failed (store, HSM, verification) */
  errors: number;
}

/**
 * Where every guard decision of a node goes: metrics, the audit log, the log (refusals and
 * retries at warn, the rest at debug), and per chain the time of the last signature and the
 * refusal and error counts for /status.
 */
export class DecisionSink {
  readonly #lastSignedAt = new Map<string, Date>();
  readonly #counts = new Map<string, ChainCounts>();
  /** set once the audit log is open; decisions before that only reach metrics and the log */
  audit: AuditLog | undefined;

  constructor(
    private readonly metrics: Metrics,
    private readonly log: pino.Logger,
  ) {}

  /** When this node last returned a signature for `chainId`. */
  lastSignedAt(chainId: string): Date | undefined {
    return this.#lastSignedAt.get(chainId);
  }

  /** What this node refused or failed to sign for `chainId` since it started. */
  counts(chainId: string): ChainCounts {
    return { ...(this.#counts.get(chainId) ?? { refused: 0, doubleSignRefused: 0, errors: 0 }) };
  }

  /** The `onDecision` callback of every ChainGuard of the node. */
  readonly record = (d: GuardDecision): void => {
    if (SIGNED_OUTCOMES.has(d.outcome)) this.#lastSignedAt.set(d.chainId, new Date());
    if (d.outcome === 'refused' || d.outcome === 'retry') this.#count(d);
    this.metrics.observeDecision(d);
    this.audit?.record(d);
    if (d.outcome === 'refused' || d.outcome === 'retry') {
      this.log.warn(decisionLogFields(d), `${d.kind} ${d.outcome}`);
    } else if (this.log.isLevelEnabled('debug')) {
      this.log.debug(decisionLogFields(d), `${d.kind} ${d.outcome}`);
    }
  };

  /**
   * The `onAlarm` callback of the guard of `chainId`: an error line when the chain's state needs
   * an operator (and again when the reason changes), a line when it is usable again, and the
   * `cometkms_state_alarm` gauge.
   */
  stateAlarm(chainId: string): (alarm: StateAlarm | undefined) => void {
    this.metrics.stateAlarm(chainId, false);
    return (alarm) => {
      this.metrics.stateAlarm(chainId, alarm !== undefined);
      if (alarm === undefined) {
        this.log.info({ chainId }, 'state alarm cleared: the chain has a usable sign state again');
      } else {
        this.log.error(
          { chainId, code: alarm.code, reason: alarm.reason },
          'STATE ALARM: not signing this chain until an operator acts',
        );
      }
    };
  }

  #count(d: GuardDecision): void {
    let c = this.#counts.get(d.chainId);
    if (c === undefined) {
      c = { refused: 0, doubleSignRefused: 0, errors: 0 };
      this.#counts.set(d.chainId, c);
    }
    if (d.outcome === 'retry') c.errors++;
    else {
      c.refused++;
      if (doubleSignReason(d) !== undefined) c.doubleSignRefused++;
    }
  }

  /** The `onRecordFailure` callback of the guard of `chainId`. */
  recordFailure(chainId: string): (reason: string) => void {
    return (reason) =>
      this.log.warn({ chainId, reason }, 'signature not recorded (the reservation still binds its HRS)');
  }
}

/**
 * The fields of a decision worth a log line (bigint height as a string: JSON has no bigint). A
 * refusal names everything an operator needs to find who asked: the chain, the HRS, the reason,
 * the validator endpoint and the remote node's id (or the cluster node that forwarded it).
 */
function decisionLogFields(d: GuardDecision): Record<string, unknown> {
  return {
    chainId: d.chainId,
    kind: d.kind,
    outcome: d.outcome,
    ...(d.height === undefined ? {} : { height: d.height.toString(), round: d.round, step: decisionStep(d) }),
    ...(d.code === undefined ? {} : { code: d.code }),
    ...(d.reason === undefined ? {} : { reason: d.reason }),
    ...(d.endpoint === undefined ? {} : { endpoint: d.endpoint }),
    ...(d.remoteNodeId === undefined ? {} : { remoteNodeId: d.remoteNodeId }),
    ...(d.forwardedBy === undefined ? {} : { forwardedBy: d.forwardedBy }),
    latencyMs: Math.round(d.latencyMs * 1000) / 1000,
  };
}

/**
 * The step of a decision: the one the guard recorded, else the one its message implies (the
 * guard may refuse a request before it names the step).
 */
function decisionStep(d: GuardDecision): number | undefined {
  if (d.step !== undefined) return d.step;
  if (d.kind === 'proposal') return Step.Propose;
  return d.type === undefined ? undefined : voteStep(d.type);
}

/** What lifecycle log lines (start, takeover, step-down, stop) say about one chain. */
export interface ChainLogSummary {
  chainId: string;
  /** the validator address of the chain's key (uppercase hex, as CometBFT prints it) */
  keyAddress: string;
  /** the last reserved `height/round/step` (as `cometkms status` writes it), or null when unknown */
  lastHrs: string | null;
}

/** The summary of one chain for lifecycle log lines. */
export function chainLogSummary(chainId: string, address: string, hrs: HRS | undefined): ChainLogSummary {
  return {
    chainId,
    keyAddress: address,
    lastHrs: hrs === undefined ? null : `${hrs.height}/${hrs.round}/${hrs.step}`,
  };
}

/** A running admin API and the base URL it answers on. */
export interface NodeAdmin {
  server: AdminServer;
  /** `http://host:port` or `https://host:port` (the bound port when `listen` asked for 0) */
  url: string;
}

/**
 * Starts the admin API of `config` over `runtime`: bearer token from `admin.token_file`, TLS
 * when `admin.tls_cert_file`/`tls_key_file` are set. A bind failure names `admin.listen`.
 */
export async function startNodeAdmin(
  config: Config,
  runtime: AdminRuntime,
  metrics: Metrics,
  log: pino.Logger,
): Promise<NodeAdmin> {
  const { token, tls } = await readAdminSecrets(config);
  // Loaded when a node starts, not by every command that imports this module (the demo does).
  const { startAdminServer } = await import('../../admin/server.ts');
  let server: AdminServer;
  try {
    server = await startAdminServer({
      listen: config.admin.listen,
      runtime,
      metrics,
      ...(token === undefined ? {} : { token }),
      publicRoutes: config.admin.public_routes,
      ...(tls === undefined ? {} : { tls }),
      logger: log,
    });
  } catch (err) {
    throw new Error(
      `admin API cannot listen on admin.listen ${config.admin.listen}: ${(err as Error).message}`,
    );
  }
  return { server, url: `${tls === undefined ? 'http' : 'https'}://${server.address}` };
}

/** One validator endpoint of a chain and the dialer that serves it. */
export interface ValidatorLink {
  addr: string;
  dialer: ValidatorDialer;
}

/**
 * One (not yet started) dialer per `[[chain.validator]]` of `chain`, answering with `handler`,
 * with its link state and reconnects reported to `metrics`. With `yieldWhenStuck` (cluster
 * mode), a connection on which this node can serve nothing is let go (src/cluster/stuck-link.ts).
 */
export function createDialers(
  chain: ChainSection,
  handler: RequestHandler,
  identity: TransportIdentity,
  metrics: Metrics,
  log: pino.Logger,
  yieldWhenStuck = false,
): ValidatorLink[] {
  return chain.validators.map((v) => {
    let dialer: ValidatorDialer | undefined;
    const stuck = yieldWhenStuck
      ? new YieldWhenStuck(handler, {
          now: () => performance.now(),
          onStuck: (why) => dialer?.yieldLink(STUCK_LINK_HOLD_OFF_MS, why),
        })
      : undefined;
    dialer = new ValidatorDialer({
      addr: v.addr,
      version: chain.protocol,
      identity,
      handler: stuck ?? handler,
      logger: log.child({ chainId: chain.id }),
      stages: metrics.stages,
    });
    dialer.on('connect', () => {
      stuck?.reset();
      metrics.validatorConnected(chain.id, v.addr, true);
      if (dialer.status.connects > 1) metrics.validatorReconnect(chain.id, v.addr);
    });
    dialer.on('disconnect', () => metrics.validatorConnected(chain.id, v.addr, false));
    return { addr: v.addr, dialer };
  });
}

/** The consensus address of a key as CometBFT prints it (upper-case hex). */
export function keyAddress(pubKey: PubKey): string {
  return toHexUpper(validatorAddress(pubKey));
}

/** The `chains[]` entry of /status for one chain at `hrs` (0/0/0 while it has no state). */
export function chainStatus(
  chain: ChainSection,
  address: string,
  hrs: HRS | undefined,
  validators: readonly ValidatorLink[],
  decisions: DecisionSink,
  alarm: StateAlarm | undefined,
): ChainStatus {
  const counts = decisions.counts(chain.id);
  return {
    chain_id: chain.id,
    key_type: chain.key_type,
    protocol: chain.protocol,
    address,
    height: Number(hrs?.height ?? 0n),
    round: hrs?.round ?? 0,
    step: hrs?.step ?? 0,
    last_signed_at: decisions.lastSignedAt(chain.id)?.toISOString() ?? null,
    state_alarm: alarm === undefined ? null : { code: alarm.code, reason: alarm.reason },
    refused: counts.refused,
    double_sign_refused: counts.doubleSignRefused,
    errors: counts.errors,
    validators: validators.map(({ addr, dialer }) => {
      const st = dialer.status;
      return {
        addr,
        connected: st.connected,
        ...(st.remoteNodeId === undefined ? {} : { remote_node_id: st.remoteNodeId }),
        connects: st.connects,
      };
    }),
  };
}

/** The `hsm` block of /status. */
export function hsmStatus(config: Config, health: HsmHealth, hsm: Hsm | undefined): HsmStatus {
  return {
    token_label: config.hsm.token_label,
    reachable: health.reachable,
    signing_session: hsm?.signingSessionOpen ?? false,
    ...(health.lastError === undefined ? {} : { last_error: health.lastError }),
  };
}

/**
 * How long one local shutdown step (closing connections, the HSM, the store, the audit log) may
 * take before the shutdown goes on without it. SIGTERM must end the process within seconds, as
 * supervisors expect; a step that hangs is named in the log and makes the exit unclean. Leaving
 * one unfinished is never unsafe: the process then ends as after a crash, which every durable
 * structure is built to survive (reservations are durable before any signature exists).
 */
export const SHUTDOWN_STEP_DEADLINE_MS = 4_000;

/**
 * Runs the steps of a graceful shutdown: a failed or overdue step is logged and the next ones
 * still run. `clean` stays true only while every step succeeded in time.
 */
export class ShutdownSteps {
  clean = true;

  constructor(private readonly log: pino.Logger) {}

  async step(
    what: string,
    fn: () => Promise<unknown>,
    deadlineMs = SHUTDOWN_STEP_DEADLINE_MS,
  ): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<'overdue'>((resolve) => {
      timer = setTimeout(() => resolve('overdue'), deadlineMs);
    });
    const run = Promise.resolve().then(fn);
    try {
      if ((await Promise.race([run, overdue])) === 'overdue') {
        run.catch(() => undefined);
        this.clean = false;
        this.log.error(`shutdown: ${what} did not finish within ${deadlineMs} ms; going on without it`);
      }
    } catch (err) {
      this.clean = false;
      this.log.error({ err }, `shutdown: ${what} failed`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Like {@link step}, for a step whose only job is to tell etcd (hand-over, lease revoke,
   * registry delete): gives up after `deadlineMs` so that an unreachable or frozen etcd cannot
   * hold the shutdown. Giving up is logged but leaves `clean` true: whatever the step would
   * have removed is bound to a lease and goes when the lease expires, and every signature is
   * fenced, so nothing is unsafe about leaving it to etcd. The abandoned call runs on in the
   * background until its own deadline or the client's close.
   */
  async bounded(what: string, deadlineMs: number, fn: () => Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), deadlineMs);
    });
    const run = Promise.resolve().then(fn);
    try {
      if ((await Promise.race([run, expired])) === 'expired') {
        // its late failure is of no interest any more (and must not go unhandled)
        run.catch(() => undefined);
        this.log.warn(
          `shutdown: ${what}: etcd did not answer within ${deadlineMs} ms; going on (its leases expire by themselves)`,
        );
      }
    } catch (err) {
      this.log.warn({ err }, `shutdown: ${what} failed; going on (its leases expire by themselves)`);
    } finally {
      clearTimeout(timer);
    }
  }
}
