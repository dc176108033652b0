/**
 * The demo's live view. On a terminal it is a small block redrawn in place once a second (ANSI
 * cursor-up and erase-line); otherwise (CI, a pipe, a file) one plain line is appended per tick.
 * Events (the kill, the failover) are printed above the block and stay in the scrollback.
 */
import type { Writable } from 'node:stream';
import type { NodeStatus } from '../../admin/types.ts';

/** What the view knows about one node. */
export interface NodeView {
  id: string;
  pid: number | undefined;
  /** killed = SIGKILLed by the demo; starting = running, not answering /status yet; down = exited */
  state: 'up' | 'starting' | 'killed' | 'down';
  status: NodeStatus | undefined;
}

/** One tick of the demo. */
export interface Snapshot {
  elapsedMs: number;
  heights: number;
  signed: number;
  p50Ms: number;
  nodes: NodeView[];
}

const STEP_NAMES: Record<number, string> = { 0: 'none', 1: 'propose', 2: 'prevote', 3: 'precommit' };

/** `height/round/step` of a node's chain, e.g. `12/0/precommit`. */
export function formatHrs(status: NodeStatus | undefined): string {
  const c = status?.chains[0];
  if (!c) return '-';
  return `${c.height}/${c.round}/${STEP_NAMES[c.step] ?? c.step}`;
}

function role(n: NodeView): string {
  if (n.state === 'killed') return 'KILLED';
  if (n.state === 'starting') return 'starting';
  if (n.state === 'down' || !n.status) return 'down';
  return n.status.role;
}

function head(s: Snapshot): string {
  return (
    `t+${Math.round(s.elapsedMs / 1000)}s  heights ${s.heights}  signatures ${s.signed}  ` +
    `p50 ${s.p50Ms.toFixed(1)} ms`
  );
}

/** The block shown on a terminal: a header line and one line per node. */
export function snapshotBlock(s: Snapshot): string[] {
  return [
    head(s),
    ...s.nodes.map((n) => {
      const connected = n.status?.chains[0]?.validators.some((v) => v.connected) === true;
      return (
        `  ${n.id.padEnd(6)} ${role(n).padEnd(9)} pid ${String(n.pid ?? '-').padEnd(7)} ` +
        `last HRS ${formatHrs(n.status).padEnd(16)}${connected ? ' connected to validator' : ''}`
      );
    }),
  ];
}

/** The same tick as one appended line. */
export function snapshotLine(s: Snapshot): string {
  return [head(s), ...s.nodes.map((n) => `${n.id} ${role(n)} ${formatHrs(n.status)}`)].join(' | ');
}

/** Writes the live view to `out`, redrawing in place when `tty`. */
export class LiveView {
  private drawn: string[] = [];

  constructor(
    private readonly out: Writable,
    private readonly tty: boolean,
  ) {}

  /** Shows a new tick. */
  update(s: Snapshot): void {
    if (!this.tty) {
      this.out.write(`${snapshotLine(s)}\n`);
      return;
    }
    const lines = snapshotBlock(s);
    this.out.write(this.erase() + lines.map((l) => `${l}\n`).join(''));
    this.drawn = lines;
  }

  /** Prints a line that stays (above the block on a terminal). */
  event(text: string): void {
    if (!this.tty) {
      this.out.write(`${text}\n`);
      return;
    }
    this.out.write(`${this.erase()}${text}\n${this.drawn.map((l) => `${l}\n`).join('')}`);
  }

  /** Leaves the last block where it is; later output goes below it. */
  end(): void {
    this.drawn = [];
  }

  /** Moves up over the drawn block and erases from there to the end of the screen. */
  private erase(): string {
    return this.drawn.length === 0 ? '' : `\x1b[${this.drawn.length}A\x1b[J`;
  }
}
