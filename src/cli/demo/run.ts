/**
 * `cometkms demo`, start to finish: provision, start, sign, kill the leader, measure the
 * failover, summarise, clean up.
 *
 * Everything the demo starts is owned by one {@link Demo}; `cleanup()` runs on success, on any
 * error and on Ctrl-C (the caller aborts the signal), and stops things in dependency order:
 * the simulated validator, then the KMS nodes (SIGTERM, SIGKILL after a bound), then etcd,
 * then the temporary directory (unless --keep). Exit hooks in children.ts and the etcd launcher
 * SIGKILL whatever is left if the process ends some other way.
 */
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { type EtcdCluster, findExecutable, launchEtcdCluster } from '../../cluster/etcd-launcher.ts';
import { freeLoopbackPort } from '../../cluster/free-port.ts';
import { SOFTHSM_MODULE } from '../../pkcs11/softhsm.ts';
import { type SimulationSummary, ValidatorSimulator } from '../../simulator/simulator.ts';
import { ChildProcesses } from './children.ts';
import { firstArrivalOf, signedSince } from './failover.ts';
import { KmsNode } from './kms-node.ts';
import type { DemoOptions } from './options.ts';
import { WatchedSignRecord } from './sign-watch.ts';
import { type DemoSummary, formatSummary, type NodeFinal, verdict } from './summary.ts';
import { LiveView, type NodeView } from './view.ts';
import {
  type ClusterSettings,
  DEMO_CHAIN,
  initDemoChainState,
  makeCerts,
  type NodeTls,
  provisionTokens,
  writeNodeConfig,
} from './workspace.ts';

/** Where the demo writes: human output, and whether it is a terminal (live redraw). */
export interface DemoIo {
  out: Writable;
  tty: boolean;
}

/** Thrown (as the abort reason) when the demo is stopped by SIGINT or SIGTERM. */
export class DemoInterrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
    this.name = 'DemoInterrupted';
  }
}

/** The leader is killed after this share of the duration. */
const KILL_AT = 0.4;
/** How long to wait for the first signature once the nodes are up. */
const FIRST_SIGNATURE_WITHIN_MS = 30_000;
/** A failover still pending when the duration ends may take this much longer to show. */
const FAILOVER_GRACE_MS = 10_000;
/** How long to wait for a leader to be known before the kill. */
const LEADER_KNOWN_WITHIN_MS = 10_000;
/** SIGTERM → SIGKILL bound for each node at cleanup. */
const STOP_GRACE_MS = 5_000;
const TICK_MS = 1_000;
/** The audit log is flushed every 200 ms: a few polls find the new leader's first signature. */
const AUDIT_POLLS = 10;
const AUDIT_POLL_MS = 250;

/** Resolves after `ms`; rejects with the abort reason when `signal` aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Which mode the machine allows, and why when it is not what was asked. */
export function chooseMode(
  nodes: number,
  tools: { etcd: string | undefined; openssl: string | undefined },
): { mode: 'cluster' | 'single'; note?: string } {
  if (nodes === 1) return { mode: 'single' };
  if (tools.etcd === undefined) {
    return {
      mode: 'single',
      note:
        'etcd is not installed (no `etcd` on PATH): running ONE node in single-node mode instead of a ' +
        `${nodes}-node cluster. Install etcd (bash scripts/install-deps.sh) for the cluster demo.`,
    };
  }
  if (tools.openssl === undefined) {
    return {
      mode: 'single',
      note:
        'openssl is not installed (needed for the cluster TLS certificates): running ONE node in ' +
        'single-node mode instead.',
    };
  }
  return { mode: 'cluster' };
}

