/**
 * How a deployment starts node: the NODE_OPTIONS that deploy/systemd/cometkms.service sets (the
 * container image sets the same; test/integration/deploy/container.test.ts checks it), so that
 * memory figures are those of a node as deployed.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function deployedNodeOptions(): Promise<string> {
  const unit = await readFile(join(import.meta.dirname, '../deploy/systemd/cometkms.service'), 'utf8');
  const value = /^Environment=NODE_OPTIONS=(.+)$/m.exec(unit)?.[1];
  if (value === undefined) throw new Error('deploy/systemd/cometkms.service sets no NODE_OPTIONS');
  return value.trim();
}
