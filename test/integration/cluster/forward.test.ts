import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import {
  ClusterChainHandler,
  type ClusterChainHandler as ClusterChainHandlerType,
  type LocalLeadership,
  leaderForwardHandler,
} from '../../../src/cluster/cluster-handler.ts';
import {
  encodeForwardRequest,
  ForwardClient,
  type ForwardOutcome,
  type ForwardResult,
  ForwardServer,
  type ForwardTls,
  splitHostPort,
} from '../../../src/cluster/forward.ts';
import { encodeMessage } from '../../../src/cometbft/messages.ts';
import { voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { PrivvalMessage } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { makeTestCerts, type TestCerts } from '../../helpers/certs.ts';
import { waitUntil } from '../../helpers/etcd-cluster.ts';
import {
  CHAIN_ID,
  type GuardFixture,
  makeGuard,
  replyVote,
  vote,
  voteRequest,
} from '../../helpers/guard-fixtures.ts';

let cluster: TestCerts;
let rogue: TestCerts;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  cluster = await makeTestCerts('cometkms test cluster', ['kms-1', 'kms-2', 'kms-3']);
  rogue = await makeTestCerts('some other ca', ['kms-2']);
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await cluster.cleanup();
  await rogue.cleanup();
});

/** A mutable LocalLeadership. */
function flag(initial: boolean): LocalLeadership & { value: boolean } {
  return {
    value: initial,
    servesLocally() {
      return this.value;
    },
  };
}

interface Leader {
  fx: GuardFixture;
  server: ForwardServer;
  leadership: LocalLeadership & { value: boolean };
  target: { nodeId: string; advertise: string };
}

async function startLeader(
  opts: { handle?: (chainId: string, body: Uint8Array) => Promise<ForwardOutcome>; tls?: ForwardTls } = {},
): Promise<Leader> {
  const fx = await makeGuard();
  const leadership = flag(true);
  const server = await ForwardServer.start({
    listen: '127.0.0.1:0',
    tls: opts.tls ?? (await cluster.tls('kms-1')),
    handle:
      opts.handle ??
      leaderForwardHandler(new Map([[CHAIN_ID, { protocol: 'v0.38', guard: fx.guard }]]), leadership),
  });
  cleanups.push(() => server.close());
  return { fx, server, leadership, target: { nodeId: 'kms-1', advertise: server.address } };
}

interface Follower {
  fx: GuardFixture;
  client: ForwardClient;
  handler: ClusterChainHandlerType;
  results: string[];
}

async function startFollower(
  target: { nodeId: string; advertise: string } | undefined,
  opts: { tls?: ForwardTls; deadlineMs?: number } = {},
): Promise<Follower> {
  const fx = await makeGuard();
  const client = new ForwardClient({
    tls: opts.tls ?? (await cluster.tls('kms-2')),
    ...(opts.deadlineMs === undefined ? {} : { deadlineMs: opts.deadlineMs }),
  });
  cleanups.push(() => client.close());
  client.setLeader(target);
  const results: string[] = [];
  const handler = new ClusterChainHandler({
    chainId: CHAIN_ID,
    protocol: 'v0.38',
    guard: fx.guard,
    leadership: flag(false),
    forwarder: client,
    onForward: (r) => results.push(r),
  });
  return { fx, client, handler, results };
}

