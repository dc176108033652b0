import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { PrivvalMessage } from '../../../src/cometbft/types.ts';
import { ChainGuard } from '../../../src/guard/chain-guard.ts';
import { freshSignState } from '../../../src/store/types.ts';
import {
  CHAIN_ID,
  freshStore,
  makeGuard,
  replyVote,
  SEED,
  vote,
  voteRequest,
} from '../../helpers/guard-fixtures.ts';
import { InMemorySigner } from '../../helpers/memory-signer.ts';
import { InMemorySignStateStore } from '../../helpers/memory-store.ts';

describe('ChainGuard requests other than signing', () => {
  it('returns the signer public key for its chain', async () => {
    const fx = await makeGuard();
    const reply = await fx.guard.handle({ kind: 'pubKeyRequest', chainId: CHAIN_ID });
    assert.deepEqual(reply, { kind: 'pubKeyResponse', pubKey: fx.signer.pubKey });
    assert.equal(fx.decisions.at(-1)?.outcome, 'served');
    assert.equal(fx.decisions.at(-1)?.kind, 'pubkey');
  });

  for (const [protocol, text] of [
    ['v0.34', 'unable to provide pubkey'],
    ['v0.37', 'unable to provide pubkey'],
    ['v0.38', 'unable to provide pubkey'],
    ['v1.0', 'unable to provide pubkey type and bytes'],
  ] as const) {
    it(`${protocol}: refuses the public key for another chain`, async () => {
      const fx = await makeGuard({ protocol });
      const reply = await fx.guard.handle({ kind: 'pubKeyRequest', chainId: 'other-chain' });
      assert.deepEqual(reply, {
        kind: 'pubKeyResponse',
        error: { code: 0, description: `${text}: chain id mismatch: got other-chain, want ${CHAIN_ID}` },
      });
      assert.equal(fx.decisions.at(-1)?.outcome, 'refused');
    });
  }

  it('refuses SignBytes and never calls the signer', async () => {
    const fx = await makeGuard({ protocol: 'v1.0' });
    const reply = await fx.guard.handle({ kind: 'signBytesRequest', value: new Uint8Array([1, 2, 3]) });
    assert.deepEqual(reply, {
      kind: 'signBytesResponse',
      signature: new Uint8Array(),
      error: {
        code: 0,
        description: 'unable to sign bytes: CometKMS does not sign arbitrary bytes with a validator key',
      },
    });
    assert.equal(fx.signer.signed.length, 0);
    assert.equal(fx.decisions.at(-1)?.kind, 'sign_bytes');
  });

  it('answers a ping with a PingResponse', async () => {
    const fx = await makeGuard();
    assert.deepEqual(await fx.guard.handle({ kind: 'pingRequest' }), { kind: 'pingResponse' });
  });

  const unknown: PrivvalMessage[] = [
    { kind: 'empty' },
    { kind: 'pingResponse' },
    { kind: 'pubKeyResponse' },
    { kind: 'signBytesResponse', signature: new Uint8Array() },
  ];
  for (const request of unknown) {
    it(`answers ${request.kind} with an empty Message`, async () => {
      const fx = await makeGuard();
      assert.deepEqual(await fx.guard.handle(request), { kind: 'empty' });
    });
  }

  it('reports a decision with HRS, sign bytes digest and HSM time', async () => {
    let clock = 0;
    const fx = await makeGuard({ now: () => (clock += 5) });
    await fx.guard.handle(voteRequest(vote({ type: 2, height: 12n, round: 3 })));
    const d = fx.decisions.at(-1);
    assert.ok(d !== undefined);
    assert.equal(d.chainId, CHAIN_ID);
    assert.equal(d.kind, 'vote');
    assert.equal(d.type, 2);
    assert.equal(d.height, 12n);
    assert.equal(d.round, 3);
    assert.equal(d.step, 3);
    assert.equal(d.outcome, 'signed');
    assert.match(d.signBytesSha256 ?? '', /^[0-9a-f]{64}$/);
    assert.ok(d.latencyMs > 0);
    assert.ok((d.hsmMs ?? 0) > 0);
  });

  it('reports each stage of a signing request once, in path order, timed by its clock', async () => {
    let clock = 0;
    const seen: Array<[string, number]> = [];
    const fx = await makeGuard({
      now: () => (clock += 1),
      stages: { observe: (stage, ms) => seen.push([stage, ms]) },
    });
    // a v0.38 non-nil precommit: the vote and its extension are both signed and verified (the
    // first verification overlaps the second signature, so those four may come in either order)
    await fx.guard.handle(voteRequest(vote({ type: 2, height: 12n })));
    const order = seen.map(([stage]) => stage);
    assert.deepEqual(order.slice(0, 3), ['queue', 'decide', 'reserve']);
    assert.deepEqual(order.slice(3, 7).sort(), ['hsm', 'hsm', 'verify', 'verify']);
    assert.deepEqual(order.slice(7), ['seal', 'record', 'report']);
    for (const [stage, ms] of seen) assert.ok(ms > 0, `${stage} took clock time`);
    seen.length = 0;
    await fx.guard.handle({ kind: 'pubKeyRequest', chainId: CHAIN_ID });
    assert.deepEqual(seen, [], 'only signing requests are staged');
  });

  it('a refusal names its HRS (and its code) in the decision too', async () => {
    const fx = await makeGuard();
    await fx.guard.handle(voteRequest(vote({ type: 2, height: 7n, round: 1 })));
    await fx.guard.handle(voteRequest(vote({ type: 1, height: 6n, round: 4 })));
    const d = fx.decisions.at(-1);
    assert.deepEqual(
      [d?.outcome, d?.code, d?.height, d?.round, d?.step],
      ['refused', 'height_regression', 6n, 4, 2],
    );
  });

  it('is not disturbed by an observer that throws', async () => {
    const guard = new ChainGuard({
      chainId: CHAIN_ID,
      protocol: 'v0.38',
      signer: InMemorySigner.ed25519(SEED),
      store: freshStore(),
      maxHeightJump: 100_000,
      onDecision: () => {
        throw new Error('observer failed');
      },
    });
    await guard.init();
    const reply = await guard.handle(voteRequest(vote()));
    assert.equal(reply.kind, 'signedVoteResponse');
    assert.equal(reply.kind === 'signedVoteResponse' && reply.vote.signature.length, 64);
  });

  it('lastState reports the reserved and recorded state as a copy', async () => {
    const fx = await makeGuard();
    assert.deepEqual(fx.guard.lastState(), freshSignState());
    await fx.guard.handle(voteRequest(vote()));
    const s = fx.guard.lastState();
    assert.ok(s !== undefined);
    assert.equal(s.height, 10n);
    assert.equal(s.round, 0);
    assert.equal(s.step, 2);
    assert.deepEqual(s.signBytes, voteSignBytes(CHAIN_ID, vote()));
    assert.equal(s.signature.length, 64);
    s.signBytes.fill(0);
    assert.deepEqual(fx.guard.lastState()?.signBytes, voteSignBytes(CHAIN_ID, vote()));
  });

  it('init fails when the store cannot be read', async () => {
    const store = freshStore();
    store.failNextLoad();
    const guard = new ChainGuard({
      chainId: CHAIN_ID,
      protocol: 'v0.38',
      signer: InMemorySigner.ed25519(SEED),
      store,
      maxHeightJump: 100_000,
    });
    await assert.rejects(guard.init(), /load failed/);
  });

  it('a chain without state is never signed as if nothing was: retry and alarm until a state exists', async () => {
    const store = new InMemorySignStateStore();
    const alarms: Array<string | undefined> = [];
    const fx = await makeGuard({ store, onAlarm: (a) => alarms.push(a?.code) });
    assert.equal(fx.guard.alarm()?.code, 'state_missing');
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    }
    assert.equal(fx.signer.signed.length, 0);
    assert.deepEqual(
      fx.decisions.map((d) => [d.outcome, d.code]),
      Array(3).fill(['retry', 'state_missing']),
    );
    assert.equal(fx.guard.lastState(), undefined);
    // `cometkms state init` creates it: the next request reads it and signs.
    store.setState(CHAIN_ID, freshSignState());
    assert.equal(replyVote(await fx.guard.handle(voteRequest(vote()))).error, undefined);
    assert.equal(fx.guard.alarm(), undefined);
    assert.deepEqual(alarms, ['state_missing', undefined]);
  });
});
