/**
 * The node metrics: each reporting method moves its series, every labelled series of a declared
 * node exists at 0 from the start, and the last signed HRS and time are read from the node's
 * state at scrape time (so they are right before any new signature).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decisionTypeLabel,
  doubleSignReason,
  ETCD_OPS,
  FORWARD_RESULTS,
  Metrics,
  type NodeMetricsView,
  signedAtSeconds,
} from '../../../src/admin/metrics.ts';
import { STAGE_METRIC } from '../../../src/admin/stage-histogram.ts';
import { proposalSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { GuardDecision } from '../../../src/guard/decision.ts';
import { SIGN_STAGES } from '../../../src/stages.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import { VERSION } from '../../../src/version.ts';
import { proposal, ts, vote } from '../../helpers/guard-fixtures.ts';

/** The value of one series in the Prometheus text, or undefined when absent. */
async function value(m: Metrics, series: string): Promise<number | undefined> {
  const text = await m.registry.metrics();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Every sample line of `name` (exact metric name, any labels). */
async function samples(m: Metrics, name: string): Promise<string[]> {
  const text = await m.registry.metrics();
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
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

/** A state reserved for `v` at its HRS (a prevote: step 2). */
const voteState = (v = vote(), step = 2): SignState => ({
  ...freshSignState(),
  height: v.height,
  round: v.round,
  step,
  signBytes: voteSignBytes('c1', v),
});

/** A scriptable view of a node: tests change `states` and `hsm` between scrapes. */
class FakeView implements NodeMetricsView {
  states = new Map<string, SignState>();
  hsm = true;
  etcd = true;
  chainState(chainId: string): SignState | undefined {
    return this.states.get(chainId);
  }
  hsmUp(): boolean {
    return this.hsm;
  }
  etcdUp(): boolean {
    return this.etcd;
  }
}

const TWO_CHAINS = [
  { id: 'c1', validators: [{ addr: 'tcp://127.0.0.1:1' }, { addr: 'unix:///tmp/pv.sock' }] },
  { id: 'c2', validators: [{ addr: 'tcp://127.0.0.1:2' }] },
];

describe('Metrics', () => {
  test('observeDecision counts by chain/type/outcome and measures the signing paths', async () => {
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
    const req = (type: string, outcome: string) =>
      `cometkms_sign_requests_total{chain_id="c1",type="${type}",outcome="${outcome}"}`;
    assert.equal(await value(m, req('prevote', 'signed')), 1);
    assert.equal(await value(m, req('precommit', 'signed')), 1);
    assert.equal(await value(m, req('prevote', 'retry')), 1);
    assert.equal(await value(m, req('proposal', 'signed')), 1);
    assert.equal(await value(m, req('pubkey', 'served')), 1);
    // Latency: only the three requests answered with a signature; the HSM part whenever called.
    assert.equal(await value(m, 'cometkms_sign_duration_seconds_count{chain_id="c1"}'), 3);
    const sum = await value(m, 'cometkms_sign_duration_seconds_sum{chain_id="c1"}');
    assert.ok(sum !== undefined && Math.abs(sum - 0.009) < 1e-12, `sum ${sum}`);
    assert.equal(await value(m, 'cometkms_sign_duration_seconds_bucket{le="0.0025",chain_id="c1"}'), 1);
    assert.equal(await value(m, 'cometkms_hsm_sign_duration_seconds_count{chain_id="c1"}'), 3);
    assert.equal(await value(m, 'cometkms_hsm_sign_duration_seconds_bucket{le="0.00025",chain_id="c1"}'), 3);
  });

  test('a declared single node exports every labelled series of every chain at 0, and no cluster series', async () => {
    const m = new Metrics({ processMetrics: false });
    m.declareNode({ nodeId: 'kms-a', mode: 'single', chains: TWO_CHAINS }, new FakeView());
    assert.equal(
      await value(m, `cometkms_build_info{version="${VERSION}",node_id="kms-a",mode="single"}`),
      1,
    );
    for (const chain of ['c1', 'c2']) {
      const req = (type: string, outcome: string) =>
        `cometkms_sign_requests_total{chain_id="${chain}",type="${type}",outcome="${outcome}"}`;
      for (const type of ['prevote', 'precommit', 'proposal']) {
        for (const outcome of ['signed', 'resigned', 'timestamp_only', 'refused', 'retry']) {
          assert.equal(await value(m, req(type, outcome)), 0, `${chain} ${type} ${outcome}`);
        }
      }
      for (const outcome of ['served', 'refused', 'retry'])
        assert.equal(await value(m, req('pubkey', outcome)), 0);
      assert.equal(await value(m, req('sign_bytes', 'refused')), 0);
      for (const reason of ['height_regression', 'round_regression', 'step_regression', 'conflicting_data']) {
        assert.equal(
          await value(m, `cometkms_double_sign_refused_total{chain_id="${chain}",reason="${reason}"}`),
          0,
        );
      }
      assert.equal(await value(m, `cometkms_state_alarm{chain_id="${chain}"}`), 0);
      assert.equal(await value(m, `cometkms_sign_duration_seconds_count{chain_id="${chain}"}`), 0);
      assert.equal(await value(m, `cometkms_hsm_sign_duration_seconds_count{chain_id="${chain}"}`), 0);
    }
    for (const [chain, addr] of [
      ['c1', 'tcp://127.0.0.1:1'],
      ['c1', 'unix:///tmp/pv.sock'],
      ['c2', 'tcp://127.0.0.1:2'],
    ]) {
      assert.equal(await value(m, `cometkms_validator_connected{chain_id="${chain}",addr="${addr}"}`), 0);
      assert.equal(
        await value(m, `cometkms_validator_reconnects_total{chain_id="${chain}",addr="${addr}"}`),
        0,
      );
    }
    assert.equal(await value(m, 'cometkms_hsm_errors_total'), 0);
    assert.deepEqual(await samples(m, 'cometkms_forwards_total'), []);
    assert.deepEqual(await samples(m, 'cometkms_etcd_call_failures_total'), []);
    assert.deepEqual(await samples(m, 'cometkms_etcd_up'), [], 'a single node has no etcd to be down');
    assert.throws(() => m.declareNode({ nodeId: 'x', mode: 'single', chains: [] }, new FakeView()));
  });

  test('a declared cluster node also exports every forwarding result and etcd operation at 0, and etcd_up', async () => {
    const m = new Metrics({ processMetrics: false });
    const view = new FakeView();
    m.declareNode({ nodeId: 'kms-b', mode: 'cluster', chains: TWO_CHAINS }, view);
    assert.equal(
      await value(m, `cometkms_build_info{version="${VERSION}",node_id="kms-b",mode="cluster"}`),
      1,
    );
    for (const result of FORWARD_RESULTS) {
      assert.equal(await value(m, `cometkms_forwards_total{result="${result}"}`), 0, result);
    }
    for (const op of ETCD_OPS) {
      assert.equal(await value(m, `cometkms_etcd_call_failures_total{op="${op}"}`), 0, op);
      assert.equal(await value(m, `cometkms_etcd_call_duration_seconds_count{op="${op}"}`), 0, op);
    }
    assert.equal(await value(m, 'cometkms_etcd_up'), 1);
    view.etcd = false;
    assert.equal(await value(m, 'cometkms_etcd_up'), 0);
  });

  test('the last signed HRS and time are read from the node at scrape time', async () => {
    const m = new Metrics({ processMetrics: false });
    const view = new FakeView();
    m.declareNode({ nodeId: 'kms-a', mode: 'single', chains: TWO_CHAINS }, view);
    // c1 has a stored state before anything was signed in this process; c2 none known yet.
    view.states.set('c1', voteState(vote({ height: 41n, round: 1, timestamp: ts(1500) }), 3));
    assert.equal(await value(m, 'cometkms_last_signed_height{chain_id="c1"}'), 41);
    assert.equal(await value(m, 'cometkms_last_signed_round{chain_id="c1"}'), 1);
    assert.equal(await value(m, 'cometkms_last_signed_step{chain_id="c1"}'), 3);
    assert.equal(await value(m, 'cometkms_last_signed_timestamp_seconds{chain_id="c1"}'), 1_704_067_201.5);
    assert.equal(await value(m, 'cometkms_last_signed_height{chain_id="c2"}'), undefined);
    // The state moves on (a proposal at the next height): the next scrape shows it.
    view.states.set('c1', {
      ...freshSignState(),
      height: 42n,
      round: 0,
      step: 1,
      signBytes: proposalSignBytes('c1', proposal({ height: 42n, timestamp: ts(4000) })),
    });
    // A state created by `state init` (no sign bytes): an HRS but no time.
    view.states.set('c2', { ...freshSignState(), height: 7n });
    assert.equal(await value(m, 'cometkms_last_signed_height{chain_id="c1"}'), 42);
    assert.equal(await value(m, 'cometkms_last_signed_step{chain_id="c1"}'), 1);
    assert.equal(await value(m, 'cometkms_last_signed_timestamp_seconds{chain_id="c1"}'), 1_704_067_204);
    assert.equal(await value(m, 'cometkms_last_signed_height{chain_id="c2"}'), 7);
    assert.equal(await value(m, 'cometkms_last_signed_timestamp_seconds{chain_id="c2"}'), undefined);
    // A state no longer known (a cluster node that lost etcd and restarted) drops its series.
    view.states.delete('c1');
    assert.equal(await value(m, 'cometkms_last_signed_height{chain_id="c1"}'), undefined);
  });

  test('hsm_up follows the view; the state alarm is set per chain', async () => {
    const m = new Metrics({ processMetrics: false });
    const view = new FakeView();
    m.declareNode({ nodeId: 'kms-a', mode: 'single', chains: TWO_CHAINS }, view);
    assert.equal(await value(m, 'cometkms_hsm_up'), 1);
    view.hsm = false;
    assert.equal(await value(m, 'cometkms_hsm_up'), 0);
    m.stateAlarm('c2', true);
    assert.equal(await value(m, 'cometkms_state_alarm{chain_id="c2"}'), 1);
    assert.equal(await value(m, 'cometkms_state_alarm{chain_id="c1"}'), 0);
    m.stateAlarm('c2', false);
    assert.equal(await value(m, 'cometkms_state_alarm{chain_id="c2"}'), 0);
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
    const series = (r: string) => `cometkms_double_sign_refused_total{chain_id="c1",reason="${r}"}`;
    assert.equal(await value(m, series('height_regression')), 1);
    assert.equal(await value(m, series('round_regression')), 1);
    assert.equal(await value(m, series('step_regression')), 1);
    assert.equal(await value(m, series('conflicting_data')), 2);
    assert.equal(await value(m, series('conflicting_extension')), 1);
    assert.equal((await samples(m, 'cometkms_double_sign_refused_total')).length, 5);
    assert.equal(
      await value(m, 'cometkms_sign_requests_total{chain_id="c1",type="prevote",outcome="refused"}'),
      7,
    );
  });

  test('leader, connections, forwards, HSM and etcd series', async () => {
    const m = new Metrics({ processMetrics: false });
    assert.equal(await value(m, 'cometkms_leader'), 0);
    m.setLeader(true);
    m.leaderChanged();
    m.leaderChanged();
    assert.equal(await value(m, 'cometkms_leader'), 1);
    assert.equal(await value(m, 'cometkms_leader_changes_total'), 2);
    m.validatorConnected('c1', 'tcp://127.0.0.1:1', true);
    m.validatorConnected('c1', 'tcp://127.0.0.1:2', true);
    m.validatorConnected('c1', 'tcp://127.0.0.1:2', false);
    m.validatorReconnect('c1', 'tcp://127.0.0.1:2');
    assert.equal(await value(m, 'cometkms_validator_connected{chain_id="c1",addr="tcp://127.0.0.1:1"}'), 1);
    assert.equal(await value(m, 'cometkms_validator_connected{chain_id="c1",addr="tcp://127.0.0.1:2"}'), 0);
    assert.equal(
      await value(m, 'cometkms_validator_reconnects_total{chain_id="c1",addr="tcp://127.0.0.1:2"}'),
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

  test('every signing stage has its histogram series from the start; observations land in their bucket', async () => {
    const m = new Metrics({ processMetrics: false });
    for (const stage of SIGN_STAGES) {
      assert.equal(await value(m, `${STAGE_METRIC}_count{stage="${stage}"}`), 0);
      assert.equal(await value(m, `${STAGE_METRIC}_bucket{le="+Inf",stage="${stage}"}`), 0);
    }
    m.stages.observe('hsm', 0.18);
    m.stages.observe('hsm', 0.6);
    m.stages.observe('reserve', 5000);
    assert.equal(await value(m, `${STAGE_METRIC}_bucket{le="0.00015",stage="hsm"}`), 0);
    assert.equal(await value(m, `${STAGE_METRIC}_bucket{le="0.0002",stage="hsm"}`), 1);
    assert.equal(await value(m, `${STAGE_METRIC}_bucket{le="0.00075",stage="hsm"}`), 2);
    assert.equal(await value(m, `${STAGE_METRIC}_count{stage="hsm"}`), 2);
    assert.ok(Math.abs((await value(m, `${STAGE_METRIC}_sum{stage="hsm"}`))! - 0.00078) < 1e-12);
    assert.equal(await value(m, `${STAGE_METRIC}_bucket{le="1",stage="reserve"}`), 0);
    assert.equal(await value(m, `${STAGE_METRIC}_bucket{le="+Inf",stage="reserve"}`), 1);
    assert.match(await m.registry.metrics(), new RegExp(`^# TYPE ${STAGE_METRIC} histogram$`, 'm'));
  });

  test('label helpers and the time of a stored state', () => {
    assert.equal(decisionTypeLabel(prevote()), 'prevote');
    assert.equal(decisionTypeLabel(prevote({ type: 2 })), 'precommit');
    assert.equal(decisionTypeLabel(prevote({ type: 7 })), 'vote');
    assert.equal(
      decisionTypeLabel({ chainId: 'c', kind: 'sign_bytes', outcome: 'refused', latencyMs: 0 }),
      'sign_bytes',
    );
    assert.equal(doubleSignReason(prevote()), undefined);
    assert.equal(doubleSignReason(prevote({ outcome: 'refused' })), undefined);
    assert.equal(signedAtSeconds(voteState(vote({ timestamp: ts(250) }))), 1_704_067_200.25);
    assert.equal(signedAtSeconds(freshSignState()), undefined);
    // Go's zero time (an absent timestamp) and undecodable bytes carry no time.
    assert.equal(
      signedAtSeconds(voteState(vote({ timestamp: { seconds: -62135596800n, nanos: 0 } }))),
      undefined,
    );
    assert.equal(signedAtSeconds({ ...voteState(), signBytes: new Uint8Array([9, 9, 9]) }), undefined);
  });
});