/** A deferred the test can release, so a leader can be held mid-request. */
function gate(): { promise: Promise<void>; open(): void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

test('a follower forwards a vote over mTLS and relays the leader’s signature', async () => {
  const leader = await startLeader();
  const follower = await startFollower(leader.target);
  const v = vote({ height: 5n });
  const reply = await follower.handler.handle(voteRequest(v));
  const { vote: signed, error } = replyVote(reply);
  assert.equal(error, undefined);
  assert.ok(verifySignature(leader.fx.signer.pubKey, voteSignBytes(CHAIN_ID, v), signed.signature));
  assert.equal(leader.fx.signer.signed.length, 1, 'the leader signed once');
  assert.equal(follower.fx.signer.signed.length, 0, 'the follower signed nothing');
  assert.deepEqual(follower.results, ['ok']);
  assert.equal((await leader.fx.store.load(CHAIN_ID))?.height, 5n, 'the leader reserved the height');
});

test('many requests in flight on one connection each get their own reply', async () => {
  const leader = await startLeader();
  const follower = await startFollower(leader.target);
  const heights = Array.from({ length: 20 }, (_, i) => BigInt(100 + i));
  const replies = await Promise.all(
    heights.map((h) => follower.handler.handle(voteRequest(vote({ height: h })))),
  );
  // One connection keeps the order and the guard serves them in arrival order: all are signed,
  // and each reply carries the signature over its own request's vote.
  for (const [i, r] of replies.entries()) {
    const { vote: signed, error } = replyVote(r);
    assert.equal(error, undefined);
    assert.equal(signed.height, heights[i]);
    const bytes = voteSignBytes(CHAIN_ID, vote({ height: heights[i] as bigint }));
    assert.ok(verifySignature(leader.fx.signer.pubKey, bytes, signed.signature));
  }
  assert.equal(leader.fx.signer.signed.length, heights.length);
});

test('PubKey is answered locally by a follower, with no leader and no forwarding', async () => {
  const follower = await startFollower(undefined);
  const reply = await follower.handler.handle({ kind: 'pubKeyRequest', chainId: CHAIN_ID });
  assert.equal(reply.kind, 'pubKeyResponse');
  assert.ok(reply.kind === 'pubKeyResponse' && reply.pubKey !== undefined && reply.error === undefined);
  assert.deepEqual(reply.pubKey.bytes, follower.fx.signer.pubKey.bytes);
  const wrong = await follower.handler.handle({ kind: 'pubKeyRequest', chainId: 'other-chain' });
  assert.ok(wrong.kind === 'pubKeyResponse' && wrong.pubKey === undefined);
  assert.match(wrong.error?.description ?? '', /chain id mismatch/);
  assert.deepEqual(follower.results, [], 'nothing was forwarded');
});

test('a follower with no known leader answers an empty Message', async () => {
  const follower = await startFollower(undefined);
  const reply = await follower.handler.handle(voteRequest(vote()));
  assert.deepEqual(reply, { kind: 'empty' });
  assert.deepEqual(follower.results, ['no_leader']);
});

test('a leader that does not serve answers "not leader", and the follower replies empty', async () => {
  const leader = await startLeader();
  leader.leadership.value = false;
  const follower = await startFollower(leader.target);
  assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
  assert.deepEqual(follower.results, ['not_leader']);
  assert.equal(leader.fx.signer.signed.length, 0);
});

test('a client certificate from another CA is refused, and the follower replies empty', async () => {
  const leader = await startLeader();
  const follower = await startFollower(leader.target, { tls: await rogue.tls('kms-2') });
  assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
  assert.deepEqual(follower.results, ['unavailable']);
  assert.equal(leader.fx.signer.signed.length, 0, 'the leader never saw the request');
});

test('a peer without a client certificate gets no reply', async () => {
  const leader = await startLeader();
  const { host, port } = splitHostPort(leader.server.address);
  const socket = tls.connect({ host, port, ca: (await cluster.tls('kms-1')).ca, minVersion: 'TLSv1.3' });
  const received: Buffer[] = [];
  socket.on('data', (d: Buffer) => received.push(d));
  socket.on('error', () => undefined);
  socket.write(encodeForwardRequest(1, CHAIN_ID, encodeMessage(voteRequest(vote()), 'v0.38')));
  await waitUntil(
    'the leader to drop the connection',
    5_000,
    () => socket.destroyed || socket.readyState === 'closed',
  );
  assert.deepEqual(received, []);
  assert.equal(leader.fx.signer.signed.length, 0);
});

test('a follower refuses a "leader" whose certificate is from another CA', async () => {
  const impostor = await startLeader({ tls: await rogue.tls('kms-2') });
  const follower = await startFollower(impostor.target);
  assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
  assert.deepEqual(follower.results, ['unavailable']);
  assert.equal(impostor.fx.signer.signed.length, 0);
});

test('a leader change while a request is in flight makes the follower reply empty', async () => {
  const held = gate();
  const arrived = gate();
  const leader = await startLeader({
    handle: async () => {
      arrived.open();
      await held.promise;
      return { status: 'not_leader' };
    },
  });
  cleanups.push(() => held.open());
  const next = await startLeader();
  const follower = await startFollower(leader.target);
  const pending = follower.handler.handle(voteRequest(vote()));
  await arrived.promise;
  follower.client.setLeader(next.target);
  assert.deepEqual(await pending, { kind: 'empty' });
  assert.deepEqual(follower.results, ['leader_changed']);
  // the next request goes to the new leader and is signed there
  const reply = replyVote(await follower.handler.handle(voteRequest(vote({ height: 11n }))));
  assert.equal(reply.error, undefined);
  assert.equal(next.fx.signer.signed.length, 1);
});

test('no reply within the deadline makes the follower reply empty', async () => {
  const held = gate();
  const leader = await startLeader({
    handle: async () => {
      await held.promise;
      return { status: 'not_leader' };
    },
  });
  cleanups.push(() => held.open());
  const follower = await startFollower(leader.target, { deadlineMs: 200 });
  assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
  assert.deepEqual(follower.results, ['timeout']);
});

test('an unreachable leader address makes the follower reply empty', async () => {
  const leader = await startLeader();
  const { port } = splitHostPort(leader.server.address);
  await leader.server.close();
  const follower = await startFollower({ nodeId: 'kms-1', advertise: `127.0.0.1:${port}` });
  assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
  assert.deepEqual(follower.results, ['unavailable']);
});

test('a malformed or unexpected reply from the leader is never relayed', async () => {
  const replies: PrivvalMessage[] = [
    // the right kind, but neither a signature nor an error: the node would take it as success
    { kind: 'signedVoteResponse', vote: vote() },
    // a different kind
    { kind: 'pubKeyResponse', pubKey: { type: 'ed25519', bytes: new Uint8Array(32) } },
  ];
  for (const r of replies) {
    const leader = await startLeader({
      handle: async () => ({ status: 'ok', body: encodeMessage(r, 'v0.38') }),
    });
    const follower = await startFollower(leader.target);
    assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
    assert.deepEqual(follower.results, ['bad_reply']);
  }
  const garbage = await startLeader({
    handle: async () => ({ status: 'ok', body: Uint8Array.of(0xff, 0xff) }),
  });
  const follower = await startFollower(garbage.target);
  assert.deepEqual(await follower.handler.handle(voteRequest(vote())), { kind: 'empty' });
  assert.deepEqual(follower.results, ['bad_reply']);
});

test('the leader side refuses unknown chains, undecodable bodies and non-signing requests', async () => {
  const leader = await startLeader();
  const client = new ForwardClient({ tls: await cluster.tls('kms-3') });
  cleanups.push(() => client.close());
  client.setLeader(leader.target);
  const body = encodeMessage(voteRequest(vote()), 'v0.38');
  const results: ForwardResult[] = [
    await client.forward('other-chain', body),
    await client.forward(CHAIN_ID, Uint8Array.of(0x1a, 0x05, 0x01)),
    await client.forward(CHAIN_ID, encodeMessage({ kind: 'pubKeyRequest', chainId: CHAIN_ID }, 'v0.38')),
  ];
  assert.deepEqual(
    results.map((r) => r.status),
    ['unknown_chain', 'bad_request', 'bad_request'],
  );
  // a forwarded request for another chain id than the frame's is checked by the guard itself
  const mismatched = await client.forward(
    CHAIN_ID,
    encodeMessage(voteRequest(vote(), 'other-chain'), 'v0.38'),
  );
  assert.equal(mismatched.status, 'ok');
  assert.equal(leader.fx.signer.signed.length, 0);
});

test('an oversize frame from an authenticated peer closes the connection', async () => {
  const leader = await startLeader();
  const { host, port } = splitHostPort(leader.server.address);
  const socket = tls.connect({ host, port, ...(await cluster.tls('kms-2')), minVersion: 'TLSv1.3' });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(0xffff_ffff, 0);
  socket.write(header);
  await waitUntil(
    'the leader to drop the connection',
    5_000,
    () => socket.destroyed || socket.readyState === 'closed',
  );
  assert.equal(leader.fx.signer.signed.length, 0);
});
