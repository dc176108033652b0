/**
 * The harness acting as the operator: the documented `cometkms` commands, run as an operator
 * would, with the node's own config. Recovery after a fault that destroyed state imports a
 * priv_validator_state.json at the highest HRS the validator may have signed (no sign bytes),
 * which the harness knows independently of CometKMS: the highest HRS its sentries ever asked
 * for bounds every reservation a node can have made.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type KmsExit, runCli } from '../../helpers/kms-process.ts';
import type { ChaosNode } from './bed/node.ts';

export interface Hrs {
  height: bigint;
  round: number;
  step: number;
}

export type CliResult = KmsExit & { stdout: string; stderr: string };

export class Operator {
  private files = 0;
  constructor(private readonly runDir: string) {}

  /** Writes a priv_validator_state.json at `hrs` (no sign bytes, no signature). */
  async stateFile(hrs: Hrs): Promise<string> {
    const file = join(this.runDir, `pvs-${++this.files}.json`);
    const doc = { height: hrs.height.toString(), round: hrs.round, step: hrs.step };
    await writeFile(file, `${JSON.stringify(doc, null, 2)}\n`);
    return file;
  }

  /** `cometkms state init --config <node's> --chain ID --height H`: a chain the key never signed on. */
  async initState(node: ChaosNode, chainId: string, height: bigint): Promise<CliResult> {
    const args = [
      'state',
      'init',
      '--config',
      node.home.configPath,
      '--chain',
      chainId,
      '--height',
      String(height),
    ];
    return await runCli(args, node.home.env(), 30_000);
  }

  /** `cometkms state import --config <node's> --chain ID --from <pvs at hrs> [--force]`. */
  async importState(node: ChaosNode, chainId: string, hrs: Hrs, force = false): Promise<CliResult> {
    const from = await this.stateFile(hrs);
    const args = ['state', 'import', '--config', node.home.configPath, '--chain', chainId, '--from', from];
    if (force) args.push('--force');
    return await runCli(args, node.home.env(), 30_000);
  }

  /** `cometkms leader transfer` through node's admin API. */
  async leaderTransfer(node: ChaosNode): Promise<CliResult> {
    if (node.adminUrl === undefined) throw new Error(`${node.id} is not running`);
    const tokenFile = join(node.home.dir, 'admin.token');
    return await runCli(
      ['leader', 'transfer', '--admin', node.adminUrl, '--token-file', tokenFile],
      node.home.env(),
      15_000,
    );
  }
}