/** Runs the demo; resolves with its summary (check `ok`), rejects on errors and interruption. */
export async function runDemo(opts: DemoOptions, io: DemoIo, signal: AbortSignal): Promise<DemoSummary> {
  if (!existsSync(SOFTHSM_MODULE)) {
    throw new Error(
      `SoftHSM2 is not installed (no ${SOFTHSM_MODULE}). Install the demo's dependencies with ` +
        '`bash scripts/install-deps.sh` (as root), or run `npm run demo`, which does it first.',
    );
  }
  const etcd = findExecutable('etcd');
  const { mode, note } = chooseMode(opts.nodes, { etcd, openssl: findExecutable('openssl') });
  const demo = new Demo(opts, io, mode, await mkdtemp(join(tmpdir(), 'cometkms-demo-')));
  try {
    if (note) demo.say(note);
    return await demo.run(signal, etcd);
  } finally {
    await demo.cleanup();
  }
}

/** What the kill phase saw. */
interface KillOutcome {
  /** the node killed */
  node: string;
  /** performance.now() of the SIGKILL */
  at: number;
  /** heights the validator had completed at the kill */
  heightAtKill: number;
  failoverMs: number | null;
  newLeader: string | null;
}

/** Awaits every task, then throws the first failure: nothing keeps starting behind a cleanup. */
async function allSettled<T extends unknown[]>(tasks: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as T;
}

/** One run of the demo and everything it owns. */
class Demo {
  private readonly children = new ChildProcesses();
  private readonly record = new WatchedSignRecord();
  private readonly view: LiveView;
  private readonly nodes: KmsNode[] = [];
  private readonly pidsByNode = new Map<string, number[]>();
  private etcd: EtcdCluster | undefined;
  private simulator: ValidatorSimulator | undefined;
  private cleaned = false;
  private readonly removeDirOnExit = (): void => {
    if (!this.opts.keep) rmSync(this.dir, { recursive: true, force: true });
  };

  constructor(
    private readonly opts: DemoOptions,
    private readonly io: DemoIo,
    private readonly mode: 'cluster' | 'single',
    private readonly dir: string,
  ) {
    this.view = new LiveView(io.out, io.tty);
    process.on('exit', this.removeDirOnExit);
  }

  /** Prints an event line. */
  say(text: string): void {
    this.view.event(text);
  }

  async run(signal: AbortSignal, etcdBinary: string | undefined): Promise<DemoSummary> {
    const { opts } = this;
    const count = this.mode === 'cluster' ? opts.nodes : 1;
    const ids = Array.from({ length: count }, (_, i) => `kms-${i + 1}`);
    this.say(
      `CometKMS demo: ${this.mode === 'cluster' ? `${count} KMS nodes on a ${etcdMembers(count)}-member etcd cluster` : 'one KMS node (single-node mode)'}, ` +
        `a simulated validator at ${opts.blockTimeMs} ms blocks, for ${opts.durationMs / 1000} s`,
    );
    this.say(`working directory: ${this.dir}${opts.keep ? ' (kept after the demo)' : ''}`);

    // The validator listens first: its address goes into every node's config.
    const simulator = new ValidatorSimulator({
      listen: 'tcp://127.0.0.1:0',
      chainId: DEMO_CHAIN.id,
      protocol: DEMO_CHAIN.protocol,
      blockTimeMs: opts.blockTimeMs,
      // Stopped by close() when the duration is over; this only bounds a run that is not.
      heights: Math.ceil((opts.durationMs + FAILOVER_GRACE_MS) / opts.blockTimeMs) + 10,
      connectTimeoutMs: FIRST_SIGNATURE_WITHIN_MS,
      record: this.record,
    });
    this.simulator = simulator;
    const validatorAddr = await simulator.listen();
    this.say(`simulated validator (CometBFT stand-in) listening on ${validatorAddr} (SecretConnection)`);

    const pubKeyHex = await this.provision(ids, validatorAddr, etcdBinary, signal);
    await allSettled(this.nodes.map((n) => this.startNode(n, signal)));

    const simRun = simulator.run();
    let failure: unknown;
    simRun.catch((err: unknown) => {
      failure ??= err;
    });
    const first = await this.record.nextNewSignature(0, FIRST_SIGNATURE_WITHIN_MS, signal);
    signal.throwIfAborted();
    if (failure !== undefined) throw failure;
    if (first === undefined) {
      throw new Error(`no signature within ${FIRST_SIGNATURE_WITHIN_MS} ms of the nodes being ready`);
    }
    this.say('the validator is signing through CometKMS');

    const t0 = first;
    const end = t0 + opts.durationMs;
    const kill = this.killPhase(t0 + KILL_AT * opts.durationMs, end, signal).catch((err: unknown) => {
      failure ??= err;
      return undefined;
    });
    while (performance.now() < end) {
      if (failure !== undefined) throw failure;
      await this.tick(t0);
      await sleep(Math.min(TICK_MS, end - performance.now()), signal);
    }
    const killed = await kill;
    if (failure !== undefined) throw failure;
    this.view.end();

    await simulator.close();
    await simRun.catch(() => undefined);
    await Promise.all(this.nodes.map((n) => n.status()));
    return this.summarise(simulator.summary(), pubKeyHex, killed);
  }

