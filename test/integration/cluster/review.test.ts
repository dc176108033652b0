/**
 * Adversarial tests of the guard over the etcd store (security review): lost transaction replies,
 * stale cached revisions and another extension at a reserved HRS must never produce a signature
 * over bytes that are not the ones reserved in etcd.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bytesToHex } from '@noble/hashes/utils.js';
import type { Etcd3, ITxnRequest, ITxnResponse } from 'etcd3';
import { voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import { Step, type Vote } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { ChainGuard } from '../../../src/guard/chain-guard.ts';
import type { Signer } from '../../../src/guard/signer.ts';
import { decodeSignState, EtcdSignStateStore, etcdKeys } from '../../../src/store/etcd.ts';
import type { SignState } from '../../../src/store/types.ts';
import { initEtcdChainState, type TestNode, useEtcdTestBed } from '../../helpers/etcd-cluster.ts';
import { blockId, CHAIN_ID, replyVote, SEED, ts, vote, voteRequest } from '../../helpers/guard-fixtures.ts';
import { InMemorySigner } from '../../helpers/memory-signer.ts';

const bed = useEtcdTestBed('review', { members: 1, unsafeNoFsync: true });

async function leader(): Promise<{ node: TestNode; prefix: string }> {
  const prefix = bed.nextPrefix();
  const node = await bed.leaderNode(prefix);
  await initEtcdChainState(node.clients.client, prefix, CHAIN_ID);
  return { node, prefix };
}

/** The state stored in etcd right now. */
async function inEtcd(node: TestNode, prefix: string): Promise<SignState> {
  const raw = await node.clients.client.get(etcdKeys.state(prefix, CHAIN_ID).toString()).buffer();
  assert.ok(raw !== null);
  return decodeSignState(raw, 'test');
}

/**
 * A client whose next transaction that writes is applied by etcd but whose reply is then lost
 * (what a deadline or a dropped connection after the commit looks like to the caller).
 */
function lossyClient(real: Etcd3): { client: Etcd3; loseNextWriteReply(): void } {
  let lose = false;
  const kv = {
    txn: async (req: ITxnRequest): Promise<ITxnResponse> => {
      const res = await real.kv.txn(req);
      if (lose && res.succeeded && req.success?.some((op) => op.request_put !== undefined)) {
        lose = false;
        throw new Error('injected: transaction applied, reply lost');
      }
      return res;
    },
    range: (req: Parameters<Etcd3['kv']['range']>[0]) => real.kv.range(req),
  };
  return {
    client: { kv } as unknown as Etcd3,
    loseNextWriteReply: () => {
      lose = true;
    },
  };
}

/** A signer that notes every message not reserved in etcd (as sign or extension bytes) when signed. */
function auditingSigner(node: TestNode, prefix: string): { signer: Signer; unreserved: string[] } {
  const inner = InMemorySigner.ed25519(SEED);
  const unreserved: string[] = [];
  return {
    unreserved,
    signer: {
      pubKey: inner.pubKey,
      async sign(message: Uint8Array): Promise<Uint8Array> {
        const s = await inEtcd(node, prefix);
        const hex = bytesToHex(message);
        if (hex !== bytesToHex(s.signBytes) && hex !== bytesToHex(s.extensionSignBytes)) unreserved.push(hex);
        return inner.sign(message);
      },
    },
  };
}

test('a reservation whose reply was lost: retry signs exactly it, other bytes are refused', async () => {
  const { node, prefix } = await leader();
  const lossy = lossyClient(node.clients.client);
  const store = new EtcdSignStateStore({
    client: lossy.client,
    prefix,
    leadership: node.leadership,
    marks: node.marks,
  });
  const audit = auditingSigner(node, prefix);
  const guard = new ChainGuard({
    chainId: CHAIN_ID,
    protocol: 'v0.38',
    signer: audit.signer,
    store,
    maxHeightJump: 100_000,
  });
  await guard.init();

  const v: Vote = vote({ height: 7n });
  lossy.loseNextWriteReply();
  assert.deepEqual(await guard.handle(voteRequest(v)), { kind: 'empty' }, 'unsure: the node retries');
  assert.deepEqual((await inEtcd(node, prefix)).signBytes, voteSignBytes(CHAIN_ID, v), 'yet reserved');

  const other = replyVote(await guard.handle(voteRequest(vote({ height: 7n, blockId: blockId(5) }))));
  assert.equal(other.error, 'error signing vote: conflicting data');

  const retry = replyVote(await guard.handle(voteRequest({ ...v, timestamp: ts(1234) })));
  assert.equal(retry.error, undefined);
  assert.deepEqual(retry.vote.timestamp, v.timestamp, 'the reserved timestamp');
  assert.ok(verifySignature(audit.signer.pubKey, voteSignBytes(CHAIN_ID, v), retry.vote.signature));
  assert.deepEqual(audit.unreserved, []);
});

test('a stale cached revision never yields {ok: true}: another writer moved the state on', async () => {
  const { node, prefix } = await leader();
  const a = node.store;
  const b = new EtcdSignStateStore({
    client: node.clients.client,
    prefix,
    leadership: node.leadership,
    marks: node.marks,
  });
  const s0 = (await a.load(CHAIN_ID))!;
  const mk = (height: bigint, step: number, tag: string): SignState => ({
    height,
    round: 0,
    step,
    signBytes: new Uint8Array(Buffer.from(tag)),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  });
  const s1 = mk(5n, Step.Propose, 'p5');
  assert.deepEqual(await a.reserve(CHAIN_ID, s0, s1), { ok: true });
  // b (another process of the same leader term, e.g. before a restart) moves on; a's cache is stale
  const s2 = mk(5n, Step.Prevote, 'v5');
  assert.deepEqual(await b.reserve(CHAIN_ID, (await b.load(CHAIN_ID))!, s2), { ok: true });
  const res = await a.reserve(CHAIN_ID, s1, mk(5n, Step.Precommit, 'c5-from-a'));
  assert.deepEqual(res, { ok: false, current: s2 });
  assert.deepEqual(await inEtcd(node, prefix), s2);
});

test('two guards on one etcd state: the second cannot sign another extension at the reserved HRS', async () => {
  const { node, prefix } = await leader();
  const audit = auditingSigner(node, prefix);
  const other = new EtcdSignStateStore({
    client: node.clients.client,
    prefix,
    leadership: node.leadership,
    marks: node.marks,
  });
  const [g1, g2] = [node.store, other].map(
    (store) =>
      new ChainGuard({
        chainId: CHAIN_ID,
        protocol: 'v0.38',
        signer: audit.signer,
        store,
        maxHeightJump: 100_000,
      }),
  );
  await g1!.init();
  await g2!.init();
  const pc = vote({ type: 2, height: 3n, extension: new Uint8Array([1]) });
  assert.equal(replyVote(await g1!.handle(voteRequest(pc))).error, undefined);
  const second = replyVote(await g2!.handle(voteRequest({ ...pc, extension: new Uint8Array([2]) })));
  assert.equal(second.error, 'error signing vote: conflicting vote extension');
  assert.deepEqual((await inEtcd(node, prefix)).extensionSignBytes, voteExtensionSignBytes(CHAIN_ID, pc));
  const same = replyVote(await g2!.handle(voteRequest(pc)));
  assert.equal(same.error, undefined);
  assert.ok(
    verifySignature(audit.signer.pubKey, voteExtensionSignBytes(CHAIN_ID, pc), same.vote.extensionSignature),
  );
  assert.deepEqual(audit.unreserved, []);
});
