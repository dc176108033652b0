import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { firstArrivalOf, signedSince } from '../../../src/cli/demo/failover.ts';
import { checkDemoOptions, type DemoOptions } from '../../../src/cli/demo/options.ts';
import { chooseMode } from '../../../src/cli/demo/run.ts';
import { WatchedSignRecord } from '../../../src/cli/demo/sign-watch.ts';
import { verdict } from '../../../src/cli/demo/summary.ts';
import { LiveView, type Snapshot, snapshotLine } from '../../../src/cli/demo/view.ts';

const base: DemoOptions = { durationMs: 30_000, nodes: 3, blockTimeMs: 1000, keep: false, json: false };

describe('demo options', () => {
  it('accepts the defaults and single-node mode', () => {
    assert.deepEqual(checkDemoOptions(base), base);
    assert.equal(checkDemoOptions({ ...base, nodes: 1 }).nodes, 1);
  });
  it('rejects node counts, block times and durations that make no demo', () => {
    assert.throws(() => checkDemoOptions({ ...base, nodes: 0 }), /--nodes must be 1 to 5/);
    assert.throws(() => checkDemoOptions({ ...base, nodes: 6 }), /--nodes must be 1 to 5/);
    assert.throws(
      () => checkDemoOptions({ ...base, blockTimeMs: 50 }),
      /--block-time must be at least 100ms/,
    );
    assert.throws(() => checkDemoOptions({ ...base, durationMs: 4_000 }), /--duration must be at least 5s/);
    assert.throws(
      () => checkDemoOptions({ ...base, durationMs: 8_000, blockTimeMs: 2_000 }),
      /at least 5 block times/,
    );
  });
});

describe('demo mode', () => {
  const tools = { etcd: '/usr/bin/etcd', openssl: '/usr/bin/openssl' };
  it('runs a cluster when etcd and openssl are there', () => {
    assert.deepEqual(chooseMode(3, tools), { mode: 'cluster' });
  });
  it('falls back to one node without etcd, and says so', () => {
    const m = chooseMode(3, { ...tools, etcd: undefined });
    assert.equal(m.mode, 'single');
    assert.match(m.note ?? '', /etcd is not installed.*single-node mode/);
  });
  it('falls back to one node without openssl, and says so', () => {
    assert.match(chooseMode(3, { ...tools, openssl: undefined }).note ?? '', /openssl is not installed/);
  });
  it('--nodes 1 is single-node mode without a note', () => {
    assert.deepEqual(chooseMode(1, tools), { mode: 'single' });
  });
});

describe('demo verdict', () => {
  const good = {
    doubleSigns: 0,
    invalidSignatures: 0,
    failoverMs: 900,
    signedAfterKill: 20,
    heightsAfterKill: 8,
  };
  it('passes a clean run', () => {
    assert.deepEqual(verdict(good), []);
  });
  it('fails on a double sign, an invalid signature, or no signing after the kill', () => {
    assert.match(verdict({ ...good, doubleSigns: 1 }).join(), /1 double sign/);
    assert.match(verdict({ ...good, invalidSignatures: 2 }).join(), /2 invalid signature/);
    assert.match(
      verdict({ ...good, failoverMs: null, signedAfterKill: 0 }).join(),
      /no signature arrived after the leader was killed/,
    );
    assert.match(verdict({ ...good, heightsAfterKill: 0 }).join(), /no height was completed/);
  });
});

describe('WatchedSignRecord', () => {
  const entry = (b: number) => ({
    signBytes: new Uint8Array([b]),
    signature: new Uint8Array([b]),
    source: 's',
  });
  it('resolves with the first new signature after a point in time, ignoring repeats', async () => {
    const r = new WatchedSignRecord();
    const hrs = { height: 1n, round: 0, step: 2 };
    r.record('c', hrs, entry(1));
    const mark = performance.now();
    const next = r.nextNewSignature(mark, 5_000, new AbortController().signal);
    r.record('c', hrs, entry(1)); // identical retry: not new
    assert.equal(r.countAfter(mark), 0);
    r.record('c', { ...hrs, step: 3 }, entry(2));
    const at = await next;
    assert.ok(at !== undefined && at > mark);
    assert.equal(r.countAfter(mark), 1);
  });
  it('gives up with undefined on abort', async () => {
    const r = new WatchedSignRecord();
    const ac = new AbortController();
    const next = r.nextNewSignature(0, 60_000, ac.signal);
    ac.abort();
    assert.equal(await next, undefined);
  });
});

