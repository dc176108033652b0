/** The node metrics: each reporting method moves its series, on a registry of its own. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decisionTypeLabel, doubleSignReason, Metrics } from '../../../src/admin/metrics.ts';
import type { GuardDecision } from '../../../src/guard/decision.ts';

/** The value of one series in the Prometheus text, or undefined when absent. */
async function value(m: Metrics, series: string): Promise<number | undefined> {
  const text = await m.registry.metrics();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

const prevote = (over: Partial<GuardDecision> = {}): GuardDecision => ({
  chainId: 'c1',
  kind: 'vote',
  type: 1,
  height: 10n,
  round: 2,
  step: 2,
  outcome: 'signed',
  latencyMs: 3,
  hsmMs: 0.2,
  ...over,
});

describe('Metrics', () => {
  test('observeDecision counts by chain/type/outcome and records the last signed HRS', async () => {
    const m = new Metrics({ processMetrics: false });
    m.observeDecision(prevote());
    m.observeDecision(prevote({ type: 2, step: 3, latencyMs: 4 }));
    m.observeDecision(prevote({ outcome: 'retry', reason: 'signer failed: x', height: 11n }));
    m.observeDecision({
      chainId: 'c1',
      kind: 'proposal',
      type: 32,
      height: 11n,
      round: 0,
      step: 1,
      outcome: 'signed',
      latencyMs: 2,
    });
    m.observeDecision({ chainId: 'c1', kind: 'pubkey', outcome: 'served', latencyMs: 0.1 });
    assert.equal(
      await value(m, 'cometkms_sign_requests_total{chain="c1",type="prevote",outcome="signed"}'),
      1,
    );
    assert.equal(
      await value(m, 'cometkms_sign_requests_total{chain="c1",type="precommit",outcome="signed"}'),
      1,
    );
    assert.equal(
      await value(m, 'cometkms_sign_requests_total{chain="c1",type="prevote",outcome="retry"}'),
      1,
    );
    assert.equal(
      await value(m, 'cometkms_sign_requests_total{chain="c1",type="proposal",outcome="signed"}'),
      1,
    );
    assert.equal(
      await value(m, 'cometkms_sign_requests_total{chain="c1",type="pubkey",outcome="served"}'),
      1,
    );
    // The retry at height 11 returned no signature: the last signed HRS is the proposal's.
    assert.equal(await value(m, 'cometkms_last_signed_height{chain="c1"}'), 11);
    assert.equal(await value(m, 'cometkms_last_signed_round{chain="c1"}'), 0);
    assert.equal(await value(m, 'cometkms_last_signed_step{chain="c1"}'), 1);
    // Latency: only the three requests answered with a signature; the HSM part whenever called.
    assert.equal(await value(m, 'cometkms_sign_duration_seconds_count{chain="c1"}'), 3);
    const sum = await value(m, 'cometkms_sign_duration_seconds_sum{chain="c1"}');
    assert.ok(sum !== undefined && Math.abs(sum - 0.009) < 1e-12, `sum ${sum}`);
    assert.equal(await value(m, 'cometkms_sign_duration_seconds_bucket{le="0.0025",chain="c1"}'), 1);
    assert.equal(await value(m, 'cometkms_hsm_sign_duration_seconds_count{chain="c1"}'), 3);
    assert.equal(await value(m, 'cometkms_hsm_sign_duration_seconds_bucket{le="0.00025",chain="c1"}'), 3);
  });

  test('seconds since the last prevote/precommit is computed at scrape time', async () => {
    const m = new Metrics({ processMetrics: false });
    assert.equal(await value(m, 'cometkms_seconds_since_last_vote{chain="c1",type="prevote"}'), undefined);
    m.observeDecision(prevote());
    const first = await value(m, 'cometkms_seconds_since_last_vote{chain="c1",type="prevote"}');
    assert.ok(first !== undefined && first >= 0);
    assert.equal(await value(m, 'cometkms_seconds_since_last_vote{chain="c1",type="precommit"}'), undefined);
    // Grows between scrapes with no event in between (scrape until the clock has visibly moved).
    let second: number | undefined = first;
    const deadline = Date.now() + 2000;
    while (second === first && Date.now() < deadline) {
      second = await value(m, 'cometkms_seconds_since_last_vote{chain="c1",type="prevote"}');
    }
    assert.ok(second !== undefined && second > first, `${second} > ${first}`);
  });

  test('refused double-sign attempts are counted by reason; other refusals are not', async () => {
    const m = new Metrics({ processMetrics: false });
    const refused = (code: GuardDecision['code']) => prevote({ outcome: 'refused', code, reason: 'text' });
    m.observeDecision(refused('height_regression'));
    m.observeDecision(refused('round_regression'));
    m.observeDecision(refused('step_regression'));
    m.observeDecision(refused('conflicting_data'));
    m.observeDecision(refused('conflicting_data'));
    m.observeDecision(refused('conflicting_extension'));
    m.observeDecision(refused('chain_id_mismatch'));
    m.observeDecision(prevote({ outcome: 'retry', code: 'state_regression', reason: 'conflicting data' }));
    const series = (r: string) => `cometkms_double_sign_refused_total{chain="c1",reason="${r}"}`;
    assert.equal(await value(m, series('height_regression')), 1);
    assert.equal(await value(m, series('round_regression')), 1);
    assert.equal(await value(m, series('step_regression')), 1);
    assert.equal(await value(m, series('conflicting_data')), 2);
    assert.equal(await value(m, series('conflicting_extension')), 1);
    const text = await m.registry.metrics();
    assert.equal(text.match(/^cometkms_double_sign_refused_total\{/gm)?.length, 5);
  });

  test('leader, links, forwards, HSM and etcd series', async () => {
    const m = new Metrics({ processMetrics: false });
    assert.equal(await value(m, 'cometkms_leader'), 0);
    m.setLeader(true);
    m.leaderChanged();
    m.leaderChanged();
    assert.equal(await value(m, 'cometkms_leader'), 1);
    assert.equal(await value(m, 'cometkms_leader_changes_total'), 2);
    m.validatorLink('c1', 'tcp://127.0.0.1:1', true);
    m.validatorLink('c1', 'tcp://127.0.0.1:2', true);
    m.validatorLink('c1', 'tcp://127.0.0.1:2', false);
    m.validatorReconnect('c1', 'tcp://127.0.0.1:2');
    assert.equal(await value(m, 'cometkms_validator_link_up{chain="c1",addr="tcp://127.0.0.1:1"}'), 1);
    assert.equal(await value(m, 'cometkms_validator_link_up{chain="c1",addr="tcp://127.0.0.1:2"}'), 0);
    assert.equal(
      await value(m, 'cometkms_validator_reconnects_total{chain="c1",addr="tcp://127.0.0.1:2"}'),
      1,
    );
    m.forwarded('ok');
    m.forwarded('ok');
    m.forwarded('no_leader');
    assert.equal(await value(m, 'cometkms_forwards_total{result="ok"}'), 2);
    assert.equal(await value(m, 'cometkms_forwards_total{result="no_leader"}'), 1);
    m.hsmError();
    assert.equal(await value(m, 'cometkms_hsm_errors_total'), 1);
    m.etcdCall('reserve', 3, true);
    m.etcdCall('reserve', 400, false);
    assert.equal(await value(m, 'cometkms_etcd_call_duration_seconds_count{op="reserve"}'), 2);
    assert.equal(await value(m, 'cometkms_etcd_call_duration_seconds_bucket{le="0.005",op="reserve"}'), 1);
    assert.equal(await value(m, 'cometkms_etcd_call_failures_total{op="reserve"}'), 1);
  });

  test('two nodes in one process keep separate series; process metrics are opt-out', async () => {
    const a = new Metrics();
    const b = new Metrics();
    a.setLeader(true);
    assert.equal(await value(a, 'cometkms_leader'), 1);
    assert.equal(await value(b, 'cometkms_leader'), 0);
    assert.match(await a.registry.metrics(), /^process_resident_memory_bytes /m);
    assert.doesNotMatch(await new Metrics({ processMetrics: false }).registry.metrics(), /^process_/m);
  });

  test('label helpers', () => {
    assert.equal(decisionTypeLabel(prevote()), 'prevote');
    assert.equal(decisionTypeLabel(prevote({ type: 2 })), 'precommit');
    assert.equal(decisionTypeLabel(prevote({ type: 7 })), 'vote');
    assert.equal(
      decisionTypeLabel({ chainId: 'c', kind: 'sign_bytes', outcome: 'refused', latencyMs: 0 }),
      'sign_bytes',
    );
    assert.equal(doubleSignReason(prevote()), undefined);
    assert.equal(doubleSignReason(prevote({ outcome: 'refused' })), undefined);
  });
});
