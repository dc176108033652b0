/**
 * /metrics of real `cometkms start` processes, and the dashboard and alert rules against it.
 *
 * - Single node: sign three heights, restart, and scrape before any new signature: the last
 *   signed height, round, step and time come from the stored state; every labelled counter of
 *   every configured chain and endpoint is there at 0; build info, HSM and connection gauges.
 * - Cluster (3 etcd members, 2 nodes): the follower, which never signed, reports the replicated
 *   state, also right after its own restart; etcd_up, every forwarding result and etcd operation
 *   at 0.
 * - deploy/grafana/cometkms.json and deploy/prometheus/alerts.yml: every metric an expression
 *   names is one these nodes export, with the labels it uses; every dashboard expression parses
 *   (promtool check rules on a rule file made of them).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { ETCD_OPS, FORWARD_RESULTS } from '../../../src/admin/metrics.ts';
import { keyAddress } from '../../../src/cli/runtime/common.ts';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { type PubKey, SignedMsgType } from '../../../src/cometbft/types.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { VERSION } from '../../../src/version.ts';
import { type KmsCluster, waitFor } from '../../helpers/kms-cluster.ts';
import { adminGet, generateKeys, KmsHome, killAllKms, nodeStatus } from '../../helpers/kms-process.ts';
import {
  exposedSeries,
  promqlGroupingLabels,
  promqlMetricNames,
  promqlSelectorLabels,
} from '../../helpers/promql.ts';
import { clusterWithSentry, signUntilAccepted } from '../../helpers/sentry.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const REPO = join(import.meta.dirname, '../../..');

/** The Prometheus text of a node's /metrics (public, no token). */
async function scrape(adminUrl: string): Promise<string> {
  const { status, body } = await adminGet(adminUrl, '/metrics');
  assert.equal(status, 200);
  return String(body);
}

/** The value of one exact series, or undefined when absent. */
function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Every scrape taken below, for the dashboard and alert checks. */
const scrapes: string[] = [];

