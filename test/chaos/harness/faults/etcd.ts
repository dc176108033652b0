/**
 * etcd faults: a member or the Raft leader killed or frozen, quorum lost and back, a member
 * wiped and re-added, members cut apart (one member, often the Raft leader, from all the others,
 * or one pair; both ways or one way), and the two that lose state — the whole store wiped, and a
 * restore from an older snapshot — after which the harness does the operator's documented
 * recovery.
 */
import { join } from 'node:path';
import type { EtcdBed } from '../bed/etcd-bed.ts';
import { operatorRecovery } from './common.ts';
import { type FaultContext, type FaultKind, pause } from './types.ts';

function etcdOf(ctx: FaultContext): EtcdBed {
  const e = ctx.bed.etcd;
  if (e === undefined) throw new Error('etcd faults need cluster mode');
  return e;
}

async function target(ctx: FaultContext, raftLeader: boolean): Promise<number> {
  const etcd = etcdOf(ctx);
  if (raftLeader) {
    const i = await etcd.raftLeader();
    if (i >= 0) return i;
  }
  return ctx.rng.int(etcd.size);
}

const memberKind = (name: string, raftLeader: boolean, how: 'kill' | 'stop'): FaultKind => ({
  name,
  modes: ['cluster'],
  layer: 'etcd',
  dwellMs: how === 'stop' ? 2_000 : undefined,
  async inject(ctx) {
    const etcd = etcdOf(ctx);
    const i = await target(ctx, raftLeader);
    if (how === 'kill') await etcd.kill(i);
    else etcd.pause(i);
    return {
      detail: `${how === 'kill' ? 'SIGKILL' : 'SIGSTOP'} etcd m${i}${raftLeader ? ' (Raft leader)' : ''}`,
      heal: async () => (how === 'kill' ? await etcd.restart(i) : etcd.resume(i)),
    };
  },
});

/**
 * Cuts member `a` from member `b` through their two pair proxies: both ways, or one way (what
 * `a` sends to `b` is held, on `a`'s connections to `b` and on `b`'s connections to `a`).
 */
function cutPair(etcd: EtcdBed, a: number, b: number, oneWay: boolean): void {
  const [aToB, bToA] = etcd.pairProxies(a, b);
  aToB!.mode = oneWay ? { kind: 'oneway', held: 'toTarget' } : { kind: 'blocked' };
  bToA!.mode = oneWay ? { kind: 'oneway', held: 'toClient' } : { kind: 'blocked' };
}

const etcdPartition: FaultKind = {
  name: 'etcd-partition',
  modes: ['cluster'],
  layer: 'etcd',
  dwellMs: 2_500,
  async inject(ctx) {
    const etcd = etcdOf(ctx);
    const oneWay = ctx.rng.chance(0.3);
    const a = await target(ctx, ctx.rng.chance(0.5));
    const others = Array.from({ length: etcd.size }, (_, j) => j).filter((j) => j !== a);
    const isolate = ctx.rng.chance(0.6);
    const cut = isolate ? others : [others[ctx.rng.int(others.length)]!];
    for (const b of cut) cutPair(etcd, a, b, oneWay);
    const heal = async (): Promise<void> => {
      for (const b of cut) for (const p of etcd.pairProxies(a, b)) p.heal();
    };
    const how = oneWay ? `one way: m${a}'s messages held` : 'both ways';
    return {
      detail: isolate
        ? `etcd m${a} cut from the other members (${how})`
        : `etcd m${a} ↔ m${cut[0]} cut (${how})`,
      heal,
    };
  },
};

export const etcdFaults: FaultKind[] = [
  etcdPartition,
  memberKind('etcd-kill-member', false, 'kill'),
  memberKind('etcd-kill-raft-leader', true, 'kill'),
  memberKind('etcd-stop-member', false, 'stop'),
  memberKind('etcd-stop-raft-leader', true, 'stop'),
  {
    name: 'etcd-quorum-loss',
    modes: ['cluster'],
    layer: 'etcd',
    exclusive: true,
    dwellMs: 2_000,
    async inject(ctx) {
      const etcd = etcdOf(ctx);
      const n = Math.floor(etcd.size / 2) + 1;
      const first = ctx.rng.int(etcd.size);
      const down = Array.from({ length: n }, (_, k) => (first + k) % etcd.size);
      await Promise.all(down.map((i) => etcd.kill(i)));
      return {
        detail: `quorum lost: etcd ${down.map((i) => `m${i}`).join(',')} killed`,
        // All at once: a member that cannot come back must not keep the others down.
        heal: () => etcd.restart(...down),
      };
    },
  },
  {
    name: 'etcd-wipe-member',
    modes: ['cluster'],
    layer: 'etcd',
    exclusive: true,
    async inject(ctx) {
      const etcd = etcdOf(ctx);
      const i = ctx.rng.int(etcd.size);
      await etcd.wipeMember(i);
      return { detail: `etcd m${i} wiped, removed and re-added empty`, heal: async () => {} };
    },
  },
  {
    name: 'etcd-wipe-all',
    modes: ['cluster'],
    layer: 'etcd',
    exclusive: true,
    dwellMs: 2_000,
    async inject(ctx) {
      await etcdOf(ctx).wipeAll();
      return { detail: 'the whole etcd store wiped', heal: () => operatorRecovery(ctx) };
    },
  },
  {
    name: 'etcd-restore-snapshot',
    modes: ['cluster'],
    layer: 'etcd',
    exclusive: true,
    dwellMs: 2_000,
    async inject(ctx) {
      const etcd = etcdOf(ctx);
      const file = join(ctx.runDir, `etcd-snapshot-${Date.now()}.db`);
      await etcd.snapshot(file);
      // Let the state move on past the snapshot before going back to it.
      await pause(1_000 + ctx.rng.int(1_000));
      await etcd.restore(file);
      return { detail: 'etcd restored from a snapshot 1-2 s old', heal: () => operatorRecovery(ctx) };
    },
  },
];
