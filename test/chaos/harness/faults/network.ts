/**
 * Network faults, through the harness's TCP proxies: a KMS node cut from etcd, followers cut from
 * the leader's forward port, a validator cut from a KMS node — each both ways or one way — and
 * added delay. Partitions between etcd members are etcd faults (faults/etcd.ts), through the
 * etcd bed's per-pair proxies.
 */
import type { TcpProxy } from '../net/proxy.ts';
import { leaderNode } from './common.ts';
import type { FaultContext, FaultKind } from './types.ts';

function cut(ctx: FaultContext, proxies: TcpProxy[]): string {
  const oneWay = ctx.rng.chance(0.5);
  const held = ctx.rng.chance(0.5) ? 'toTarget' : 'toClient';
  for (const p of proxies) p.mode = oneWay ? { kind: 'oneway', held } : { kind: 'blocked' };
  return oneWay ? `one way (${held === 'toTarget' ? 'requests' : 'replies'} held)` : 'both ways';
}

const healAll = (proxies: TcpProxy[]) => async (): Promise<void> => {
  for (const p of proxies) p.heal();
};

export const networkFaults: FaultKind[] = [
  {
    name: 'net-kms-etcd',
    modes: ['cluster'],
    layer: 'network',
    dwellMs: 2_500,
    async inject(ctx) {
      // Mostly the leader: that is where a partition forces a handover.
      const node = ctx.rng.chance(0.7)
        ? await leaderNode(ctx)
        : ctx.bed.nodes[ctx.rng.int(ctx.bed.nodes.length)]!;
      const proxies = ctx.bed.nodeProxies(node.index, 'e');
      return { detail: `${node.id} ↔ etcd cut ${cut(ctx, proxies)}`, heal: healAll(proxies) };
    },
  },
  {
    name: 'net-forward',
    modes: ['cluster'],
    layer: 'network',
    dwellMs: 2_000,
    async inject(ctx) {
      const leader = await leaderNode(ctx);
      const proxies = [ctx.bed.proxy(`f:${leader.index}`)];
      return {
        detail: `followers ↔ ${leader.id} forward port cut ${cut(ctx, proxies)}`,
        heal: healAll(proxies),
      };
    },
  },
  {
    name: 'net-validator',
    modes: ['single', 'cluster'],
    layer: 'network',
    dwellMs: 1_500,
    async inject(ctx) {
      const node = ctx.rng.chance(0.7)
        ? await leaderNode(ctx)
        : ctx.bed.nodes[ctx.rng.int(ctx.bed.nodes.length)]!;
      const proxies = ctx.bed.nodeProxies(node.index, 'v');
      return { detail: `validators ↔ ${node.id} cut ${cut(ctx, proxies)}`, heal: healAll(proxies) };
    },
  },
  {
    name: 'net-delay',
    modes: ['single', 'cluster'],
    layer: 'network',
    dwellMs: 2_000,
    async inject(ctx) {
      const node = await leaderNode(ctx);
      const ms = 20 + ctx.rng.int(280);
      const toEtcd = ctx.bed.mode === 'cluster' && ctx.rng.chance(0.5);
      const proxies = ctx.bed.nodeProxies(node.index, toEtcd ? 'e' : 'v');
      for (const p of proxies) p.delayMs = ms;
      return {
        detail: `${ms} ms delay ${node.id} ↔ ${toEtcd ? 'etcd' : 'validators'}`,
        heal: healAll(proxies),
      };
    },
  },
];
