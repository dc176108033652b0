/** The demo's result: what was observed, whether it proves what the demo claims, and how it reads. */

/** A node's final state as its last answered `/status` reported it. */
export interface NodeFinal {
  node_id: string;
  /** pids of every process this node ran as (two in single mode: before and after the crash) */
  pids: number[];
  killed: boolean;
  role: string | null;
  height: number | null;
  round: number | null;
  step: number | null;
}

/** Everything `cometkms demo --json` prints. */
export interface DemoSummary {
  ok: boolean;
  /** why `ok` is false, in words (empty when ok) */
  reasons: string[];
  mode: 'cluster' | 'single';
  nodes: number;
  duration_ms: number;
  block_time_ms: number;
  chain_id: string;
  pub_key_hex: string;
  heights: number;
  signed: number;
  refused: number;
  retried: number;
  unanswered: number;
  double_signs: number;
  invalid_signatures: number;
  latency_ms: { p50: number; p99: number };
  /** node SIGKILLed (the leader) */
  killed_node: string | null;
  /** SIGKILL → first new signature the validator received; null if none came */
  failover_ms: number | null;
  /** leader after the failover (cluster), or the restarted node (single) */
  new_leader: string | null;
  /** new signatures after the kill */
  signed_after_kill: number;
  node_states: NodeFinal[];
  /** every child process the demo started (KMS nodes, provisioning commands) */
  child_pids: number[];
  etcd_pids: number[];
  temp_dir: string;
  kept: boolean;
}

/** The observations the verdict is taken from. */
export interface Observed {
  doubleSigns: number;
  invalidSignatures: number;
  failoverMs: number | null;
  signedAfterKill: number;
  /** heights the validator completed after the one in progress at the kill */
  heightsAfterKill: number;
}

/**
 * The demo passes only when nothing was double-signed, every signature verified, and signing
 * went on after the leader was killed (a new signature arrived and a later height completed).
 * Returns the reasons it fails; empty means it passed.
 */
export function verdict(o: Observed): string[] {
  const reasons: string[] = [];
  if (o.doubleSigns > 0) reasons.push(`${o.doubleSigns} double sign(s) detected`);
  if (o.invalidSignatures > 0) reasons.push(`${o.invalidSignatures} invalid signature(s) received`);
  if (o.failoverMs === null || o.signedAfterKill === 0) {
    reasons.push('no signature arrived after the leader was killed: signing did not continue');
  } else if (o.heightsAfterKill < 1) {
    reasons.push('no height was completed after the leader was killed: signing did not continue');
  }
  return reasons;
}

const STEP_NAMES: Record<number, string> = { 0: 'none', 1: 'propose', 2: 'prevote', 3: 'precommit' };

/** The human-readable summary. */
export function formatSummary(s: DemoSummary): string {
  const rows: Array<[string, string]> = [
    ['mode', s.mode === 'cluster' ? `cluster (${s.nodes} KMS nodes, etcd)` : 'single node'],
    ['heights', String(s.heights)],
    ['signed', String(s.signed)],
    ['refused', String(s.refused)],
    ['retried', String(s.retried)],
    ['unanswered', `${s.unanswered}${s.unanswered > 0 ? ' (missed votes: safe, never a double sign)' : ''}`],
    ['double signs', String(s.double_signs)],
    ['invalid', String(s.invalid_signatures)],
    ['latency', `p50 ${s.latency_ms.p50.toFixed(1)} ms, p99 ${s.latency_ms.p99.toFixed(1)} ms`],
    ['killed', s.killed_node ?? '-'],
    ['failover', s.failover_ms === null ? 'none: no signature after the kill' : `${s.failover_ms} ms`],
    [s.mode === 'cluster' ? 'new leader' : 'restarted', s.new_leader ?? '-'],
    ['after kill', `${s.signed_after_kill} signatures`],
  ];
  const lines = ['', 'summary', ...rows.map(([k, v]) => `  ${`${k}:`.padEnd(14)}${v}`), '  final HRS:'];
  for (const n of s.node_states) {
    const hrs =
      n.height === null ? '-' : `${n.height}/${n.round}/${STEP_NAMES[n.step ?? 0] ?? String(n.step)}`;
    const what = n.killed ? 'killed, last seen' : (n.role ?? 'down');
    lines.push(`    ${n.node_id.padEnd(6)} ${hrs.padEnd(18)} (${what})`);
  }
  lines.push(
    s.ok
      ? 'PASS: no double sign, every signature valid, signing continued after the leader was killed'
      : `FAIL: ${s.reasons.join('; ')}`,
  );
  return `${lines.join('\n')}\n`;
}
