/**
 * etcd faults: a member or the Raft leader killed or frozen, quorum lost and back, a member
 * wiped and re-added, and the two that lose state — the whole store wiped, and a restore from an
 * older snapshot — after which the harness does the operator's documented recovery.
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

export const etcdFaults: FaultKind[] = [
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
