/**
 * The check that `cometkms init` prepared a home. It lives with the commands, above privval
 * (transport identity) and store (state directory), whose layout it checks.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../../config/load.ts';
import { loadIdentity } from '../../privval/identity.ts';
import { STATE_DIR } from '../../store/file.ts';

/**
 * Throws a ConfigError unless `cometkms init` prepared `home`: the directory, its state
 * directory and the privval transport identity must exist. The config file is not looked for
 * here: whoever calls this has already loaded one, and it may live outside the home (e.g.
 * /etc/cometkms).
 */
export async function assertHomeInitialised(home: string): Promise<void> {
  const notInitialised = (why: string) =>
    new ConfigError(`home ${home} is not initialised: run \`cometkms init --home ${home}\` first (${why})`);
  for (const dir of [home, join(home, STATE_DIR)]) {
    const isDir = await stat(dir).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (!isDir) throw notInitialised(`${dir} is not a directory`);
  }
  try {
    await loadIdentity(home);
  } catch (err) {
    throw notInitialised((err as Error).message);
  }
}
