/**
 * One chaos run: start the bed once, then rounds of inject fault(s) → let signing go on → heal →
 * wait (bounded) for the next signature on every chain → judge everything the witness saw.
 *
 * The schedule (which kinds, overlapping or not) depends only on the seed; a fault's own choices
 * come from a per-round generator, so a round's parameters do not shift when an earlier round
 * met a different cluster. The run stops at the first conflict, unwitnessed signature, or fault
 * after which signing did not come back; its directory (history, spy logs) is then kept.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { Rng } from '../../../src/simulator/rng.ts';
import { type ChainSpec, ChaosBed } from './bed/testbed.ts';
import { ChainDriver } from './driver.ts';
import { ensureRunning } from './faults/common.ts';
import { faultKinds } from './faults/index.ts';
import type { FaultContext, FaultKind, Injected } from './faults/types.ts';
import { History } from './history.ts';
import { Operator } from './operator.ts';
import { Schedule } from './schedule.ts';
import type { Verdict } from './witness/checker.ts';
import { LiveWitness } from './witness/live.ts';

export interface RunOptions {
  rounds: number;
  seed: number;
  nodes: 1 | 3 | 5;
  /** restrict to these kinds (default: every kind of the mode) */
  faults?: readonly string[];
  /** stop starting rounds after this long (default: no limit) */
  maxMs?: number;
  /** how long signing runs under a fault unless the kind says otherwise */
  dwellMs?: number;
  /** bound on the wait for the next signature after a heal */
  recoverMs?: number;
  /** one line per round and the summary */
  print: (line: string) => void;
  /** keep the run directory even when the run passes */
  keep?: boolean;
}

export interface KindStats {
  rounds: number;
  /** ms from injection to the next precommit signature, per round and chain */
  nextSignatureMs: number[];
  /** heights the chains moved through without the validator's precommit, per round */
  heightsMissed: number[];
}

export interface RunResult {
  seed: number;
  nodes: number;
  rounds: number;
  faults: number;
  byKind: Map<string, KindStats>;
  verdict: Verdict;
  failures: string[];
  /** kept on failure: history.jsonl and spy/ */
  runDir: string;
  kept: boolean;
  ms: number;
}

/** Bound on the wait for etcd to be whole again after a round's heal (a loaded machine). */
const WHOLE_MS = 60_000;

const CHAINS: ChainSpec[] = [
  { id: 'chaos-ext-1', protocol: 'v0.38' },
  { id: 'chaos-plain-2', protocol: 'v0.37' },
];