  /** Tokens with the validator key, etcd and certificates (cluster), and every node's config. */
  private async provision(
    ids: string[],
    validatorAddr: string,
    etcdBinary: string | undefined,
    signal: AbortSignal,
  ): Promise<string> {
    const [{ tokens, pubKeyHex }, cluster] = await allSettled<
      [Awaited<ReturnType<typeof provisionTokens>>, Map<string, ClusterSettings> | undefined]
    >([
      provisionTokens(this.children, this.dir, ids),
      this.mode === 'cluster' ? this.startCluster(ids, etcdBinary) : Promise.resolve(undefined),
    ]);
    this.say(
      `validator key ${pubKeyHex.slice(0, 16)}… (ed25519) imported into ${ids.length} SoftHSM token(s), one per node; ` +
        'the temporary key file is deleted. In production the key is generated inside the HSM, or ' +
        "imported once from the validator's priv_validator_key.json.",
    );
    signal.throwIfAborted();

    for (const token of tokens) {
      const settings = cluster?.get(token.nodeId);
      const setup = await writeNodeConfig({
        dir: this.dir,
        token,
        validatorAddr,
        ...(settings ? { cluster: settings } : {}),
      });
      this.nodes.push(new KmsNode(setup, this.children));
    }
    // A new validator: its chain state is created once, explicitly (etcd: from any one node).
    const homes = this.mode === 'cluster' ? this.nodes.slice(0, 1) : this.nodes;
    for (const node of homes) await initDemoChainState(this.children, node.setup);
    this.say(
      `chain state created with \`cometkms state init\` (a new validator; after a data loss a node refuses ` +
        'to sign until an operator restores the state, it never starts again from nothing)',
    );
    return pubKeyHex;
  }

  /** Stops everything; the temp dir goes too unless --keep. Safe to call more than once. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    try {
      await this.simulator?.close();
      await this.children.stopAll(STOP_GRACE_MS);
      await this.etcd?.stop();
    } finally {
      this.children.dispose();
      process.off('exit', this.removeDirOnExit);
      if (this.opts.keep) {
        this.io.out.write(`kept the working directory (configs, tokens, node logs): ${this.dir}\n`);
      } else {
        rmSync(this.dir, { recursive: true, force: true });
      }
    }
  }

  /** etcd members and the cluster's TLS material, started side by side. */
  private async startCluster(
    ids: string[],
    binary: string | undefined,
  ): Promise<Map<string, ClusterSettings>> {
    const [etcd, tls] = await allSettled<[EtcdCluster, Map<string, NodeTls>]>([
      launchEtcdCluster({
        members: etcdMembers(ids.length),
        dir: join(this.dir, 'etcd'),
        detached: true,
        ...(binary === undefined ? {} : { binary }),
      }).then((c) => {
        this.etcd = c;
        return c;
      }),
      makeCerts(this.children, this.dir, ids),
    ]);
    this.say(
      `etcd: ${etcd.members.length} members on ${etcd.endpoints.map((e) => e.replace('http://127.0.0.1', '')).join(' ')} ` +
        `(pids ${etcd.livePids().join(' ')}); nodes forward to the leader over mutual TLS`,
    );
    const settings = new Map<string, ClusterSettings>();
    for (const id of ids) {
      const nodeTls = tls.get(id);
      if (!nodeTls) throw new Error(`no TLS material was made for ${id}`);
      settings.set(id, {
        etcdEndpoints: etcd.endpoints,
        forwardPort: await freeLoopbackPort(),
        tls: nodeTls,
      });
    }
    return settings;
  }

