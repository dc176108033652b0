/**
 * `/status` of a real 3-node cluster (ARCHITECTURE.md §5) after a crash failover: every field of
 * the contract is checked against what is actually true — the leader key and the sign state in
 * etcd, the votes this test got signed, and which node the validator has adopted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { SignedMsgType } from '../../../src/cometbft/types.ts';
import type { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { decodeSignState, etcdKeys } from '../../../src/store/etcd.ts';
import { type KmsCluster, waitFor } from '../../helpers/kms-cluster.ts';
import { adminGet } from '../../helpers/kms-process.ts';
import { clusterWithSentry, signUntilAccepted } from '../../helpers/sentry.ts';

const CHAIN = 'cluster-status-1';
const PREFIX = '/cometkms/';

describe('cluster: /status matches reality after a failover', () => {
  let cluster: KmsCluster;
  let etcd: Etcd3;
  let sim: ValidatorSimulator;

  before(async () => {
    ({ cluster, sim } = await clusterWithSentry({ chainId: CHAIN, seed: 3, keyFill: 17 }));
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
  });

  after(async () => {
    await sim?.close();
    etcd?.close();
    await cluster?.cleanup();
  });

  /** Gets `type` at `height` signed, through "try again" replies and reconnects (failovers included). */
  const sign = (type: number, height: bigint): Promise<void> =>
    signUntilAccepted(sim, sim.buildVote(type, height, 0, sim.blockIdFor(height, 0)));

  async function signHeights(from: number, to: number): Promise<void> {
    for (let h = from; h <= to; h++) {
      await sign(SignedMsgType.Prevote, BigInt(h));
      await sign(SignedMsgType.Precommit, BigInt(h));
    }
  }

  async function allStatus(): Promise<NodeStatus[]> {
    const out: NodeStatus[] = [];
    for (let i = 0; i < cluster.nodes.length; i++) {
      const s = await cluster.status(i);
      if (s === undefined) throw new Error(`node ${i} does not answer /status`);
      out.push(s);
    }
    return out;
  }

  it('every §5 field agrees on all nodes and with etcd', { timeout: 120_000 }, async () => {
    await signHeights(1, 5);
    const first = await cluster.leaderIndex();
    await cluster.signal(first, 'SIGKILL');
    // Signed through the failover: the new leader continues from the replicated state.
    await signHeights(6, 10);
    await cluster.start(first);

    const leaderKv = await etcd.get(etcdKeys.leader(PREFIX).toString()).exec();
    const leaderKey = leaderKv.kvs[0];
    assert.ok(leaderKey !== undefined, 'a leader key exists');
    const leaderId = (JSON.parse(leaderKey.value.toString()) as { nodeId: string }).nodeId;
    assert.notEqual(leaderId, cluster.nodes[first]!.id, 'the killed node no longer leads');
    const stateRaw = await etcd.get(etcdKeys.state(PREFIX, CHAIN).toString()).buffer();
    assert.ok(stateRaw !== null, 'the sign state exists');
    const state = decodeSignState(stateRaw, 'state');
    // The last vote this test got signed is the replicated state.
    assert.deepEqual([state.height, state.round, state.step], [10n, 0, 3]);

    let statuses: NodeStatus[] = [];
    // The followers' views (registry, replicated state, leader term) refresh within a second.
    await waitFor('every node to report the same leader, term, state and members', 15_000, async () => {
      statuses = await allStatus();
      return statuses.every(
        (s) =>
          s.leader_id === leaderId &&
          s.term === Number(leaderKey.create_revision) &&
          s.chains[0]?.height === 10 &&
          s.chains[0].step === 3 &&
          s.cluster?.members.length === 3 &&
          s.cluster.etcd_healthy,
      );
    });
    for (const [i, s] of statuses.entries()) {
      const node = cluster.nodes[i]!;
      assert.equal(s.node_id, node.id);
      assert.equal(s.mode, 'cluster');
      const leads = node.id === leaderId;
      assert.equal(s.role, leads ? 'leader' : 'follower', node.id);
      assert.equal(s.hsm.signing_session, leads, `${node.id}: only the leader holds a signing session`);
      assert.deepEqual(
        s.cluster?.members.map((m) => [m.node_id, m.leader]),
        cluster.nodes.map((n) => [n.id, n.id === leaderId]),
      );
      assert.equal(s.chains.length, 1);
      const c = s.chains[0]!;
      assert.equal(c.chain_id, CHAIN);
      assert.deepEqual([c.height, c.round, c.step], [10, 0, 3], `${node.id} reports the replicated HRS`);
      assert.equal(c.validators.length, 1);
      assert.equal(c.validators[0]!.addr, sim.address);
    }
    // Every etcd call of the leader's store and leadership is measured. It made every reservation
    // of heights 6 to 10 (more than 10 calls if a compare failed and it retried).
    const leader = cluster.nodes.find((n) => n.id === leaderId)!;
    const metrics = String((await adminGet(leader.adminUrl!, '/metrics')).body);
    const calls = (op: string): number => {
      const m = new RegExp(`^cometkms_etcd_call_duration_seconds_count\\{op="${op}"\\} (\\d+)$`, 'm').exec(
        metrics,
      );
      return Number(m?.[1] ?? 0);
    };
    assert.ok(calls('reserve') >= 10, `reserve calls: ${calls('reserve')}\n${metrics}`);
    for (const op of ['state_read', 'campaign', 'lease_grant', 'lease_keepalive']) {
      assert.ok(calls(op) >= 1, `no ${op} call in /metrics`);
    }
    // The simulator, like a CometBFT node, serves one signer at a time (the others wait in its
    // backlog, their handshake not done): exactly one node may report the validator connected.
    assert.ok(sim.connected);
    await waitFor('exactly one node to report the validator connected', 10_000, async () => {
      const connected = (await allStatus()).filter((s) => s.chains[0]?.validators[0]?.connected === true);
      return connected.length === 1;
    });
  });
});
