/**
 * Checks shared by the cluster chaos tests: progress of the replicated state, agreement of every
 * node's /status, the audit-log double-sign check across all nodes, leadership transfer.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { NodeStatus } from '../../src/admin/types.ts';
import { type KmsCluster, waitFor } from './kms-cluster.ts';
import { runCli } from './kms-process.ts';

/** (height, round, step) of a chain in a /status body, as one comparable bigint. */
export function statusHrs(s: NodeStatus): bigint {
  const c = s.chains[0];
  if (c === undefined) throw new Error('status carries no chain');
  return (BigInt(c.height) << 40n) | (BigInt(c.round) << 8n) | BigInt(c.step);
}

export function heightOf(s: NodeStatus): number {
  return s.chains[0]?.height ?? 0;
}

/** The highest replicated height any live node reports. */
export async function clusterHeight(cluster: KmsCluster): Promise<number> {
  let h = 0;
  for (let i = 0; i < cluster.nodes.length; i++) {
    const s = await cluster.status(i);
    if (s !== undefined) h = Math.max(h, heightOf(s));
  }
  return h;
}

/** Waits until a serving leader has signed `heights` more heights than `from`. */
export async function waitProgress(
  cluster: KmsCluster,
  from: number,
  heights: number,
  ms: number,
): Promise<void> {
  await waitFor(`signing to go on past height ${from + heights}`, ms, async () => {
    return (await clusterHeight(cluster)) >= from + heights;
  });
}

/**
 * Every live node reports at least the HRS the leader reports now (the replicated state reaches
 * followers), within `ms`.
 */
export async function waitAgreement(cluster: KmsCluster, ms: number): Promise<void> {
  const leader = await cluster.leaderIndex(15_000);
  const ls = await cluster.status(leader);
  if (ls === undefined) return;
  const target = statusHrs(ls);
  await waitFor('every node to report the leader’s HRS', ms, async () => {
    for (let i = 0; i < cluster.nodes.length; i++) {
      const s = await cluster.status(i);
      if (s === undefined) continue;
      if (statusHrs(s) < target) return false;
    }
    return true;
  });
}

/** With signing stopped: every live node reports exactly the same HRS. */
export async function assertSameHrs(cluster: KmsCluster): Promise<void> {
  await waitFor('every node to report the same HRS', 10_000, async () => {
    const all: bigint[] = [];
    for (let i = 0; i < cluster.nodes.length; i++) {
      const s = await cluster.status(i);
      if (s !== undefined) all.push(statusHrs(s));
    }
    return all.length > 0 && all.every((h) => h === all[0]);
  });
}

/** Runs `cometkms audit check` over every node's audit log: no HRS signed over two sign bytes. */
export async function assertAuditClean(cluster: KmsCluster): Promise<void> {
  const files = cluster.nodes
    .map((n) => join(n.home.home, 'audit', 'audit.jsonl'))
    .filter((f) => existsSync(f));
  assert.ok(files.length > 0, 'no audit log was written');
  const res = await runCli(['audit', 'check', ...files], process.env);
  assert.equal(res.code, 0, `audit check: ${res.stdout}\n${res.stderr}`);
}

/** POST /leader/transfer on node i. */
export async function transferLeadership(
  cluster: KmsCluster,
  i: number,
  to?: string,
): Promise<{ status: number; body: { transferred?: boolean; message?: string } }> {
  const node = cluster.nodes[i]!;
  const res = await fetch(new URL('/leader/transfer', node.adminUrl), {
    method: 'POST',
    headers: { authorization: `Bearer ${node.home.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(to === undefined ? {} : { to }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: (await res.json()) as { transferred?: boolean; message?: string } };
}