  private async startNode(node: KmsNode, signal: AbortSignal): Promise<void> {
    const admin = await node.start(signal);
    const pid = node.pid as number;
    this.pidsByNode.set(node.id, [...(this.pidsByNode.get(node.id) ?? []), pid]);
    this.say(`${node.id} ready (pid ${pid}, admin ${admin}, log ${node.setup.logFile})`);
  }

  /**
   * At `killAt`: SIGKILL the leader, then wait for the first new signature. In single-node mode
   * there is no standby, so the demo restarts the node (as systemd would) to show that the
   * durable sign state carries over a crash.
   */
  private async killPhase(killAt: number, end: number, signal: AbortSignal): Promise<KillOutcome> {
    await sleep(killAt - performance.now(), signal);
    const leader = await this.findLeader(signal);
    const simulator = this.simulator as ValidatorSimulator;
    const heightAtKill = simulator.summary().lastHeight;
    const at = performance.now();
    const killedAtMs = Date.now();
    const pid = leader.pid;
    const crashed = leader.crash();
    this.say(`» SIGKILL to the leader ${leader.id} (pid ${pid}): a crash, no shutdown, no hand-over`);
    await crashed;
    if (this.mode === 'single') {
      this.say(`» restarting ${leader.id} on the same home (single node: nothing else can sign)`);
      await this.startNode(leader, signal);
    }
    const next = await this.record.nextNewSignature(at, end + FAILOVER_GRACE_MS - performance.now(), signal);
    signal.throwIfAborted();
    if (next === undefined) {
      this.say('» no signature arrived after the kill');
      return { node: leader.id, at, heightAtKill, failoverMs: null, newLeader: null };
    }
    const successor = this.mode === 'single' ? leader : await this.findLeader(signal).catch(() => undefined);
    const byNewLeader = successor
      ? await this.firstSignatureBy(successor, at, killedAtMs, signal)
      : undefined;
    const failoverMs = Math.round((byNewLeader ?? next) - at);
    this.say(
      `» failover: ${failoverMs} ms from the SIGKILL to the first signature ` +
        (this.mode === 'cluster'
          ? `by the new leader ${successor?.id ?? '(unknown)'}`
          : `by the restarted ${leader.id}`) +
        (byNewLeader === undefined ? ' (its audit log did not show it: first new signature instead)' : ''),
    );
    return { node: leader.id, at, heightAtKill, failoverMs, newLeader: successor?.id ?? null };
  }

  /**
   * When the validator received the first signature `node` made after the kill (see
   * failover.ts); polls the audit log a few times, since the node writes it in batches.
   */
  private async firstSignatureBy(
    node: KmsNode,
    killedAt: number,
    killedAtMs: number,
    signal: AbortSignal,
  ): Promise<number | undefined> {
    for (let attempt = 0; attempt < AUDIT_POLLS; attempt++) {
      const signed = await signedSince(node.setup.home, node.id, killedAtMs);
      const at = firstArrivalOf(this.record.arrivalsAfter(killedAt), signed);
      if (at !== undefined) return at;
      await sleep(AUDIT_POLL_MS, signal);
    }
    return undefined;
  }

