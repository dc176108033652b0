/** Targets and recovery steps shared by the fault kinds. */
import type { ChaosNode } from '../bed/node.ts';
import type { CliResult, Hrs } from '../operator.ts';
import type { FaultContext } from './types.ts';

/** The serving leader (single node: the node); a random running node if none is found quickly. */
export async function leaderNode(ctx: FaultContext): Promise<ChaosNode> {
  const { bed } = ctx;
  if (bed.mode === 'single') return bed.nodes[0]!;
  const i = await bed.leader(5_000);
  if (i >= 0) return bed.nodes[i]!;
  const running = bed.nodes.filter((n) => n.running);
  return running[ctx.rng.int(running.length)] ?? bed.nodes[0]!;
}

/** A running node other than the leader (cluster mode). */
export async function followerNode(ctx: FaultContext): Promise<ChaosNode> {
  const leader = await leaderNode(ctx);
  const others = ctx.bed.nodes.filter((n) => n !== leader && n.running);
  return others[ctx.rng.int(others.length)] ?? ctx.bed.nodes.find((n) => n !== leader)!;
}

/** Any node, uniformly. */
export function anyNode(ctx: FaultContext): ChaosNode {
  return ctx.bed.nodes[ctx.rng.int(ctx.bed.nodes.length)]!;
}

/** Starts `node` if it is not running; records a refusal to start in the history. */
export async function ensureRunning(ctx: FaultContext, node: ChaosNode): Promise<boolean> {
  if (node.running) {
    node.resume();
    return true;
  }
  const ok = await node.start();
  if (!ok) ctx.history.write({ t: 'node-refused-start', node: node.id, stderr: node.lastStderr });
  return ok;
}

/**
 * The operator's recovery after state was lost or regressed: import, for every chain, a
 * priv_validator_state.json at the highest HRS its sentries ever asked for (no sign bytes), then
 * make sure every node runs. That HRS bounds every reservation any node can have made, so the
 * import never goes below what was signed.
 *
 * Single node: the node is stopped (it holds the home lock), so nothing moves the state during
 * the import; the state may be unusable (truncated, regressed), which only `--force` replaces,
 * as the node's own refusal message tells the operator. Cluster: online and never `--force`:
 * every state-losing fault leaves etcd without the key or below the imported HRS, so a plain
 * import moves it forward; one refused as "backwards" means the nodes already hold a higher
 * state, which must not be overwritten. Only a lost compare-and-swap race is retried.
 */
export async function operatorRecovery(ctx: FaultContext): Promise<void> {
  const { bed, operator, history } = ctx;
  const log = (chain: string, hrs: Hrs, res: CliResult): void =>
    history.write({
      t: 'operator',
      cmd: 'state import',
      chain,
      hrs,
      code: res.code,
      out: res.stdout.trim(),
      err: res.stderr.trim().slice(-300),
    });
  if (bed.mode === 'single') {
    const node = bed.nodes[0]!;
    await node.kill('SIGTERM');
    for (const d of ctx.drivers) {
      const hrs = d.maxRequested;
      log(d.chainId, hrs, await operator.importState(node, d.chainId, hrs, true));
    }
    await ensureRunning(ctx, node);
    return;
  }
  await Promise.all(
    ctx.drivers.map(async (d) => {
      for (let attempt = 0; attempt < 3; attempt++) {
        const hrs = d.maxRequested;
        const res = await operator.importState(bed.nodes[attempt % bed.nodes.length]!, d.chainId, hrs);
        log(d.chainId, hrs, res);
        if (res.code === 0 || !res.stderr.includes('changed during import')) return;
      }
    }),
  );
  for (const n of bed.nodes) await ensureRunning(ctx, n);
}
