/** Where a home keeps the sign state of its chains. */
import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** Directory of the state files inside a home. */
export const STATE_DIR = 'state';

/**
 * The file stem of a chain's files: the chain id with every character outside [A-Za-z0-9_-]
 * replaced (chain ids may contain `/`, `..`, spaces, …), plus a hash of the exact id so that two
 * ids that sanitise alike never share a file.
 */
export function chainFileStem(chainId: string): string {
  const safe = chainId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);
  const hash = createHash('sha256').update(chainId, 'utf8').digest('hex').slice(0, 16);
  return `${safe}-${hash}`;
}

/** `<home>/state/<stem><suffix>` for `chainId`. */
export function chainStatePath(home: string, chainId: string, suffix: string): string {
  return join(home, STATE_DIR, `${chainFileStem(chainId)}${suffix}`);
}
