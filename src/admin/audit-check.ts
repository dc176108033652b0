/**
 * `cometkms audit check`: reads the audit logs of every node of a cluster and looks for a
 * double sign — one (chain, height, round, step) at which signatures over two different sign
 * bytes were produced.
 *
 * Which records prove "a signature over these bytes was produced": `signed` (the request's bytes
 * were reserved and signed), `resigned` (identical to the reserved bytes, which were (re)signed)
 * and `timestamp_only` (the reserved bytes' signature went out with the reserved timestamp; its
 * `sign_bytes_sha256` names the reserved bytes, not the request's).
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

/** Where a record came from. */
export interface AuditLocation {
  file: string;
  /** 1-based */
  line: number;
  node: string;
  ts: string;
}

/** One HRS of one chain at which different sign bytes were signed. */
export interface AuditConflict {
  chain: string;
  height: string;
  round: number;
  step: number;
  /** each distinct sign-bytes hash with the first record that signed it */
  signatures: Array<{ sign_bytes_sha256: string; first: AuditLocation }>;
}

/** A line that is not a valid audit record. */
export interface AuditMalformed {
  file: string;
  line: number;
  problem: string;
}

/** The outcome of checking a set of audit files. */
export interface AuditReport {
  files: number;
  lines: number;
  /** records read, by outcome */
  outcomes: Record<string, number>;
  /** distinct (chain, height, round, step) with at least one signature */
  signedHrs: number;
  /** highest signed height per chain (decimal) */
  highestHeight: Record<string, string>;
  /** records the writers reported as dropped (`dropped` marker lines) */
  droppedRecords: number;
  nodes: string[];
  conflicts: AuditConflict[];
  malformed: AuditMalformed[];
}

const OUTCOMES = new Set(['signed', 'resigned', 'timestamp_only', 'served', 'refused', 'retry']);
const KINDS = new Set(['vote', 'proposal', 'pubkey', 'sign_bytes']);
/** Outcomes whose `sign_bytes_sha256` names bytes that were signed (see the module comment). */
const SIGNED_OUTCOMES = new Set(['signed', 'resigned', 'timestamp_only']);
const SHA256_HEX = /^[0-9a-f]{64}$/;
const HEIGHT = /^(0|[1-9][0-9]*)$/;
/** malformed lines listed at most; the count is always exact */
const MAX_MALFORMED_LISTED = 100;

type Parsed =
  | { kind: 'record'; node: string; ts: string; chain: string; outcome: string; signed?: SignedHrs }
  | { kind: 'dropped'; count: number };

interface SignedHrs {
  height: string;
  round: number;
  step: number;
  sha: string;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isNonNegInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Parses one line, or returns the problem with it. */
function parseLine(text: string): Parsed | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (!isObject(v)) return 'not a JSON object';
  if (typeof v['node'] !== 'string' || typeof v['ts'] !== 'string') return 'missing "node" or "ts"';
  if (v['event'] === 'dropped') {
    return isNonNegInt(v['count']) ? { kind: 'dropped', count: v['count'] } : 'bad "count" in dropped marker';
  }
  const { chain, kind, outcome } = v;
  if (typeof chain !== 'string' || chain === '') return 'missing "chain"';
  if (typeof kind !== 'string' || !KINDS.has(kind)) return `unknown "kind" ${JSON.stringify(kind)}`;
  if (typeof outcome !== 'string' || !OUTCOMES.has(outcome)) {
    return `unknown "outcome" ${JSON.stringify(outcome)}`;
  }
  if (typeof v['latency_ms'] !== 'number') return 'missing "latency_ms"';
  const record: Parsed = { kind: 'record', node: v['node'], ts: v['ts'], chain, outcome };
  if (!SIGNED_OUTCOMES.has(outcome) || (kind !== 'vote' && kind !== 'proposal')) return record;
  // A signature record that cannot be placed at an HRS cannot be checked: that is a problem.
  const { height, round, step, sign_bytes_sha256: sha } = v;
  if (typeof height !== 'string' || !HEIGHT.test(height)) return `${outcome} record without a valid "height"`;
  if (!isNonNegInt(round) || !isNonNegInt(step)) return `${outcome} record without a valid "round"/"step"`;
  if (typeof sha !== 'string' || !SHA256_HEX.test(sha)) {
    return `${outcome} record without a valid "sign_bytes_sha256"`;
  }
  record.signed = { height, round, step, sha };
  return record;
}

/**
 * Reads every file (any order: node logs and their rotated files) and reports conflicts and
 * malformed lines. Reads line by line, so large logs are never loaded whole; memory grows with
 * the number of distinct signed HRS only. Throws when a file cannot be read.
 */