describe('/metrics of a single node straight after a restart', () => {
  let token: SoftHsmToken;
  let home: KmsHome;
  let sim: ValidatorSimulator;
  let keys: Map<string, PubKey>;

  before(async () => {
    token = await createSoftHsmToken();
    keys = await generateKeys(token, [
      { label: 'key-a', type: 'ed25519' },
      { label: 'key-b', type: 'secp256k1' },
    ]);
  });
  after(async () => {
    await killAllKms();
    await sim?.close();
    await home?.cleanup();
    await token?.cleanup();
  });

  test('HRS and time from the stored state, every series at 0, build info', {
    timeout: 120_000,
  }, async () => {
    sim = new ValidatorSimulator({
      listen: 'tcp://127.0.0.1:0',
      chainId: 'chain-a',
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 3,
      proposerEvery: 1,
      nilVoteRate: 0,
      roundChangeRate: 0,
      retryRate: 0,
      extensions: false,
      seed: 5,
    });
    const simAddr = await sim.listen();
    const deadAddr = `tcp://127.0.0.1:${await freeLoopbackPort()}`;
    home = await KmsHome.create({
      token,
      nodeId: 'kms-m',
      chains: [
        { id: 'chain-a', keyLabel: 'key-a', keyType: 'ed25519', protocol: 'v0.38', validators: [simAddr] },
        { id: 'chain-b', keyLabel: 'key-b', keyType: 'secp256k1', protocol: 'v1.0', validators: [deadAddr] },
      ],
    });
    const signedFrom = Date.now() / 1000;
    let kms = home.start();
    await kms.waitReady();
    const summary = await sim.run();
    assert.equal(summary.signed, 9, 'a proposal, a prevote and a precommit at heights 1-3');
    const signedUntil = Date.now() / 1000;
    await sim.close();
    kms.kill('SIGTERM');
    assert.equal((await kms.waitExit(15_000)).code, 0);

    // Restarted with nothing to sign (the simulator is gone): all that follows comes from the
    // stored state and the config, not from a signature of this process.
    kms = home.start();
    const adminUrl = await kms.waitReady();
    const text = await scrape(adminUrl);
    scrapes.push(text);

    assert.equal(value(text, 'cometkms_last_signed_height{chain_id="chain-a"}'), 3);
    assert.equal(value(text, 'cometkms_last_signed_round{chain_id="chain-a"}'), 0);
    assert.equal(value(text, 'cometkms_last_signed_step{chain_id="chain-a"}'), 3);
    const at = value(text, 'cometkms_last_signed_timestamp_seconds{chain_id="chain-a"}');
    assert.ok(at !== undefined && at >= signedFrom - 1 && at <= signedUntil + 1, `timestamp ${at}`);
    // chain-b never signed: its state is the initial one, with no time.
    assert.equal(value(text, 'cometkms_last_signed_height{chain_id="chain-b"}'), 0);
    assert.equal(value(text, 'cometkms_last_signed_timestamp_seconds{chain_id="chain-b"}'), undefined);

    assert.equal(value(text, `cometkms_build_info{version="${VERSION}",node_id="kms-m",mode="single"}`), 1);
    assert.equal(value(text, 'cometkms_hsm_up'), 1);
    assert.equal(value(text, 'cometkms_leader'), 1);
    assert.equal(value(text, 'cometkms_hsm_errors_total'), 0);
    for (const chain of ['chain-a', 'chain-b']) {
      for (const type of ['prevote', 'precommit', 'proposal']) {
        for (const outcome of ['signed', 'refused', 'retry']) {
          const s = `cometkms_sign_requests_total{chain_id="${chain}",type="${type}",outcome="${outcome}"}`;
          assert.equal(value(text, s), 0, s);
        }
      }
      for (const reason of ['height_regression', 'round_regression', 'step_regression', 'conflicting_data']) {
        const s = `cometkms_double_sign_refused_total{chain_id="${chain}",reason="${reason}"}`;
        assert.equal(value(text, s), 0, s);
      }
      assert.equal(value(text, `cometkms_state_alarm{chain_id="${chain}"}`), 0);
    }
    for (const [chain, addr] of [
      ['chain-a', simAddr],
      ['chain-b', deadAddr],
    ]) {
      assert.equal(value(text, `cometkms_validator_connected{chain_id="${chain}",addr="${addr}"}`), 0);
      assert.equal(value(text, `cometkms_validator_reconnects_total{chain_id="${chain}",addr="${addr}"}`), 0);
    }
    assert.doesNotMatch(text, /^cometkms_etcd_up/m, 'a single node has no etcd');
    assert.doesNotMatch(text, /^cometkms_forwards_total\{/m);

    // /status agrees, and carries the version, the key address and the counts.
    const status = await nodeStatus(adminUrl, home.adminToken);
    assert.equal(status.version, VERSION);
    const a = status.chains.find((c) => c.chain_id === 'chain-a')!;
    assert.deepEqual([a.height, a.round, a.step], [3, 0, 3]);
    assert.equal(a.address, keyAddress(keys.get('key-a')!));
    assert.deepEqual([a.refused, a.double_sign_refused, a.errors], [0, 0, 0]);
    const b = status.chains.find((c) => c.chain_id === 'chain-b')!;
    assert.equal(b.address, keyAddress(keys.get('key-b')!));
  });
});

describe('/metrics of a cluster follower', () => {
  const CHAIN = 'metrics-cluster-1';
  let cluster: KmsCluster;
  let sim: ValidatorSimulator;

  before(async () => {
    ({ cluster, sim } = await clusterWithSentry({ chainId: CHAIN, seed: 9, keyFill: 23, nodes: 2 }));
  });
  after(async () => {
    await sim?.close();
    await cluster?.cleanup();
  });

  const sign = (type: number, height: bigint): Promise<void> =>
    signUntilAccepted(sim, sim.buildVote(type, height, 0, sim.blockIdFor(height, 0)));

  test('reports the replicated state, before and after its restart, and every cluster series', {
    timeout: 120_000,
  }, async () => {
    for (let h = 1n; h <= 3n; h++) {
      await sign(SignedMsgType.Prevote, h);
      await sign(SignedMsgType.Precommit, h);
    }
    const leader = await cluster.leaderIndex();
    const follower = 1 - leader;
    const leaderText = await scrape(cluster.nodes[leader]!.adminUrl!);
    assert.equal(value(leaderText, 'cometkms_leader'), 1);
    scrapes.push(leaderText);

    const followerHeight = async (): Promise<number | undefined> =>
      value(
        await scrape(cluster.nodes[follower]!.adminUrl!),
        `cometkms_last_signed_height{chain_id="${CHAIN}"}`,
      );
    await waitFor('the follower to report height 3', 10_000, async () => (await followerHeight()) === 3);

    // Restarted, the follower knows the state from etcd before anything new is signed.
    await cluster.signal(follower, 'SIGTERM');
    await cluster.start(follower);
    const text = await scrape(cluster.nodes[follower]!.adminUrl!);
    scrapes.push(text);
    assert.equal(value(text, `cometkms_last_signed_height{chain_id="${CHAIN}"}`), 3);
    assert.equal(value(text, `cometkms_last_signed_step{chain_id="${CHAIN}"}`), 3);
    assert.ok((value(text, `cometkms_last_signed_timestamp_seconds{chain_id="${CHAIN}"}`) ?? 0) > 0);
    assert.equal(value(text, 'cometkms_leader'), 0);
    assert.equal(value(text, 'cometkms_etcd_up'), 1);
    assert.equal(value(text, 'cometkms_hsm_up'), 1);
    const id = cluster.nodes[follower]!.id;
    assert.equal(value(text, `cometkms_build_info{version="${VERSION}",node_id="${id}",mode="cluster"}`), 1);
    for (const result of FORWARD_RESULTS) {
      assert.equal(value(text, `cometkms_forwards_total{result="${result}"}`), 0, result);
    }
    for (const op of ETCD_OPS) {
      assert.ok(value(text, `cometkms_etcd_call_failures_total{op="${op}"}`) !== undefined, op);
      assert.ok(value(text, `cometkms_etcd_call_duration_seconds_count{op="${op}"}`) !== undefined, op);
    }
  });
});

describe('dashboard and alert rules name only what a node exports', () => {
  interface Panel {
    title: string;
    targets?: Array<{ expr: string }>;
    panels?: Panel[];
  }
  interface Dashboard {
    panels: Panel[];
    templating: { list: Array<{ name: string; query?: string | { query: string } }> };
  }

  /** Every PromQL expression of the dashboard, named by where it is. */
  async function dashboardExprs(): Promise<Array<{ where: string; expr: string }>> {
    const dash = JSON.parse(await readFile(join(REPO, 'deploy/grafana/cometkms.json'), 'utf8')) as Dashboard;
    const out: Array<{ where: string; expr: string }> = [];
    const walk = (panels: Panel[]): void => {
      for (const p of panels) {
        for (const [i, t] of (p.targets ?? []).entries())
          out.push({ where: `panel "${p.title}" #${i}`, expr: t.expr });
        walk(p.panels ?? []);
      }
    };
    walk(dash.panels);
    for (const v of dash.templating.list) {
      if (v.query === undefined) continue;
      const q = typeof v.query === 'string' ? v.query : v.query.query;
      // label_values(metric, label): the metric must exist with that label.
      const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(q);
      if (m !== null) out.push({ where: `variable ${v.name}`, expr: `count by (${m[2]}) (${m[1]})` });
      else if (q !== 'prometheus') throw new Error(`variable ${v.name}: unexpected query ${q}`);
    }
    return out;
  }

  async function alertExprs(): Promise<Array<{ where: string; expr: string }>> {
    const rules = parse(await readFile(join(REPO, 'deploy/prometheus/alerts.yml'), 'utf8')) as {
      groups: Array<{ rules: Array<{ alert: string; expr: string }> }>;
    };
    return rules.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
  }

  test('the PromQL reader finds metrics and labels (and would notice a wrong one)', () => {
    const expr =
      'max by (node_id) (cometkms_leader * on (instance, job) group_left (node_id) cometkms_build_info) + ' +
      'histogram_quantile(0.99, sum by (le) (rate(cometkms_sign_duration_seconds_bucket{chain_id=~"$chain"}[$__rate_interval]))) > 1e-9' +
      ' unless on (chain_id) group_right cometkms_last_signed_height';
    assert.deepEqual(promqlMetricNames(expr).sort(), [
      'cometkms_build_info',
      'cometkms_last_signed_height',
      'cometkms_leader',
      'cometkms_sign_duration_seconds_bucket',
    ]);
    assert.deepEqual(promqlSelectorLabels(expr), [
      { metric: 'cometkms_sign_duration_seconds_bucket', label: 'chain_id' },
    ]);
    assert.deepEqual(promqlGroupingLabels(expr).sort(), ['chain_id', 'instance', 'job', 'le', 'node_id']);
  });

  test('every metric and label in the dashboard and the alerts is exported by a real node', async () => {
    assert.ok(scrapes.length >= 3, 'the scrapes above ran');
    const exported = new Map<string, Set<string>>();
    for (const text of scrapes) {
      for (const [name, labels] of exposedSeries(text)) {
        const known = exported.get(name) ?? new Set<string>();
        for (const l of labels) known.add(l);
        exported.set(name, known);
      }
    }
    const exprs = [...(await dashboardExprs()), ...(await alertExprs())];
    assert.ok(exprs.length > 20, `${exprs.length} expressions`);
    // Labels Prometheus adds to every scraped series.
    const targetLabels = ['instance', 'job'];
    for (const { where, expr } of exprs) {
      const names = promqlMetricNames(expr);
      assert.ok(names.length > 0, `${where}: no metric in ${expr}`);
      for (const name of names) assert.ok(exported.has(name), `${where}: ${name} is not exported`);
      for (const { metric, label } of promqlSelectorLabels(expr)) {
        assert.ok(exported.get(metric)?.has(label), `${where}: ${metric} has no label ${label}`);
      }
      const available = new Set([...targetLabels, ...names.flatMap((n) => [...(exported.get(n) ?? [])])]);
      for (const label of promqlGroupingLabels(expr)) {
        assert.ok(available.has(label), `${where}: no metric of ${expr} has the label ${label}`);
      }
    }
  });

  test('every dashboard expression is valid PromQL (promtool check rules)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cometkms-dashboard-'));
    try {
      const exprs = await dashboardExprs();
      // Grafana's range variables become plain durations; each expression becomes a rule.
      const rules = {
        groups: [
          {
            name: 'dashboard',
            rules: exprs.map(({ expr }, i) => ({
              record: `dashboard:expr_${i}`,
              expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h'),
            })),
          },
        ],
      };
      const file = join(dir, 'dashboard-rules.yml');
      await writeFile(file, stringify(rules));
      const out = await new Promise<{ code: number; text: string }>((resolve) => {
        execFile('promtool', ['check', 'rules', file], { timeout: 60_000 }, (err, stdout, stderr) =>
          resolve({ code: err ? 1 : 0, text: `${stdout}${stderr}` }),
        );
      });
      assert.equal(out.code, 0, out.text);
      assert.match(out.text, new RegExp(`SUCCESS: ${exprs.length} rules found`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
