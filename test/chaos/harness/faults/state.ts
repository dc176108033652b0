/**
 * Faults on a node's state directory (power loss: any node; the others: a single node's). Generic over its files (the harness does not know
 * the store's layout): files deleted, truncated, one put back from an older copy, power loss
 * (only what was fsynced survives, see state/durable-fs-preload.mjs), and a full disk.
 * The first three destroy or regress state: the node is killed, the files are changed as on a
 * stopped machine, the node is started again (it may refuse), and after the dwell the harness
 * does the operator's recovery.
 */
import { readdir, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChaosNode } from '../bed/node.ts';
import { anyNode, ensureRunning, leaderNode, operatorRecovery } from './common.ts';
import { type FaultContext, type FaultKind, pause } from './types.ts';

async function stateFiles(node: ChaosNode): Promise<string[]> {
  const names = (await readdir(node.stateDir, { withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => e.name);
  return names.sort();
}

/** Kills the node, lets `change` alter its stopped state directory, starts it again. */
async function offline(ctx: FaultContext, change: (node: ChaosNode) => Promise<string>) {
  const node = ctx.bed.nodes[0]!;
  await node.kill('SIGKILL');
  const detail = await change(node);
  const started = await ensureRunning(ctx, node);
  return {
    detail: `${detail}; restarted: ${started ? 'serving' : 'refused to start'}`,
    heal: () => operatorRecovery(ctx),
  };
}

export const stateFaults: FaultKind[] = [
  {
    name: 'state-delete',
    modes: ['single'],
    layer: 'state',
    exclusive: true,
    dwellMs: 1_500,
    inject: (ctx) =>
      offline(ctx, async (node) => {
        const files = await stateFiles(node);
        if (ctx.rng.chance(0.5) || files.length === 0) {
          for (const f of files) await unlink(join(node.stateDir, f));
          return `all ${files.length} state files deleted`;
        }
        const f = files[ctx.rng.int(files.length)]!;
        await unlink(join(node.stateDir, f));
        return `state file ${f} deleted`;
      }),
  },
  {
    name: 'state-truncate',
    modes: ['single'],
    layer: 'state',
    exclusive: true,
    dwellMs: 1_500,
    inject: (ctx) =>
      offline(ctx, async (node) => {
        const files = await stateFiles(node);
        const f = files[ctx.rng.int(files.length)];
        if (f === undefined) return 'no state file to truncate';
        const size = (await readFile(join(node.stateDir, f))).length;
        const to = ctx.rng.int(size);
        await truncate(join(node.stateDir, f), to);
        return `state file ${f} truncated ${size} → ${to} bytes`;
      }),
  },
  {
    name: 'state-older-copy',
    modes: ['single'],
    layer: 'state',
    exclusive: true,
    dwellMs: 1_500,
    async inject(ctx) {
      const node = ctx.bed.nodes[0]!;
      const files = await stateFiles(node);
      const f = files[ctx.rng.int(files.length)];
      const old = f === undefined ? undefined : await readFile(join(node.stateDir, f));
      await pause(800 + ctx.rng.int(1_200));
      return await offline(ctx, async () => {
        if (f === undefined || old === undefined) return 'no state file to copy';
        await writeFile(join(node.stateDir, f), old, { mode: 0o600 });
        return `state file ${f} put back from a copy ~1-2 s old`;
      });
    },
  },
  {
    name: 'power-loss',
    modes: ['single', 'cluster'],
    layer: 'state',
    exclusive: true,
    async inject(ctx) {
      // Cluster: mostly the leader, whose high-water marks are raised on every reservation.
      const node = ctx.rng.chance(0.7) ? await leaderNode(ctx) : anyNode(ctx);
      const changed = await node.powerLoss();
      return {
        detail: `power loss on ${node.id} (unsynced writes lost: ${changed.length === 0 ? 'none' : changed.join(', ')})`,
        heal: async () => void (await ensureRunning(ctx, node)),
      };
    },
  },
  {
    name: 'disk-full',
    modes: ['single'],
    layer: 'state',
    dwellMs: 1_500,
    async inject(ctx) {
      const flag = ctx.bed.nodes[0]!.enospcFlag;
      if (flag === undefined) throw new Error('disk-full needs the durable layer');
      await writeFile(flag, '');
      return { detail: 'state directory full (ENOSPC)', heal: () => rm(flag, { force: true }) };
    },
  },
];
