import type { NodeStatus } from './types.ts';

/** Pads the cells of each column to its widest cell. */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/**
 * The human-readable `cometkms status`: the node, then one row per chain with what this node
 * refused and failed to sign for it since it started.
 */
export function formatStatus(s: NodeStatus): string {
  const head = table([
    ['node:', s.node_id],
    ['version:', s.version],
    ['mode:', s.mode],
    ['role:', s.role],
    ['leader:', s.leader_id ?? '(none known)'],
    ['term:', String(s.term)],
    [
      'hsm:',
      `${s.hsm.token_label} ${s.hsm.reachable ? 'reachable' : 'UNREACHABLE'}, signing session ${
        s.hsm.signing_session ? 'open' : 'closed'
      }${s.hsm.last_error === undefined ? '' : ` (last error: ${s.hsm.last_error})`}`,
    ],
  ]);
  if (s.cluster !== undefined) {
    const members = s.cluster.members.map((m) => (m.leader ? `${m.node_id}*` : m.node_id)).join(', ');
    head.push(
      ...table([
        ['etcd:', s.cluster.etcd_healthy ? 'healthy' : 'UNHEALTHY'],
        ['members:', members || '(none)'],
      ]),
    );
  }
  const rows = [['CHAIN', 'HEIGHT/ROUND/STEP', 'LAST SIGNED', 'REFUSED', 'ERRORS', 'VALIDATORS UP']];
  for (const c of s.chains) {
    const up = c.validators.filter((v) => v.connected).length;
    rows.push([
      c.chain_id,
      `${c.height}/${c.round}/${c.step}`,
      c.last_signed_at ?? 'never',
      c.double_sign_refused > 0 ? `${c.refused} (${c.double_sign_refused} double-sign)` : String(c.refused),
      String(c.errors),
      `${up}/${c.validators.length}`,
    ]);
  }
  return `${head.join('\n')}\n\n${table(rows).join('\n')}\n`;
}