export async function runChaos(opts: RunOptions): Promise<RunResult> {
  const started = Date.now();
  const runDir = await mkdtemp(join(tmpdir(), 'cometkms-chaos-'));
  const history = new History(join(runDir, 'history.jsonl'));
  const mode = opts.nodes === 1 ? 'single' : 'cluster';
  const kinds = faultKinds(mode, opts.faults);
  if (kinds.length === 0) throw new Error(`no fault kind applies to ${mode} mode`);
  const result: RunResult = {
    seed: opts.seed,
    nodes: opts.nodes,
    rounds: 0,
    faults: 0,
    byKind: new Map(),
    verdict: { witnessed: 0, distinct: 0, undelivered: 0, other: 0, conflicts: [], unwitnessed: [] },
    failures: [],
    runDir,
    kept: false,
    ms: 0,
  };
  history.write({
    t: 'run',
    seed: opts.seed,
    nodes: opts.nodes,
    rounds: opts.rounds,
    kinds: kinds.map((k) => k.name),
  });
  const keySeed = sha256(new TextEncoder().encode(`cometkms chaos key ${opts.seed}`));
  const bed = await ChaosBed.start({ runDir, nodes: opts.nodes, chains: CHAINS, keySeed });
  const witness = new LiveWitness(bed.spyDir);
  const operator = new Operator(runDir);
  const drivers = bed.sentries.map(
    (s, i) =>
      new ChainDriver(
        s,
        history,
        { blockTimeMs: 150, requestDeadlineMs: 1_500, seed: opts.seed + 1 + i },
        2n,
      ),
  );
  const fed = new Map<ChainDriver, number>();
  /** Feeds the judge and fails the run on a conflict or a signature the witness never saw. */
  const judge = async (): Promise<void> => {
    // Deliveries are taken BEFORE the logs are read: every signature delivered by then was
    // logged by the spy before it returned, so it must be in what the poll reads.
    const upTo = drivers.map((d) => d.deliveries.length);
    await witness.poll();
    drivers.forEach((d, i) => {
      for (const x of d.deliveries.slice(fed.get(d) ?? 0, upTo[i])) witness.judge.addDelivery(x);
      fed.set(d, upTo[i]!);
    });
    const v = witness.judge.verdict();
    result.verdict = v;
    for (const c of v.conflicts.slice(result.failures.filter((f) => f.startsWith('CONFLICT')).length)) {
      const what = `CONFLICT ${c.chainId} ${c.height}/${c.round}/${c.step}: ${c.why} (${c.first.file}#${c.first.seq} vs ${c.second.file}#${c.second.seq})`;
      result.failures.push(what);
      history.write({ t: 'conflict', ...c });
    }
    if (v.unwitnessed.length > 0 && !result.failures.some((f) => f.startsWith('UNWITNESSED'))) {
      result.failures.push(
        `UNWITNESSED: a sentry received ${v.unwitnessed.length} signature(s) the HSM never made`,
      );
      history.write({ t: 'unwitnessed', list: v.unwitnessed.slice(0, 20) });
    }
  };
  try {
    // Every chain's state is created by the operator before its first signature.
    for (const d of drivers) {
      const res = await operator.initState(bed.nodes[0]!, d.chainId, 1n);
      if (res.code !== 0) throw new Error(`state init for ${d.chainId} failed: ${res.stderr}`);
    }
    const up = await Promise.all(bed.nodes.map((n) => n.start()));
    up.forEach((ok, i) => {
      if (!ok) throw new Error(`${bed.nodes[i]!.id} did not start: ${bed.nodes[i]!.lastStderr}`);
    });
    for (const d of drivers) d.start();
    for (const d of drivers) {
      if (!(await d.nextSignature(60_000))) throw new Error(`${d.chainId}: no first signature within 60 s`);
    }
    const schedule = new Schedule(opts.seed, kinds);
    for (let round = 1; round <= opts.rounds; round++) {
      if (opts.maxMs !== undefined && Date.now() - started > opts.maxMs) break;
      const picked = schedule.next();
      const ctx: FaultContext = {
        bed,
        rng: new Rng((opts.seed ^ Math.imul(round, 0x9e3779b1)) >>> 0),
        operator,
        history,
        drivers,
        runDir,
        violation: (what) => {
          result.failures.push(`round ${round}: ${what}`);
          history.write({ t: 'violation', round, what });
        },
      };
      const injected: Array<{ kind: FaultKind; inj: Injected }> = [];
      for (const kind of picked) {
        try {
          injected.push({ kind, inj: await kind.inject(ctx) });
        } catch (err) {
          // A fault that could not be injected tested nothing and may have left the bed half
          // broken: a harness failure, never a round that counts.
          const what = `${kind.name} could not be injected: ${(err as Error).message}`;
          result.failures.push(`round ${round}: harness: ${what}`);
          history.write({ t: 'inject-failed', round, kind: kind.name, error: (err as Error).message });
          injected.push({
            kind,
            inj: { detail: `inject failed: ${(err as Error).message}`, heal: async () => {} },
          });
        }
      }
      // Liveness counts from the moment every fault is in effect (some prepare before acting,
      // e.g. a snapshot taken a while before the restore).
      const injectedAt = Date.now();
      const before = drivers.map((d) => d.signedAt.filter((x) => x.at <= injectedAt).pop()?.height ?? 0n);
      history.write({
        t: 'fault',
        round,
        kinds: picked.map((k) => k.name),
        details: injected.map((x) => x.inj.detail),
      });
      // Signing goes on under the fault, and a lagging sentry re-sends conflicting votes for the
      // last heights: a node that lost or regressed its state would sign some of them.
      const dwellMs = Math.max(...picked.map((k) => k.dwellMs ?? opts.dwellMs ?? 1_000));
      await Promise.all([
        new Promise((r) => setTimeout(r, dwellMs)),
        ...drivers.map((d) => d.laggardBurst(3)),
      ]);
      for (const { kind, inj } of [...injected].reverse()) {
        try {
          await inj.heal();
        } catch (err) {
          result.failures.push(
            `round ${round}: harness: heal of ${kind.name} failed: ${(err as Error).message}`,
          );
          history.write({ t: 'heal-failed', round, kind: kind.name, error: (err as Error).message });
        }
      }
      // From here on every fault is healed: a signature made while the checks below run already
      // shows that signing came back (no need to wait for one more after them).
      const healedAt = Date.now();
      // Every round starts on a whole etcd cluster: a heal that left a member down, frozen or
      // out of the membership would make a later round's fault one the design does not survive
      // (e.g. a "quorum loss" of two members of what is really a 2-member cluster).
      const broken = (await bed.etcd?.untilWhole(WHOLE_MS)) ?? [];
      if (broken.length > 0) {
        result.failures.push(
          `round ${round}: harness: etcd not whole after healing ${picked.map((k) => k.name).join(' + ')}: ${broken.join(', ')}`,
        );
        history.write({ t: 'etcd-broken', round, what: broken });
      }
      const died: string[] = [];
      for (const n of bed.nodes) {
        if (!n.running && n.proc?.exitStatus !== undefined) {
          const e = n.proc.exitStatus;
          if (e.signal !== 'SIGKILL' && e.signal !== 'SIGTERM' && !(e.code === 0 && e.signal === null)) {
            died.push(`${n.id} exited (code ${e.code}, signal ${e.signal})`);
            history.write({ t: 'unexpected-exit', round, node: n.id, exit: e, stderr: n.lastStderr });
          }
        }
        await ensureRunning(ctx, n);
      }
      const recovered = await Promise.all(
        drivers.map((d) => d.nextSignature(opts.recoverMs ?? 30_000, healedAt)),
      );
      result.rounds = round;
      result.faults += picked.length;
      let line = `round ${round}: ${picked.map((k) => k.name).join(' + ')}: ${injected.map((x) => x.inj.detail).join('; ')}`;
      const latencies: number[] = [];
      const missed: number[] = [];
      drivers.forEach((d, i) => {
        const next = d.signedAt.find((s) => s.at > injectedAt);
        if (next === undefined) return;
        latencies.push(next.at - injectedAt);
        missed.push(Math.max(0, Number(next.height - before[i]! - 1n)));
      });
      for (const kind of picked) {
        const st = result.byKind.get(kind.name) ?? { rounds: 0, nextSignatureMs: [], heightsMissed: [] };
        st.rounds++;
        st.nextSignatureMs.push(...latencies);
        st.heightsMissed.push(...missed);
        result.byKind.set(kind.name, st);
      }
      if (latencies.length > 0)
        line += ` | next signature ${Math.max(...latencies)} ms, ${Math.max(...missed)} heights missed`;
      if (died.length > 0) line += ` | UNEXPECTED EXIT: ${died.join(', ')}`;
      await judge();
      if (!recovered.every(Boolean)) {
        const stuck = drivers.filter((_, i) => !recovered[i]).map((d) => d.chainId);
        result.failures.push(
          `round ${round}: signing did not recover after ${picked.map((k) => k.name).join(' + ')} (${stuck.join(', ')})`,
        );
      }
      const c = result.verdict.conflicts.length;
      line += ` | ${result.verdict.witnessed} witnessed, ${c} conflicts`;
      opts.print(line);
      history.write({ t: 'round', round, line });
      if (result.failures.length > 0) break;
    }
  } catch (err) {
    result.failures.push(`harness error: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await Promise.all(drivers.map((d) => d.stop()));
    await bed.stop();
    await witness.flush();
    await judge();
    history.write({
      t: 'verdict',
      verdict: { ...result.verdict, conflicts: result.verdict.conflicts.length },
      failures: result.failures,
    });
    await history.close();
    result.ms = Date.now() - started;
    result.kept = result.failures.length > 0 || opts.keep === true;
    if (!result.kept) await rm(runDir, { recursive: true, force: true });
  }
  return result;
}

/** `chaos: R rounds, F faults (<kind> n, ...), S signatures witnessed, U undelivered, C conflicts, seed X` */
export function summaryLine(r: RunResult): string {
  const kinds = [...r.byKind.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, s]) => `${k} ${s.rounds}`)
    .join(', ');
  return (
    `chaos: ${r.rounds} rounds, ${r.faults} faults (${kinds}), ${r.verdict.witnessed} signatures witnessed, ` +
    `${r.verdict.undelivered} undelivered, ${r.verdict.conflicts.length} conflicts, seed ${r.seed}`
  );
}
