/**
 * The failover time as ARCHITECTURE.md §6 defines it: from the leader's SIGKILL to the first
 * signature BY THE NEW LEADER that reaches the validator.
 *
 * "The first new signature after the kill" is not enough: a signature the old leader produced
 * just before it died can still be on its way (relayed by a follower) and arrive a millisecond
 * after the kill. So the new leader's audit log names the sign bytes it signed after the kill,
 * and the failover ends when the first of those reaches the validator.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AuditRecord } from '../../admin/audit.ts';
import { auditLogPath } from '../runtime/common.ts';
import type { Arrival } from './sign-watch.ts';

const SIGNED = new Set<AuditRecord['outcome']>(['signed', 'resigned', 'timestamp_only']);

/** Hex SHA-256 of the sign bytes `nodeId` signed at or after `sinceMs` (wall clock), from its audit log. */
export async function signedSince(home: string, nodeId: string, sinceMs: number): Promise<Set<string>> {
  let text: string;
  try {
    text = await readFile(auditLogPath(home), 'utf8');
  } catch {
    return new Set();
  }
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      const r = JSON.parse(line) as Partial<AuditRecord>;
      if (
        r.node === nodeId &&
        r.outcome !== undefined &&
        SIGNED.has(r.outcome) &&
        typeof r.sign_bytes_sha256 === 'string' &&
        typeof r.ts === 'string' &&
        Date.parse(r.ts) >= sinceMs
      ) {
        out.add(r.sign_bytes_sha256);
      }
    } catch {
      // a torn last line of a log still being written
    }
  }
  return out;
}

/** The arrival time of the first of `arrivals` whose sign bytes are in `signed`, if any. */
export function firstArrivalOf(arrivals: readonly Arrival[], signed: Set<string>): number | undefined {
  for (const a of arrivals) {
    if (signed.has(createHash('sha256').update(a.signBytes).digest('hex'))) return a.at;
  }
  return undefined;
}