describe('demo live view', () => {
  const status = (role: 'leader' | 'follower', height: number): NodeStatus => ({
    node_id: 'x',
    version: '0.1.0',
    mode: 'cluster',
    role,
    leader_id: 'kms-1',
    term: 1,
    uptime_s: 1,
    hsm: { token_label: 't', reachable: true, signing_session: role === 'leader' },
    chains: [
      {
        chain_id: 'c',
        key_type: 'ed25519',
        protocol: 'v0.38',
        address: '0123456789ABCDEF0123456789ABCDEF01234567',
        height,
        round: 0,
        step: 3,
        last_signed_at: null,
        state_alarm: null,
        refused: 0,
        double_sign_refused: 0,
        errors: 0,
        validators: [{ addr: 'tcp://127.0.0.1:1', connected: true, connects: 1 }],
      },
    ],
  });
  const snap: Snapshot = {
    elapsedMs: 4_200,
    heights: 4,
    signed: 11,
    p50Ms: 3.14,
    nodes: [
      { id: 'kms-1', pid: 10, state: 'up', status: status('leader', 5) },
      { id: 'kms-2', pid: 11, state: 'killed', status: status('follower', 3) },
      { id: 'kms-3', pid: 12, state: 'down', status: undefined },
    ],
  };
  it('one plain line per tick without a terminal', () => {
    assert.equal(
      snapshotLine(snap),
      't+4s  heights 4  signatures 11  p50 3.1 ms | kms-1 leader 5/0/precommit | kms-2 KILLED 3/0/precommit | kms-3 down -',
    );
    const out = new PassThrough();
    const view = new LiveView(out, false);
    view.update(snap);
    view.event('» event');
    assert.equal(out.read().toString(), `${snapshotLine(snap)}\n» event\n`);
  });
  it('redraws the block in place on a terminal, events above it', () => {
    const out = new PassThrough();
    const view = new LiveView(out, true);
    view.update(snap);
    const first = out.read().toString() as string;
    assert.equal(first.split('\n').length - 1, 4, 'header + 3 nodes');
    assert.ok(!first.includes('\x1b['), 'nothing to erase the first time');
    view.update(snap);
    assert.ok((out.read().toString() as string).startsWith('\x1b[4A\x1b[J'), 'moves up 4 lines and erases');
    view.event('» killed');
    const ev = out.read().toString() as string;
    assert.ok(ev.startsWith('\x1b[4A\x1b[J» killed\n'));
    assert.equal(ev.split('\n').length - 1, 5, 'the event, then the block again');
  });
});

describe('failover by the new leader', () => {
  it("ends at the first arrival the new leader's audit log signed after the kill", async () => {
    const home = await mkdtemp(join(tmpdir(), 'cometkms-failover-'));
    try {
      const hash = (b: number) =>
        createHash('sha256')
          .update(new Uint8Array([b]))
          .digest('hex');
      const kill = Date.parse('2026-01-01T00:00:10.000Z');
      const line = (node: string, outcome: string, b: number, ts: string) =>
        JSON.stringify({
          ts,
          node,
          chain: 'c',
          kind: 'vote',
          outcome,
          sign_bytes_sha256: hash(b),
          latency_ms: 1,
        });
      await mkdir(join(home, 'audit'));
      await writeFile(
        join(home, 'audit', 'audit.jsonl'),
        [
          line('kms-2', 'signed', 1, '2026-01-01T00:00:09.000Z'), // before the kill
          line('kms-1', 'signed', 2, '2026-01-01T00:00:10.500Z'), // another node
          line('kms-2', 'refused', 3, '2026-01-01T00:00:10.600Z'), // not a signature
          line('kms-2', 'signed', 4, '2026-01-01T00:00:11.000Z'),
          '{"torn',
        ].join('\n'),
      );
      const signed = await signedSince(home, 'kms-2', kill);
      assert.deepEqual([...signed], [hash(4)]);
      // The old leader's in-flight signature (bytes 2) arrives first and is skipped.
      const arrivals = [
        { at: 5, signBytes: new Uint8Array([2]) },
        { at: 900, signBytes: new Uint8Array([4]) },
      ];
      assert.equal(firstArrivalOf(arrivals, signed), 900);
      assert.equal(firstArrivalOf(arrivals, await signedSince(join(home, 'none'), 'kms-2', kill)), undefined);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
