/**
 * `cometkms audit check` run as a real process over logs written by real AuditLog instances of
 * two nodes (with rotation): passes a clean history, finds a planted double sign, reports
 * malformed lines with file:line.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AuditLog, auditLine } from '../../../src/admin/audit.ts';
import type { GuardDecision } from '../../../src/guard/decision.ts';
import { freshCli } from '../../helpers/dist.ts';

const REPO = join(import.meta.dirname, '../../..');
const BIN = freshCli();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cometkms(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const hex = (n: number): string => n.toString(16).padStart(64, '0');

/** A vote decision; the sign bytes hash is a function of (height, step, variant). */
function vote(height: number, step: 2 | 3, outcome: GuardDecision['outcome'], variant = 0): GuardDecision {
  return {
    chainId: 'cosmoshub-4',
    kind: 'vote',
    type: step - 1,
    height: BigInt(height),
    round: 0,
    step,
    outcome,
    signBytesSha256: hex(height * 10 + step + variant * 1_000_000),
    latencyMs: 2,
    hsmMs: 0.3,
  };
}

let dir: string;
/** every file of the clean two-node history */
let cleanFiles: string[];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-audit-cli-'));
  // kms-1 leads for heights 1..60, then kms-2 takes over (re-signing kms-1's last HRS with the
  // same bytes) up to 100. Small files so both logs rotate.
  const one = await AuditLog.open({
    path: join(dir, 'kms-1.log'),
    nodeId: 'kms-1',
    maxBytes: 4096,
    keep: 20,
  });
  const two = await AuditLog.open({
    path: join(dir, 'kms-2.log'),
    nodeId: 'kms-2',
    maxBytes: 4096,
    keep: 20,
  });
  for (let h = 1; h <= 60; h++) {
    one.record(vote(h, 2, 'signed'));
    one.record(vote(h, 3, 'signed'));
    if (h % 10 === 0) one.record(vote(h, 3, 'timestamp_only'));
    if (h % 5 === 0) await one.flush();
  }
  two.record(vote(60, 3, 'resigned'));
  for (let h = 61; h <= 100; h++) {
    two.record(vote(h, 2, 'signed'));
    two.record(vote(h, 3, 'signed'));
    if (h % 5 === 0) await two.flush();
  }
  await one.close();
  await two.close();
  cleanFiles = (await readdir(dir)).map((f) => join(dir, f));
  assert.ok(cleanFiles.length > 4, `logs rotated: ${cleanFiles.join(', ')}`);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('cometkms audit check', () => {
  test('a clean two-node history (rotated files included) passes with a summary', async () => {
    const r = await cometkms('audit', 'check', ...cleanFiles);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /from node\(s\) kms-1, kms-2/);
    assert.match(r.stdout, /signed HRS: 200; highest signed height: cosmoshub-4 100/);
    assert.match(r.stdout, /timestamp_only 6/);
    assert.match(r.stdout, /OK: no HRS was signed over different bytes/);
  });

  test('a planted double sign is found, exit 1, with both sign bytes and where they were signed', async () => {
    const planted = join(dir, 'kms-3.log');
    await appendFile(planted, `${auditLine('kms-3', vote(42, 3, 'signed', 1), Date.UTC(2025, 5, 1))}\n`);
    const r = await cometkms('audit', 'check', ...cleanFiles, planted);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /CONFLICT chain cosmoshub-4 height 42 round 0 step 3:/);
    assert.match(r.stdout, new RegExp(`${vote(42, 3, 'signed').signBytesSha256} signed by kms-1 `));
    assert.match(
      r.stdout,
      new RegExp(
        `${vote(42, 3, 'signed', 1).signBytesSha256} signed by kms-3 at 2025-06-01T00:00:00.000Z \\(${planted}:1\\)`,
      ),
    );
    assert.match(r.stdout, /DOUBLE SIGN: 1 HRS signed over different bytes/);
    await rm(planted);
  });

  test('malformed lines are reported with file:line and exit 2', async () => {
    const bad = join(dir, 'bad.log');
    await appendFile(bad, `${auditLine('kms-3', vote(101, 2, 'signed'), 0)}\n{"truncated":\n`);
    const r = await cometkms('audit', 'check', ...cleanFiles, bad);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`malformed: ${bad}:2: not JSON`));
    await rm(bad);
  });

  test('a missing file exits 2 with a clear message; no file is a usage error', async () => {
    let r = await cometkms('audit', 'check', join(dir, 'nope.log'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /audit check: .*nope\.log/);
    r = await cometkms('audit', 'check');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /missing required argument/);
  });
});
