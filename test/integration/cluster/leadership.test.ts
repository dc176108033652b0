import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type TestNode, useEtcdTestBed, waitUntil } from '../../helpers/etcd-cluster.ts';

const bed = useEtcdTestBed('leadership', { members: 3, unsafeNoFsync: true });

/** Three started nodes under a fresh prefix. */
async function threeNodes(): Promise<TestNode[]> {
  const prefix = bed.nextPrefix();
  const nodes = ['kms-1', 'kms-2', 'kms-3'].map((id) => bed.node(prefix, id));
  await Promise.all(nodes.map((n) => n.leadership.start()));
  return nodes;
}

/** Waits until exactly one node leads and every node names it as leader; returns it. */
async function settled(nodes: TestNode[], ms = 5_000): Promise<TestNode> {
  await waitUntil('one agreed leader', ms, () => {
    const leaders = nodes.filter((n) => n.leadership.role === 'leader');
    return leaders.length === 1 && nodes.every((n) => n.leadership.leader?.nodeId === leaders[0]!.nodeId);
  });
  return nodes.find((n) => n.leadership.role === 'leader')!;
}

test('exactly one of three nodes leads, the others know its forward address', async () => {
  const nodes = await threeNodes();
  const leader = await settled(nodes);
  assert.equal(nodes.filter((n) => n.leadership.role === 'leader').length, 1);
  assert.ok(leader.leadership.token);
  assert.equal(leader.leadership.term, leader.leadership.token.createRevision);
  for (const n of nodes.filter((x) => x !== leader)) {
    assert.equal(n.leadership.token, undefined);
    assert.deepEqual(n.leadership.leader, {
      nodeId: leader.nodeId,
      advertise: `${leader.nodeId}.test:26790`,
    });
  }
});

test('resign hands over while the old lease is still kept alive, and the old leader does not retake it', async () => {
  const nodes = await threeNodes();
  const old = await settled(nodes);
  const oldTerm = BigInt(old.leadership.term!);
  const follower = new Promise<unknown>((resolve) => old.leadership.once('follower', resolve));
  await old.leadership.resign();
  await follower;
  // The old node keeps running and keeping its lease alive, so expiry cannot be what moved it.
  const next = await settled(nodes);
  assert.notEqual(next.nodeId, old.nodeId);
  assert.ok(BigInt(next.leadership.term!) > oldTerm);
  assert.equal(old.leadership.role, 'follower');
});

test('transferTo names the next leader', async () => {
  const nodes = await threeNodes();
  const old = await settled(nodes);
  const target = nodes.find((n) => n !== old)!;
  await old.leadership.transferTo(target.nodeId);
  const next = await settled(nodes);
  assert.equal(next.nodeId, target.nodeId);
});

test('a leader that stops keeping its lease alive is replaced once the lease expires', async () => {
  const nodes = await threeNodes();
  const old = await settled(nodes);
  const oldToken = old.leadership.token!;
  // like a crash: no revoke, the lease runs out on its own
  await old.stop({ revoke: false });
  const rest = nodes.filter((n) => n !== old);
  const next = await settled(rest, 10_000);
  assert.ok(BigInt(next.leadership.term!) > BigInt(oldToken.createRevision));
  assert.notEqual(next.leadership.token!.leaseId, oldToken.leaseId);
});

test('a stopped node with revoke releases leadership at once to a waiting node', async () => {
  const nodes = await threeNodes();
  const old = await settled(nodes);
  const changed = new Promise<void>((resolve) => old.leadership.once('follower', () => resolve()));
  await old.stop();
  await changed;
  assert.equal(old.leadership.role, 'follower');
  await settled(nodes.filter((n) => n !== old));
});

test('stepDown drops leadership, revokes the lease and a new term follows; a stale token is ignored', async () => {
  const nodes = await threeNodes();
  const old = await settled(nodes);
  const token = old.leadership.token!;
  old.leadership.stepDown('stale token from another term', { ...token, createRevision: '1' });
  assert.equal(old.leadership.role, 'leader');
  old.leadership.stepDown('a fenced transaction failed', token);
  assert.equal(old.leadership.role, 'follower');
  assert.equal(old.leadership.token, undefined);
  await waitUntil('a new term', 5_000, () =>
    nodes.some(
      (n) => n.leadership.term !== undefined && BigInt(n.leadership.term) > BigInt(token.createRevision),
    ),
  );
  await waitUntil('the old lease to be revoked', 5_000, async () => {
    const ttl = await old.clients.client.leaseClient.leaseTimeToLive({ ID: token.leaseId });
    return ttl.TTL === '-1';
  });
  await settled(nodes);
});
