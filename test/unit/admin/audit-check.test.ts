/** `checkAuditFiles`: which records count as signatures, conflicts across nodes, malformed input. */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { auditLine } from '../../../src/admin/audit.ts';
import { auditExitCode, checkAuditFiles, formatAuditReport } from '../../../src/admin/audit-check.ts';
import type { GuardDecision } from '../../../src/guard/decision.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-audit-check-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (c: string): string => c.repeat(64);

function d(
  height: number,
  outcome: GuardDecision['outcome'],
  bytes: string,
  over: Partial<GuardDecision> = {},
) {
  return {
    chainId: 'chain-1',
    kind: 'vote',
    type: 1,
    height: BigInt(height),
    round: 0,
    step: 2,
    outcome,
    signBytesSha256: sha(bytes),
    latencyMs: 1,
    ...over,
  } satisfies GuardDecision;
}

async function file(
  name: string,
  node: string,
  decisions: GuardDecision[],
  extra: string[] = [],
): Promise<string> {
  const path = join(dir, name);
  const lines = decisions.map((x) => auditLine(node, x, Date.UTC(2025, 0, 1)));
  await writeFile(path, `${[...lines, ...extra].join('\n')}\n`);
  return path;
}

describe('checkAuditFiles', () => {
  test('a clean cluster history: retries, resigns across nodes and timestamp-only are no conflict', async () => {
    const a = await file('a.log', 'kms-1', [
      d(1, 'signed', 'a'),
      d(1, 'resigned', 'a'),
      // timestamp_only names the reserved bytes, whose signature went out again.
      d(1, 'timestamp_only', 'a'),
      d(1, 'refused', 'c', { reason: 'error signing vote: conflicting data' }),
      d(2, 'signed', 'd'),
    ]);
    const b = await file('b.log', 'kms-2', [
      d(2, 'resigned', 'd'),
      d(3, 'retry', 'e', { reason: 'reserve failed' }),
      d(3, 'signed', 'e'),
      { chainId: 'chain-1', kind: 'pubkey', outcome: 'served', latencyMs: 0.1 },
    ]);
    const report = await checkAuditFiles([a, b]);
    assert.deepEqual(report.conflicts, []);
    assert.deepEqual(report.malformed, []);
    assert.equal(auditExitCode(report), 0);
    assert.equal(report.signedHrs, 3);
    assert.deepEqual(report.highestHeight, { 'chain-1': '3' });
    assert.deepEqual(report.nodes, ['kms-1', 'kms-2']);
    assert.deepEqual(report.outcomes, {
      signed: 3,
      resigned: 2,
      timestamp_only: 1,
      refused: 1,
      retry: 1,
      served: 1,
    });
    assert.match(formatAuditReport(report), /OK: no HRS was signed over different bytes/);
  });

  test('two nodes signing different bytes at one HRS is a conflict, with both places', async () => {
    const a = await file('a.log', 'kms-1', [d(5, 'signed', 'a'), d(6, 'signed', 'f')]);
    const b = await file('b.log.1', 'kms-2', [d(4, 'signed', 'c'), d(5, 'signed', 'b')]);
    const report = await checkAuditFiles([a, b]);
    assert.equal(auditExitCode(report), 1);
    assert.deepEqual(report.conflicts, [
      {
        chain: 'chain-1',
        height: '5',
        round: 0,
        step: 2,
        signatures: [
          {
            sign_bytes_sha256: sha('a'),
            first: { file: a, line: 1, node: 'kms-1', ts: '2025-01-01T00:00:00.000Z' },
          },
          {
            sign_bytes_sha256: sha('b'),
            first: { file: b, line: 2, node: 'kms-2', ts: '2025-01-01T00:00:00.000Z' },
          },
        ],
      },
    ]);
    const text = formatAuditReport(report);
    assert.match(text, /CONFLICT chain chain-1 height 5 round 0 step 2/);
    assert.match(text, new RegExp(`${sha('b')} signed by kms-2 .*b\\.log\\.1:2`));
  });

  test('a resign over other bytes is a conflict too; the same HRS on another chain or step is not', async () => {
    const a = await file('a.log', 'kms-1', [
      d(7, 'signed', 'a'),
      d(7, 'signed', 'b', { chainId: 'chain-2' }),
      d(7, 'signed', 'c', { step: 3, type: 2 }),
      d(7, 'resigned', 'e'),
    ]);
    const report = await checkAuditFiles([a]);
    assert.deepEqual(report.malformed, []);
    assert.equal(report.conflicts.length, 1);
    assert.equal(report.conflicts[0]?.chain, 'chain-1');
    assert.equal(report.conflicts[0]?.step, 2);
  });

  test('a timestamp-only answer over other bytes than the signed ones is a conflict', async () => {
    const a = await file('a.log', 'kms-1', [d(8, 'signed', 'a')]);
    const b = await file('b.log', 'kms-2', [d(8, 'timestamp_only', 'b')]);
    const report = await checkAuditFiles([a, b]);
    assert.equal(report.conflicts.length, 1);
    assert.equal(auditExitCode(report), 1);
  });

  test('malformed lines are reported with file:line; a conflict still outranks them', async () => {
    const a = await file(
      'a.log',
      'kms-1',
      [d(1, 'signed', 'a')],
      [
        '{"ts":"t","node":"kms-1","chain":"chain-1","kind":"vote","outcome":"signed","latency_ms":1,"round":0,"step":2}',
        'not json at all',
        '{"ts":"t","node":"kms-1","chain":"c","kind":"vote","outcome":"exploded","latency_ms":1}',
        '{"ts":"t","node":"kms-1","event":"dropped","count":3}',
        '{"ts":"t","node":"kms-1","chain":"chain-1","kind":"vote","type":1,"height":"1',
      ],
    );
    let report = await checkAuditFiles([a]);
    assert.equal(auditExitCode(report), 2);
    assert.deepEqual(
      report.malformed.map((m) => [m.line, m.problem]),
      [
        [2, 'signed record without a valid "height"'],
        [3, 'not JSON'],
        [4, 'unknown "outcome" "exploded"'],
        [6, 'not JSON'],
      ],
    );
    assert.equal(report.droppedRecords, 3);
    const text = formatAuditReport(report);
    assert.match(text, new RegExp(`malformed: ${a}:3: not JSON`));
    assert.match(text, /writers dropped 3 record/);

    const b = await file('b.log', 'kms-2', [d(1, 'signed', 'b')]);
    report = await checkAuditFiles([a, b]);
    assert.equal(auditExitCode(report), 1);
  });

  test('an unreadable file is an error, not a verdict', async () => {
    await assert.rejects(checkAuditFiles([join(dir, 'missing.log')]), /ENOENT/);
  });
});
