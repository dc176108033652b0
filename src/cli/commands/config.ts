/**
 * `cometkms config check --config FILE`: runs the checks `start` makes before it binds or dials
 * anything, with the same code, and opens no socket: the config schema, the home `init`
 * prepared, every secret and TLS file (and its mode), the PKCS#11 module and profile, the token,
 * every chain's key, and a login with the PIN. A single node's sign state is read and verified as
 * `start` would, without the home lock (so the check also runs next to a running node); a
 * cluster's sign state lives in etcd and is not read. Exit 0, or the first error with the exit
 * code of its class (errors.ts).
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { clusterEtcdOptions } from '../../cluster/etcd-config.ts';
import { loadClusterTls } from '../../cluster/tls.ts';
import { toHexUpper, validatorAddress } from '../../cometbft/keys.ts';
import { loadConfig } from '../../config/load.ts';
import type { Config } from '../../config/types.ts';
import { StateMissingError, stateRemedy } from '../../store/errors.ts';
import { readChainState, STATE_DIR } from '../../store/file.ts';
import type { SignState } from '../../store/types.ts';
import { readAdminSecrets } from '../runtime/admin-secrets.ts';
import { assertHomeInitialised } from '../runtime/home.ts';
import { openNodeHsm } from '../runtime/hsm-keys.ts';

async function runCheck(o: { config: string }): Promise<void> {
  const config = await loadConfig(o.config);
  const home = config.node.home;
  await assertHomeInitialised(home);
  await readAdminSecrets(config);
  if (config.cluster !== undefined) {
    await clusterEtcdOptions(config.cluster, await loadClusterTls(config.cluster));
  }
  const states = config.cluster === undefined ? await singleNodeStates(config) : undefined;
  const { hsm, signers } = await openNodeHsm(config);
  try {
    await hsm.closeSigningSession();
  } finally {
    await hsm.close();
  }
  const out = process.stdout;
  out.write(`config ok: ${config.path}\n`);
  out.write(
    `  node ${config.node.id}, ${config.cluster === undefined ? 'single node' : 'cluster'}, home ${home}\n`,
  );
  out.write(`  token "${config.hsm.token_label}": login with the PIN works\n`);
  for (const [i, chain] of config.chains.entries()) {
    const signer = signers[i]!;
    const state = states?.[i];
    const hrs = state === undefined ? 'in etcd (not read)' : `${state.height}/${state.round}/${state.step}`;
    out.write(
      `  chain ${chain.id}: key "${chain.key_label}" ${chain.key_type} ` +
        `address ${toHexUpper(validatorAddress(signer.pubKey))}, last HRS ${hrs}\n`,
    );
  }
}

/**
 * Every chain's state as a single node's start reads it (verified, without the home lock); a
 * chain without one is refused as start refuses it.
 */
async function singleNodeStates(config: Config): Promise<SignState[]> {
  const states: SignState[] = [];
  for (const chain of config.chains) {
    const state = await readChainState(config.node.home, chain.id);
    if (state === undefined) {
      throw new StateMissingError(
        `chain ${JSON.stringify(chain.id)} has no sign state in ${join(config.node.home, STATE_DIR)}: ` +
          stateRemedy(chain.id, config.path),
      );
    }
    states.push(state);
  }
  return states;
}

/** Adds `cometkms config check`. */
export function registerConfig(program: Command): void {
  const config = program.command('config').description('check a configuration');
  config
    .command('check')
    .description(
      'validate everything start would (config, files and their modes, PKCS#11 module, token, keys, PIN, sign state) without opening a socket',
    )
    .requiredOption('--config <file>', 'config.toml to check')
    .action(async (o: { config: string }) => runCheck(o));
}
