import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AsyncMutex } from '../../../src/guard/mutex.ts';

describe('AsyncMutex', () => {
  it('runs critical sections one at a time, in call order', async () => {
    const mutex = new AsyncMutex();
    const events: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const first = mutex.run(async () => {
      events.push('first start');
      await gate;
      events.push('first end');
      return 1;
    });
    const second = mutex.run(async () => {
      events.push('second');
      return 2;
    });
    await Promise.resolve();
    assert.deepEqual(events, ['first start']);
    release();
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
    assert.deepEqual(events, ['first start', 'first end', 'second']);
  });

  it('a failing section rejects its caller only and releases the lock', async () => {
    const mutex = new AsyncMutex();
    const failed = mutex.run(async () => {
      throw new Error('boom');
    });
    const next = mutex.run(async () => 'ok');
    await assert.rejects(failed, /boom/);
    assert.equal(await next, 'ok');
  });
});
