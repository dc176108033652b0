/** The audit log: line format, batching and fsync, rotation, the bounded buffer. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { AuditLog, auditLine } from '../../../src/admin/audit.ts';
import type { GuardDecision } from '../../../src/guard/decision.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-audit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const NEVER = 3_600_000;
const SHA = 'ab'.repeat(32);

function vote(height: number | bigint, over: Partial<GuardDecision> = {}): GuardDecision {
  return {
    chainId: 'chain-1',
    kind: 'vote',
    type: 2,
    height: BigInt(height),
    round: 0,
    step: 3,
    outcome: 'signed',
    signBytesSha256: SHA,
    latencyMs: 1.23456,
    hsmMs: 0.2,
    ...over,
  };
}

async function lines(path: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Waits (bounded) until `check` holds. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('audit line', () => {
  test('has the documented fields, height as a string, in a fixed order', () => {
    const line = auditLine('kms-1', vote(9_007_199_254_740_993n, { reason: 'why' }), Date.UTC(2025, 0, 2));
    assert.equal(
      line,
      '{"ts":"2025-01-02T00:00:00.000Z","node":"kms-1","chain":"chain-1","kind":"vote","type":2,' +
        '"height":"9007199254740993","round":0,"step":3,"outcome":"signed","reason":"why",' +
        `"sign_bytes_sha256":"${SHA}","latency_ms":1.235,"hsm_ms":0.2}`,
    );
  });

  test('leaves out what the decision did not have', () => {
    const line = auditLine('kms-1', { chainId: 'c', kind: 'pubkey', outcome: 'served', latencyMs: 0.5 }, 0);
    assert.deepEqual(JSON.parse(line), {
      ts: '1970-01-01T00:00:00.000Z',
      node: 'kms-1',
      chain: 'c',
      kind: 'pubkey',
      outcome: 'served',
      latency_ms: 0.5,
    });
  });
});

describe('AuditLog', () => {
  test('record() does no I/O; close() writes and fsyncs everything', async () => {
    const path = join(dir, 'audit.log');
    const log = await AuditLog.open({ path, nodeId: 'kms-1', flushIntervalMs: NEVER });
    for (let h = 1; h <= 3; h++) log.record(vote(h));
    assert.equal((await stat(path)).size, 0, 'nothing written synchronously');
    await log.close();
    const got = await lines(path);
    assert.deepEqual(
      got.map((l) => l['height']),
      ['1', '2', '3'],
    );
    assert.equal(got[0]?.['node'], 'kms-1');
    assert.deepEqual(log.stats(), { written: 3, fsyncs: 1, dropped: 0, rotations: 0 });
  });

  test('a full batch (flushLines) is written and fsynced at once, in one write', async () => {
    const path = join(dir, 'audit.log');
    const log = await AuditLog.open({ path, nodeId: 'n', flushIntervalMs: NEVER, flushLines: 4 });
    try {
      for (let h = 1; h <= 5; h++) log.record(vote(h));
      await until(async () => log.stats().fsyncs === 1, 'the first batch');
      // Everything queued when the batch started went out together: one write, one fsync.
      assert.equal((await lines(path)).length, 5);
      assert.deepEqual(log.stats(), { written: 5, fsyncs: 1, dropped: 0, rotations: 0 });
      // Below flushLines, a line waits for the interval (here: never) or close.
      log.record(vote(6));
      for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
      assert.equal(log.stats().fsyncs, 1);
    } finally {
      await log.close();
    }
    assert.equal((await lines(path)).length, 6);
    assert.deepEqual(log.stats(), { written: 6, fsyncs: 2, dropped: 0, rotations: 0 });
  });

  test('a partial batch is flushed after flushIntervalMs', async () => {
    const path = join(dir, 'audit.log');
    const log = await AuditLog.open({ path, nodeId: 'n', flushIntervalMs: 20, flushLines: 1000 });
    log.record(vote(1));
    log.record(vote(2));
    await until(async () => log.stats().fsyncs === 1, 'the interval flush');
    assert.equal((await lines(path)).length, 2);
    await log.close();
  });

  test('appends to an existing file', async () => {
    const path = join(dir, 'audit.log');
    let log = await AuditLog.open({ path, nodeId: 'n' });
    log.record(vote(1));
    await log.close();
    log = await AuditLog.open({ path, nodeId: 'n' });
    log.record(vote(2));
    await log.close();
    assert.deepEqual(
      (await lines(path)).map((l) => l['height']),
      ['1', '2'],
    );
  });

  test('rotates by size into path.1 … path.keep, dropping the oldest; no line is split', async () => {
    const path = join(dir, 'audit.log');
    const lineBytes = auditLine('n', vote(100), Date.now()).length + 1;
    const log = await AuditLog.open({
      path,
      nodeId: 'n',
      maxBytes: lineBytes * 5,
      keep: 2,
      flushIntervalMs: NEVER,
    });
    for (let h = 100; h < 125; h++) {
      log.record(vote(h));
      if (h % 2 === 0) await log.flush();
    }
    await log.close();
    const files = (await readdir(dir)).sort();
    assert.deepEqual(files, ['audit.log', 'audit.log.1', 'audit.log.2']);
    for (const f of files)
      assert.ok((await stat(join(dir, f))).size <= lineBytes * 5, `${f} within maxBytes`);
    // Newest last: .2 then .1 then the live file hold consecutive heights ending at 124.
    const all = [...(await lines(`${path}.2`)), ...(await lines(`${path}.1`)), ...(await lines(path))].map(
      (l) => Number(l['height']),
    );
    assert.equal(all.at(-1), 124);
    for (let i = 1; i < all.length; i++) assert.equal(all[i], (all[i - 1] ?? 0) + 1);
    assert.ok(log.stats().rotations >= 3, 'older files were dropped');
  });

  test('a burst beyond the buffer bound is dropped, counted and marked in the log', async () => {
    const path = join(dir, 'audit.log');
    const warnings: string[] = [];
    const logger = {
      warn: (_o: unknown, msg: string) => warnings.push(msg),
    } as unknown as import('pino').Logger;
    const log = await AuditLog.open({
      path,
      nodeId: 'kms-9',
      flushIntervalMs: NEVER,
      flushLines: 4,
      maxPendingLines: 8,
      logger,
    });
    // All in one synchronous burst: no flush can run before it ends, so only 8 fit.
    for (let h = 1; h <= 20; h++) log.record(vote(h));
    assert.equal(log.stats().dropped, 12);
    assert.equal(warnings.length, 1, 'one warning per episode, not one per record');
    await log.close();
    const got = await lines(path);
    assert.deepEqual(
      got.slice(0, 8).map((l) => l['height']),
      ['1', '2', '3', '4', '5', '6', '7', '8'],
    );
    assert.deepEqual(got[8], { ts: got[8]?.['ts'], node: 'kms-9', event: 'dropped', count: 12 });
    assert.equal(got.length, 9);
  });

  test('a failed write keeps its batch and is retried at the interval; nothing lost or split', async () => {
    const path = join(dir, 'audit.log');
    const warnings: string[] = [];
    const logger = {
      warn: (_o: unknown, msg: string) => warnings.push(msg),
    } as unknown as import('pino').Logger;
    const lineBytes = auditLine('n', vote(1), Date.now()).length + 1;
    const log = await AuditLog.open({
      path,
      nodeId: 'n',
      maxBytes: lineBytes + 10,
      keep: 1,
      flushIntervalMs: 10,
      logger,
    });
    try {
      log.record(vote(1));
      await log.flush();
      // The next batch needs a rotation, and a non-empty directory in the way makes it fail.
      await mkdir(`${path}.1`);
      await writeFile(join(`${path}.1`, 'blocker'), '');
      log.record(vote(2));
      await assert.rejects(log.flush());
      assert.deepEqual(warnings, ['audit log write failed; retrying every flush interval']);
      assert.equal(log.stats().written, 1);
      await rm(`${path}.1`, { recursive: true });
      await until(async () => log.stats().written === 2, 'the retried batch');
    } finally {
      await log.close();
    }
    assert.deepEqual(warnings.at(-1), 'audit log writable again');
    assert.deepEqual(
      (await lines(`${path}.1`)).map((l) => l['height']),
      ['1'],
    );
    assert.deepEqual(
      (await lines(path)).map((l) => l['height']),
      ['2'],
    );
    assert.equal(log.stats().dropped, 0);
  });

  test('records after close are dropped and counted, not written', async () => {
    const path = join(dir, 'audit.log');
    const log = await AuditLog.open({ path, nodeId: 'n' });
    await log.close();
    log.record(vote(1));
    assert.equal(log.stats().dropped, 1);
    assert.equal((await stat(path)).size, 0);
  });

  test('open fails clearly on an unusable path or keep', async () => {
    await assert.rejects(AuditLog.open({ path: join(dir, 'missing', 'audit.log'), nodeId: 'n' }), /ENOENT/);
    await assert.rejects(
      AuditLog.open({ path: join(dir, 'a.log'), nodeId: 'n', keep: 0 }),
      /keep must be ≥ 1/,
    );
  });
});
