import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import { InMemorySignStateStore } from '../../helpers/memory-store.ts';

const CHAIN = 'c';
const next: SignState = {
  height: 3n,
  round: 0,
  step: 2,
  signBytes: new Uint8Array([1, 2]),
  extensionSignBytes: new Uint8Array(),
  signature: new Uint8Array(),
};

/** A store holding the state `state init` creates for CHAIN. */
function fresh(): InMemorySignStateStore {
  const store = new InMemorySignStateStore();
  store.setState(CHAIN, freshSignState());
  return store;
}

describe('InMemorySignStateStore', () => {
  it('starts without state, then compare-and-sets', async () => {
    const store = new InMemorySignStateStore();
    assert.equal(await store.load(CHAIN), undefined);
    await assert.rejects(store.reserve(CHAIN, freshSignState(), next), /no state/);
    store.setState(CHAIN, freshSignState());
    assert.deepEqual(await store.load(CHAIN), freshSignState());
    assert.deepEqual(await store.reserve(CHAIN, freshSignState(), next), { ok: true });
    assert.deepEqual(await store.load(CHAIN), next);
    const stale = await store.reserve(CHAIN, freshSignState(), { ...next, height: 4n });
    assert.deepEqual(stale, { ok: false, current: next });
  });

  it('records a signature only for the matching reservation', async () => {
    const store = fresh();
    await store.reserve(CHAIN, freshSignState(), next);
    await store.recordSignature(CHAIN, { ...next, round: 1 }, new Uint8Array([9]));
    await store.recordSignature(CHAIN, { ...next, signBytes: new Uint8Array([7]) }, new Uint8Array([9]));
    assert.equal(store.peek(CHAIN)?.signature.length, 0);
    await store.recordSignature(CHAIN, next, new Uint8Array([9]));
    assert.deepEqual(store.peek(CHAIN)?.signature, new Uint8Array([9]));
    assert.equal(store.history(CHAIN).length, 3);
  });

  it('injects reserve faults in order', async () => {
    const store = fresh();
    store.injectReserveFault('throw');
    store.injectReserveFault('apply-then-throw');
    await assert.rejects(store.reserve(CHAIN, freshSignState(), next), /reserve failed/);
    assert.equal(store.peek(CHAIN)?.height, 0n);
    await assert.rejects(store.reserve(CHAIN, freshSignState(), next), /reply lost/);
    assert.deepEqual(store.peek(CHAIN), next);
    const after = { ...next, height: 5n };
    store.injectReserveFault('apply-then-conflict');
    assert.deepEqual(await store.reserve(CHAIN, next, after), { ok: false, current: after });
    assert.deepEqual(store.peek(CHAIN), after);
    assert.equal(store.reserveCalls, 3);
  });

  it('fails record and load on request, and delays on request', async () => {
    const store = fresh();
    store.failNextRecord();
    await assert.rejects(store.recordSignature(CHAIN, next, new Uint8Array([1])), /record failed/);
    store.failNextLoad();
    await assert.rejects(store.load(CHAIN), /load failed/);
    store.setDelays({ reserve: 1 });
    let settled = false;
    const pending = store.reserve(CHAIN, freshSignState(), next).then(() => {
      settled = true;
    });
    await Promise.resolve();
    assert.equal(settled, false);
    await pending;
    assert.equal(settled, true);
  });

  it('returns copies that callers cannot alter', async () => {
    const store = fresh();
    await store.reserve(CHAIN, freshSignState(), next);
    const loaded = await store.load(CHAIN);
    loaded?.signBytes.fill(0);
    assert.deepEqual(store.peek(CHAIN)?.signBytes, new Uint8Array([1, 2]));
  });
});