  /** The live node every live node's /status agrees leads (polled, bounded). */
  private async findLeader(signal: AbortSignal): Promise<KmsNode> {
    const until = performance.now() + LEADER_KNOWN_WITHIN_MS;
    for (;;) {
      const live = this.nodes.filter((n) => n.running && !n.killed);
      const statuses = await Promise.all(live.map((n) => n.status()));
      const leader = live.find((_, i) => statuses[i]?.role === 'leader');
      if (leader) return leader;
      if (performance.now() > until) throw new Error(`no leader known within ${LEADER_KNOWN_WITHIN_MS} ms`);
      await sleep(100, signal);
    }
  }

  /** One refresh of the live view. */
  private async tick(t0: number): Promise<void> {
    const statuses = await Promise.all(this.nodes.map((n) => n.status()));
    const sim = (this.simulator as ValidatorSimulator).summary();
    const views: NodeView[] = this.nodes.map((n, i) => ({
      id: n.id,
      pid: n.pid,
      state: n.killed && !n.running ? 'killed' : statuses[i] ? 'up' : n.running ? 'starting' : 'down',
      status: statuses[i] ?? (n.killed ? n.lastStatus : undefined),
    }));
    this.view.update({
      elapsedMs: performance.now() - t0,
      heights: sim.heightsCompleted,
      signed: sim.signed,
      p50Ms: sim.latencyMs.p50,
      nodes: views,
    });
  }

  private summarise(sim: SimulationSummary, pubKeyHex: string, killed: KillOutcome | undefined): DemoSummary {
    const signedAfterKill = killed ? this.record.countAfter(killed.at) : 0;
    const doubleSigns = Math.max(sim.doubleSigns, this.record.doubleSigns.length);
    const reasons = verdict({
      doubleSigns,
      invalidSignatures: sim.invalidSignatures,
      failoverMs: killed?.failoverMs ?? null,
      signedAfterKill,
      // the height in progress at the kill does not count
      heightsAfterKill: killed ? sim.lastHeight - (killed.heightAtKill + 1) : 0,
    });
    const nodeStates: NodeFinal[] = this.nodes.map((n) => {
      const c = n.lastStatus?.chains[0];
      return {
        node_id: n.id,
        pids: this.pidsByNode.get(n.id) ?? [],
        killed: n.killed && !n.running,
        role: n.running ? (n.lastStatus?.role ?? null) : null,
        height: c?.height ?? null,
        round: c?.round ?? null,
        step: c?.step ?? null,
      };
    });
    const summary: DemoSummary = {
      ok: reasons.length === 0,
      reasons,
      mode: this.mode,
      nodes: this.nodes.length,
      duration_ms: this.opts.durationMs,
      block_time_ms: this.opts.blockTimeMs,
      chain_id: DEMO_CHAIN.id,
      pub_key_hex: pubKeyHex,
      heights: sim.heightsCompleted,
      signed: sim.signed,
      refused: sim.refused,
      retried: sim.retried,
      unanswered: sim.unanswered,
      double_signs: doubleSigns,
      invalid_signatures: sim.invalidSignatures,
      latency_ms: { p50: round1(sim.latencyMs.p50), p99: round1(sim.latencyMs.p99) },
      killed_node: killed?.node ?? null,
      failover_ms: killed?.failoverMs ?? null,
      new_leader: killed?.newLeader ?? null,
      signed_after_kill: signedAfterKill,
      node_states: nodeStates,
      child_pids: this.children.pids(),
      etcd_pids: this.etcd?.members.map((m) => m.pid) ?? [],
      temp_dir: this.dir,
      kept: this.opts.keep,
    };
    this.io.out.write(formatSummary(summary));
    for (const p of sim.problems.slice(0, 10)) this.io.out.write(`  problem: ${p}\n`);
    return summary;
  }
}

/** etcd members for `nodes` KMS nodes: one per host, and an odd number of at least 3. */
function etcdMembers(nodes: number): number {
  return nodes <= 3 ? 3 : 5;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
