/**
 * Operator mistakes and clocks: `state import --force` of a lower state while the cluster runs,
 * a second cluster node started with a wrong `etcd_prefix`, a second process on one home, and
 * wall-clock jumps of minutes both ways on one node (libfaketime): safety must not depend on
 * any of them being avoided.
 */
import { ensureRunning, operatorRecovery } from './common.ts';
import { type FaultKind, pause } from './types.ts';

export const operatorFaults: FaultKind[] = [
  {
    name: 'import-force-lower',
    modes: ['cluster'],
    layer: 'operator',
    dwellMs: 1_500,
    async inject(ctx) {
      const via = ctx.bed.nodes.find((n) => n.running) ?? ctx.bed.nodes[0]!;
      const d = ctx.drivers[ctx.rng.int(ctx.drivers.length)]!;
      const back = BigInt(1 + ctx.rng.int(5));
      // The compare-and-swap loses against a node that signs meanwhile: the operator runs it again.
      const lower = async () => {
        const height = d.maxRequested.height > back ? d.maxRequested.height - back : 1n;
        return {
          height,
          res: await ctx.operator.importState(via, d.chainId, { height, round: 0, step: 3 }, true),
        };
      };
      let { height, res } = await lower();
      for (
        let attempt = 0;
        attempt < 4 && res.code !== 0 && res.stderr.includes('changed during import');
        attempt++
      ) {
        ({ height, res } = await lower());
      }
      ctx.history.write({
        t: 'operator',
        cmd: 'state import --force (lower)',
        chain: d.chainId,
        height,
        code: res.code,
        out: res.stdout.trim(),
        err: res.stderr.trim().slice(-300),
      });
      return {
        detail: `state import --force ${d.chainId} to height ${height} (${back} below) while running (exit ${res.code})`,
        heal: () => operatorRecovery(ctx),
      };
    },
  },
  {
    name: 'wrong-prefix',
    modes: ['cluster'],
    layer: 'operator',
    exclusive: true,
    dwellMs: 2_000,
    async inject(ctx) {
      const wrong = await ctx.bed.wrongPrefixNode();
      const started = await ensureRunning(ctx, wrong);
      // The validators' current signer links are cut so that they take the next connection,
      // which may be the misconfigured node's.
      const proxies = [...ctx.bed.proxies.entries()].filter(([k]) => k.startsWith('v:')).map(([, p]) => p);
      for (const p of proxies) p.mode = { kind: 'blocked' };
      await pause(300);
      for (const p of proxies) p.heal();
      return {
        detail: `a node with a wrong etcd_prefix joined the validators (${started ? 'serving' : 'refused to start'})`,
        heal: async () => wrong.kill('SIGKILL'),
      };
    },
  },
  {
    name: 'two-processes',
    modes: ['single', 'cluster'],
    layer: 'operator',
    dwellMs: 500,
    async inject(ctx) {
      const node = ctx.bed.nodes[ctx.rng.int(ctx.bed.nodes.length)]!;
      if (!node.running) return { detail: `${node.id} is down: no second process`, heal: async () => {} };
      const how = (['same-path', 'netns', 'bind-mount'] as const)[ctx.rng.int(3)]!;
      const second = await node.startSecond(how);
      let outcome: string;
      try {
        await second.waitReady(10_000);
        outcome = 'the second process STARTED';
        // Invariant 7: one home, one process, whatever path or namespace it is reached through.
        ctx.violation(`two processes hold ${node.id}'s home (second one via ${how})`);
      } catch {
        second.kill('SIGKILL');
        outcome = `the second process refused (exit ${second.exitStatus?.code ?? 'none'})`;
        ctx.history.write({
          t: 'second-process',
          node: node.id,
          how,
          stderr: second.stderr.trim().slice(-400),
        });
      }
      return {
        detail: `second process on ${node.id}'s home (${how}): ${outcome}`,
        heal: async () => {
          second.kill('SIGKILL');
          await second.exited;
        },
      };
    },
  },
  {
    name: 'clock-jump',
    modes: ['single', 'cluster'],
    layer: 'clock',
    // libfaketime re-reads the offset file at most once a second.
    dwellMs: 2_500,
    async inject(ctx) {
      const node = ctx.bed.nodes.find((n) => n.clockFile !== undefined);
      if (node === undefined) throw new Error('no node has a fake clock');
      const seconds = (60 + ctx.rng.int(540)) * (ctx.rng.chance(0.5) ? 1 : -1);
      await node.setClockOffset(seconds);
      return {
        detail: `${node.id}: wall clock jumps ${seconds > 0 ? '+' : ''}${seconds} s`,
        heal: () => node.setClockOffset(0),
      };
    },
  },
];