export async function checkAuditFiles(paths: string[]): Promise<AuditReport> {
  /** "chain\nheight\nround\nstep" → sign-bytes hash → its first record */
  const signed = new Map<string, Map<string, AuditLocation>>();
  const report: AuditReport = {
    files: paths.length,
    lines: 0,
    outcomes: {},
    signedHrs: 0,
    highestHeight: {},
    droppedRecords: 0,
    nodes: [],
    conflicts: [],
    malformed: [],
  };
  let malformedCount = 0;
  const nodes = new Set<string>();
  const highest = new Map<string, bigint>();

  for (const file of paths) {
    const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
    let n = 0;
    for await (const text of lines) {
      n++;
      if (text.trim() === '') continue;
      report.lines++;
      const parsed = parseLine(text);
      if (typeof parsed === 'string') {
        malformedCount++;
        if (report.malformed.length < MAX_MALFORMED_LISTED)
          report.malformed.push({ file, line: n, problem: parsed });
        continue;
      }
      if (parsed.kind === 'dropped') {
        report.droppedRecords += parsed.count;
        continue;
      }
      nodes.add(parsed.node);
      report.outcomes[parsed.outcome] = (report.outcomes[parsed.outcome] ?? 0) + 1;
      const s = parsed.signed;
      if (s === undefined) continue;
      const key = `${parsed.chain}\n${s.height}\n${s.round}\n${s.step}`;
      let byHash = signed.get(key);
      if (byHash === undefined) {
        byHash = new Map();
        signed.set(key, byHash);
      }
      if (!byHash.has(s.sha)) byHash.set(s.sha, { file, line: n, node: parsed.node, ts: parsed.ts });
      const h = BigInt(s.height);
      if ((highest.get(parsed.chain) ?? -1n) < h) highest.set(parsed.chain, h);
    }
  }

  for (const [key, byHash] of signed) {
    if (byHash.size < 2) continue;
    const [chain = '', height = '', round = '0', step = '0'] = key.split('\n');
    report.conflicts.push({
      chain,
      height,
      round: Number(round),
      step: Number(step),
      signatures: [...byHash].map(([sha, first]) => ({ sign_bytes_sha256: sha, first })),
    });
  }
  report.signedHrs = signed.size;
  report.highestHeight = Object.fromEntries([...highest].map(([c, h]) => [c, h.toString()]));
  report.nodes = [...nodes].sort();
  if (malformedCount > report.malformed.length) {
    report.malformed.push({
      file: '',
      line: 0,
      problem: `${malformedCount - report.malformed.length} more malformed lines not listed`,
    });
  }
  return report;
}

/** The exit code of `audit check`: 1 on a conflict (it outranks everything), 2 on malformed input. */
export function auditExitCode(report: AuditReport): 0 | 1 | 2 {
  if (report.conflicts.length > 0) return 1;
  if (report.malformed.length > 0) return 2;
  return 0;
}

/** The operator-facing text of a report. */
export function formatAuditReport(report: AuditReport): string {
  const out: string[] = [];
  for (const c of report.conflicts) {
    out.push(`CONFLICT chain ${c.chain} height ${c.height} round ${c.round} step ${c.step}:`);
    for (const s of c.signatures) {
      out.push(
        `  sign bytes ${s.sign_bytes_sha256} signed by ${s.first.node} at ${s.first.ts} (${s.first.file}:${s.first.line})`,
      );
    }
  }
  for (const m of report.malformed) {
    out.push(m.file === '' ? `malformed: ${m.problem}` : `malformed: ${m.file}:${m.line}: ${m.problem}`);
  }
  const outcomes = Object.entries(report.outcomes)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([o, n]) => `${o} ${n}`)
    .join(', ');
  out.push(
    `checked ${report.files} file(s), ${report.lines} line(s) from node(s) ${report.nodes.join(', ') || '(none)'}`,
    `records: ${outcomes || '(none)'}`,
    `signed HRS: ${report.signedHrs}; highest signed height: ${
      Object.entries(report.highestHeight)
        .map(([c, h]) => `${c} ${h}`)
        .join(', ') || '(none)'
    }`,
  );
  if (report.droppedRecords > 0) {
    out.push(`warning: the writers dropped ${report.droppedRecords} record(s) (see "dropped" lines)`);
  }
  out.push(
    report.conflicts.length > 0
      ? `DOUBLE SIGN: ${report.conflicts.length} HRS signed over different bytes`
      : report.malformed.length > 0
        ? 'no conflict among the readable records, but some lines are malformed'
        : 'OK: no HRS was signed over different bytes',
  );
  return `${out.join('\n')}\n`;
}
