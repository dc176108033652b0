/**
 * Process faults: SIGKILL, SIGSTOP past the lease then SIGCONT, SIGTERM (graceful handover), of
 * the leader and of followers, and `cometkms leader transfer` while signing goes on.
 */
import { anyNode, ensureRunning, followerNode, leaderNode } from './common.ts';
import { type FaultKind, pause } from './types.ts';

const signalKind = (name: string, who: 'leader' | 'follower', signal: 'SIGKILL' | 'SIGTERM'): FaultKind => ({
  name,
  modes: who === 'leader' ? ['single', 'cluster'] : ['cluster'],
  layer: 'process',
  async inject(ctx) {
    const node = who === 'leader' ? await leaderNode(ctx) : await followerNode(ctx);
    await node.kill(signal);
    return { detail: `${signal} ${who} ${node.id}`, heal: async () => void (await ensureRunning(ctx, node)) };
  },
});

const freezeKind = (name: string, who: 'leader' | 'follower'): FaultKind => ({
  name,
  modes: who === 'leader' ? ['single', 'cluster'] : ['cluster'],
  layer: 'process',
  // Frozen past the 1 s lease: another node takes over, the thawed one must find itself fenced.
  dwellMs: 2_500,
  async inject(ctx) {
    const node = who === 'leader' ? await leaderNode(ctx) : await followerNode(ctx);
    node.pause();
    return {
      detail: `SIGSTOP ${who} ${node.id} past the lease, then SIGCONT`,
      heal: async () => node.resume(),
    };
  },
});

export const processFaults: FaultKind[] = [
  signalKind('kill-leader', 'leader', 'SIGKILL'),
  signalKind('kill-follower', 'follower', 'SIGKILL'),
  signalKind('term-leader', 'leader', 'SIGTERM'),
  freezeKind('stop-leader', 'leader'),
  freezeKind('stop-follower', 'follower'),
  {
    name: 'leader-transfer',
    modes: ['cluster'],
    layer: 'process',
    async inject(ctx) {
      const via = anyNode(ctx);
      if (!via.running) return { detail: `no transfer (${via.id} is down)`, heal: async () => {} };
      const res = await ctx.operator.leaderTransfer(via);
      ctx.history.write({
        t: 'operator',
        cmd: 'leader transfer',
        via: via.id,
        code: res.code,
        out: res.stdout.trim(),
      });
      await pause(200);
      return { detail: `leader transfer via ${via.id} (exit ${res.code})`, heal: async () => {} };
    },
  },
];
