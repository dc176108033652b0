/**
 * The chaos harness's etcd faults must leave the cluster whole once healed, or a later round
 * fails for the harness's sake (issue 12: a member wiped right after another one restarted was
 * refused re-adding as "etcdserver: unhealthy cluster", stayed out of the membership, and the
 * next quorum loss could never heal). Real etcd members on 127.0.0.1; partitions between them
 * go through the bed's per-pair proxies.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { EtcdBed } from './harness/bed/etcd-bed.ts';

describe('chaos harness: etcd bed heals whole', () => {
  let dir: string;
  let etcd: EtcdBed;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cometkms-etcd-bed-'));
    etcd = await EtcdBed.start(join(dir, 'etcd'), 3);
  });

  after(async () => {
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('wipes and re-adds a member right after another member restarted', async () => {
    // m2 restarted: for 5 s the others refuse membership changes (strict reconfig check).
    await etcd.kill(2);
    await etcd.restart(2);
    await etcd.wipeMember(0);
    assert.deepEqual(await etcd.untilWhole(30_000), []);
  });

  it('cuts a member from the others through the pair proxies, and heals whole', async () => {
    const leader = await etcd.raftLeader();
    assert.ok(leader >= 0);
    const others = [0, 1, 2].filter((i) => i !== leader);
    for (const b of others) for (const p of etcd.pairProxies(leader, b)) p.mode = { kind: 'blocked' };
    // The two others elect a leader of their own; the cut one cannot serve a linearizable read.
    const deadline = Date.now() + 10_000;
    let now = await etcd.raftLeader(1_000);
    while ((now === leader || now < 0) && Date.now() < deadline) now = await etcd.raftLeader(1_000);
    assert.ok(others.includes(now), `a new Raft leader among m${others.join(', m')} (got ${now})`);
    // The new leader serves linearizable reads only once its term has a committed entry: wait
    // (bounded) until the cut member is the only one that cannot.
    const cutOnly = [`m${leader} not healthy`];
    let problems = await etcd.untilWhole(0);
    for (const until = Date.now() + 10_000; !isDeepStrictEqual(problems, cutOnly) && Date.now() < until; ) {
      await sleep(200);
      problems = await etcd.untilWhole(0);
    }
    assert.deepEqual(problems, cutOnly);
    for (const b of others) for (const p of etcd.pairProxies(leader, b)) p.heal();
    assert.deepEqual(await etcd.untilWhole(30_000), []);
  });

  it('reports a member that is down, and is whole again after a quorum loss healed', async () => {
    await Promise.all([etcd.kill(0), etcd.kill(1)]);
    assert.deepEqual(await etcd.untilWhole(0), ['m0 not running', 'm1 not running']);
    await etcd.restart(0, 1);
    assert.deepEqual(await etcd.untilWhole(30_000), []);
  });
});
