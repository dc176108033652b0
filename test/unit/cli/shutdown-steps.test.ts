import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { ShutdownSteps } from '../../../src/cli/runtime/common.ts';

/** Shutdown steps whose log records are collected. */
function capture(): { steps: ShutdownSteps; records: Array<{ level: number; msg: string }> } {
  const records: Array<{ level: number; msg: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      records.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
      done();
    },
  });
  return { steps: new ShutdownSteps(pino({ level: 'debug' }, sink)), records };
}

/** pino writes asynchronously to a Writable: let it flush. */
const flush = () => new Promise((r) => setImmediate(r));

describe('ShutdownSteps', () => {
  it('step: a failure is logged as an error and makes the shutdown unclean; later steps still run', async () => {
    const { steps, records } = capture();
    const ran: string[] = [];
    await steps.step('first', async () => {
      ran.push('first');
      throw new Error('boom');
    });
    await steps.step('second', async () => {
      ran.push('second');
    });
    await flush();
    assert.deepEqual(ran, ['first', 'second']);
    assert.equal(steps.clean, false);
    assert.deepEqual(
      records.map((r) => [r.level, r.msg]),
      [[50, 'shutdown: first failed']],
    );
  });

  it('step: a step that hangs is abandoned at its deadline, named in the log, and makes the shutdown unclean', async () => {
    const { steps, records } = capture();
    let settle: (v: unknown) => void = () => undefined;
    const never = new Promise((_resolve, reject) => {
      settle = reject;
    });
    const ran: string[] = [];
    await steps.step('closing the HSM', () => never, 20);
    await steps.step('closing the audit log', async () => {
      ran.push('audit');
    });
    await flush();
    assert.deepEqual(ran, ['audit']);
    assert.equal(steps.clean, false);
    assert.deepEqual(
      records.map((r) => [r.level, r.msg]),
      [[50, 'shutdown: closing the HSM did not finish within 20 ms; going on without it']],
    );
    // Its late failure is swallowed (an unhandled rejection would crash the process).
    settle(new Error('late'));
    await flush();
    assert.equal(records.length, 1);
  });

  it('bounded: a step that never finishes is abandoned at its deadline, and the shutdown stays clean', async () => {
    const { steps, records } = capture();
    let settle: (v: unknown) => void = () => undefined;
    const never = new Promise((_resolve, reject) => {
      settle = reject;
    });
    await steps.bounded('telling etcd', 20, () => never);
    await flush();
    assert.equal(steps.clean, true);
    assert.equal(records.length, 1);
    assert.equal(records[0]?.level, 40);
    assert.match(
      records[0]?.msg ?? '',
      /^shutdown: telling etcd: etcd did not answer within 20 ms; going on/,
    );
    // Its late failure is swallowed (an unhandled rejection would crash the process).
    settle(new Error('late'));
    await flush();
    assert.equal(records.length, 1);
  });

  it('bounded: a failing step is logged as a warning and leaves the shutdown clean; a quick one is silent', async () => {
    const { steps, records } = capture();
    await steps.bounded('revoking', 1_000, async () => {
      throw new Error('14 UNAVAILABLE');
    });
    await steps.bounded('deleting', 1_000, async () => undefined);
    await flush();
    assert.equal(steps.clean, true);
    assert.deepEqual(
      records.map((r) => [r.level, r.msg]),
      [[40, 'shutdown: revoking failed; going on (its leases expire by themselves)']],
    );
  });
});
