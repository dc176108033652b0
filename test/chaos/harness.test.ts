/**
 * The CI tier of the fault-injection harness (`npm run chaos` in a bounded form): as many
 * rounds as fit in the time budget, single node then a 3-node cluster, every fault kind of each
 * mode at least once (the schedule's first pass), judged by the pkcs11-spy witness. Any conflict,
 * signature the witness did not see made, or fault after which signing did not return fails it;
 * the run's history and spy logs are then kept and their path printed with the seed.
 *
 * CHAOS_SEED=<n> replays a schedule; CHAOS_CI_MINUTES (default 14) is the whole budget;
 * CHAOS_FAULTS=kind,... restricts the kinds (to replay or chase one finding); CHAOS_RECORD=1
 * adds both runs to bench/results/chaos-runs.json and rewrites the totals (as `--record` does).
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { faultKinds } from './harness/faults/index.ts';
import { currentCommit, recordRun } from './harness/record.ts';
import { runChaos, summaryLine } from './harness/runner.ts';

const SEED = process.env['CHAOS_SEED'] === undefined ? randomInt(2 ** 31) : Number(process.env['CHAOS_SEED']);
const MINUTES = Number(process.env['CHAOS_CI_MINUTES'] ?? 14);
const ONLY = process.env['CHAOS_FAULTS']?.split(',').filter((k) => k.length > 0);
const RECORD = process.env['CHAOS_RECORD'] === '1';

describe(`chaos harness (seed ${SEED})`, () => {
  // Once, before the runs: recording the first run changes tracked files, which the second
  // run's commit would otherwise show as "+changes".
  let commit = '';
  before(async () => {
    if (RECORD) commit = await currentCommit();
  });
  for (const [nodes, share] of [
    [1, 0.35],
    [3, 0.65],
  ] as const) {
    const budgetMs = MINUTES * share * 60_000;
    it(`${nodes} node(s): no conflict and signing always returns, ${Math.round(budgetMs / 60_000)} min of rounds`, {
      timeout: budgetMs + 180_000,
    }, async (t) => {
      const lines: string[] = [];
      const mode = nodes === 1 ? 'single' : 'cluster';
      const kinds = faultKinds(mode).filter((k) => ONLY === undefined || ONLY.includes(k.name));
      if (kinds.length === 0) {
        t.skip(`CHAOS_FAULTS names no ${mode} kind`);
        return;
      }
      const result = await runChaos({
        rounds: 10_000,
        seed: SEED,
        nodes,
        faults: kinds.map((k) => k.name),
        maxMs: budgetMs,
        print: (line) => lines.push(line),
      });
      if (RECORD) await recordRun(result, commit);
      const summary = summaryLine(result);
      t.diagnostic(`${summary}, ${Math.round(result.ms / 1000)} s`);
      const detail = [
        ...lines.slice(-15),
        ...result.failures,
        summary,
        result.kept ? `kept: ${result.runDir}` : '',
      ].join('\n');
      assert.deepEqual(result.failures, [], detail);
      assert.ok(result.rounds >= kinds.length, `every kind ran at least once: ${detail}`);
      assert.ok(result.verdict.witnessed > 0, detail);
    });
  }
});
