/**
 * `cometkms demo` as a user runs it: a real process that starts real SoftHSM tokens, etcd
 * members and KMS nodes, kills the leader, and must leave nothing behind — after a full run,
 * with --keep, and after Ctrl-C.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DemoSummary } from '../../../src/cli/demo/summary.ts';
import { findExecutable } from '../../../src/cluster/etcd-launcher.ts';
import { freshCli } from '../../helpers/dist.ts';

const BIN = freshCli();
const CLUSTER_AVAILABLE = findExecutable('etcd') !== undefined && findExecutable('openssl') !== undefined;

interface DemoRun {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** resolves once stdout or stderr contains `text` (rejects on exit or after `ms`) */
  waitFor(text: string, ms: number): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `cometkms demo ...args`; SIGKILLed if still running after `limitMs`. */
function startDemo(args: string[], limitMs: number): DemoRun {
  const child = spawn(process.execPath, [BIN, 'demo', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const wakers = new Set<() => void>();
  child.stdout?.setEncoding('utf8').on('data', (c: string) => {
    out += c;
    for (const w of wakers) w();
  });
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    err += c;
    for (const w of wakers) w();
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      for (const w of wakers) w();
      resolve({ code, signal });
    });
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(text, ms) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (out.includes(text) || err.includes(text)) done(() => resolve());
          else if (child.exitCode !== null || child.signalCode !== null)
            done(() => reject(new Error(`demo exited before "${text}": ${err}`)));
        };
        const done = (then: () => void): void => {
          clearTimeout(timer);
          wakers.delete(check);
          then();
        };
        const timer = setTimeout(
          () => done(() => reject(new Error(`no "${text}" within ${ms} ms: ${err}`))),
          ms,
        );
        wakers.add(check);
        check();
      });
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every PID must be gone (exited children of an exited demo are reaped by init: bounded wait). */
async function assertAllGone(pids: number[]): Promise<void> {
  const until = Date.now() + 5_000;
  while (pids.some(alive) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(pids.filter(alive), [], 'processes left behind by the demo');
}

/** The PIDs and working directory the demo announced on stderr. */
function announced(stderr: string): { pids: number[]; dir: string } {
  const pids = [...stderr.matchAll(/\bpids? ((?:\d+ ?)+)/g)].flatMap((m) =>
    (m[1] as string).trim().split(' ').map(Number),
  );
  const dir = /working directory: (\S+)/.exec(stderr)?.[1];
  assert.ok(dir, 'the demo names its working directory');
  return { pids, dir };
}

describe('cometkms demo', () => {
  it(`runs ${CLUSTER_AVAILABLE ? 'a 3-node cluster' : 'a single node (no etcd)'}, fails over, proves no double sign, leaves nothing behind`, {
    timeout: 120_000,
  }, async () => {
    const run = startDemo(['--duration', '20s', '--json'], 110_000);
    const exit = await run.exited;
    assert.equal(exit.code, 0, run.stderr());
    const s = JSON.parse(run.stdout()) as DemoSummary;
    assert.equal(s.ok, true);
    assert.deepEqual(s.reasons, []);
    assert.equal(s.mode, CLUSTER_AVAILABLE ? 'cluster' : 'single');
    assert.equal(s.double_signs, 0);
    assert.equal(s.invalid_signatures, 0);
    assert.equal(typeof s.failover_ms, 'number');
    assert.ok(s.signed_after_kill > 0);
    assert.ok(s.killed_node);
    if (CLUSTER_AVAILABLE) {
      assert.equal(s.node_states.length, 3);
      assert.equal(s.etcd_pids.length, 3);
      assert.notEqual(s.new_leader, s.killed_node, 'another node leads after the kill');
    }
    assert.match(run.stderr(), /double signs: 0\n/);
    assert.match(run.stderr(), /invalid: {6}0\n/);
    assert.match(run.stderr(), /failover: {5}\d+ ms\n/);
    assert.match(run.stderr(), /PASS: no double sign/);
    await assertAllGone([...s.child_pids, ...s.etcd_pids, ...s.node_states.flatMap((n) => n.pids)]);
    assert.equal(existsSync(s.temp_dir), false, 'working directory removed');
  });

  it('single node with --keep: restarts after the kill, keeps the directory without the key file', {
    timeout: 90_000,
  }, async () => {
    const run = startDemo(
      ['--nodes', '1', '--duration', '6s', '--block-time', '500ms', '--keep', '--json'],
      80_000,
    );
    const exit = await run.exited;
    assert.equal(exit.code, 0, run.stderr());
    const s = JSON.parse(run.stdout()) as DemoSummary;
    try {
      assert.equal(s.mode, 'single');
      assert.equal(s.double_signs, 0);
      assert.equal(s.kept, true);
      assert.equal(s.node_states[0]?.pids.length, 2, 'the node ran twice: before and after the crash');
      assert.match(run.stderr(), new RegExp(`kept the working directory .*: ${s.temp_dir}`));
      const entries = await readdir(s.temp_dir);
      assert.ok(entries.includes('kms-1'));
      assert.ok(!entries.includes('priv_validator_key.json'), 'the key file is deleted after the import');
      assert.ok(existsSync(join(s.temp_dir, 'kms-1', 'config.toml')));
      assert.ok(existsSync(join(s.temp_dir, 'kms-1', 'node.log')));
      await assertAllGone([...s.child_pids, ...s.node_states.flatMap((n) => n.pids)]);
    } finally {
      await rm(s.temp_dir, { recursive: true, force: true });
    }
  });

  it('Ctrl-C mid-run stops every process and removes the working directory', {
    timeout: 90_000,
  }, async () => {
    const run = startDemo(['--duration', '2m'], 80_000);
    await run.waitFor('the validator is signing', 60_000);
    run.child.kill('SIGINT');
    const exit = await run.exited;
    assert.equal(exit.code, 130, run.stderr());
    const out = run.stdout();
    assert.match(out, /SIGINT: stopping the demo/);
    assert.doesNotMatch(out, /summary/);
    const { pids, dir } = announced(out);
    assert.ok(pids.length >= (CLUSTER_AVAILABLE ? 6 : 1), `announced pids: ${pids.join(' ')}`);
    await assertAllGone(pids);
    assert.equal(existsSync(dir), false, 'working directory removed');
  });

  it('rejects a duration without a unit with a clear message', { timeout: 30_000 }, async () => {
    const run = startDemo(['--duration', '20'], 25_000);
    const exit = await run.exited;
    assert.notEqual(exit.code, 0);
    assert.match(run.stderr(), /invalid duration "20": use a number and a unit/);
  });
});
