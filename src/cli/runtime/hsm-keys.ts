/**
 * Startup checks against the token: the PKCS#11 module and profile load, the token is there,
 * every chain's key exists with the configured type, and the PIN opens the signing session.
 * Each failure is an HsmError naming what to fix, thrown before any validator is dialed. `start`
 * and `config check` both go through {@link openNodeHsm}.
 */
import type { ChainSection, Config } from '../../config/types.ts';
import { HsmError } from '../../pkcs11/errors.ts';
import { type Hsm, type HsmSigner, openHsm } from '../../pkcs11/hsm.ts';
import { PIN_ENV, readPin } from '../../pkcs11/pin.ts';
import { loadProfile } from '../../pkcs11/profiles.ts';

/** The token of a node with every chain's signer, logged in (the signing session is open). */
export interface NodeHsm {
  hsm: Hsm;
  pin: string;
  /** one per [[chain]], in config order */
  signers: HsmSigner[];
}

/**
 * Opens the token of `config.hsm`, finds every chain's key, reads the PIN and opens the signing
 * session with it. On any failure the token is closed again before the error is thrown.
 */
export async function openNodeHsm(config: Config): Promise<NodeHsm> {
  const profile = await loadProfile(config.hsm.profile);
  const hsm = await openHsm({ module: config.hsm.module, tokenLabel: config.hsm.token_label, profile });
  try {
    const pin = await readPin(config.hsm.pin_file);
    const signers = findChainSigners(hsm, config.chains);
    await openSigningSession(hsm, pin, config.hsm.pin_file);
    return { hsm, pin, signers };
  } catch (err) {
    await hsm.close();
    throw err;
  }
}

/**
 * The signer of every chain, in config order; throws on the first chain whose key is unusable.
 * They are the guards' signers, and a guard verifies every signature before it returns it
 * (SECURITY.md protection 6), so the PKCS#11 layer does not verify it a second time.
 */
export function findChainSigners(hsm: Hsm, chains: ChainSection[]): HsmSigner[] {
  return chains.map((chain) => {
    try {
      return hsm.signer(chain.key_label, chain.key_type, { verifiedByCaller: true });
    } catch (err) {
      throw new HsmError(
        `chain ${JSON.stringify(chain.id)}: key_label ${JSON.stringify(chain.key_label)} ` +
          `(key_type ${chain.key_type}) is not usable on token ${JSON.stringify(hsm.tokenLabel)}: ` +
          `${(err as Error).message}. Create it with \`cometkms keys generate\` or \`cometkms keys import\`, ` +
          'or fix [[chain]] key_label / key_type',
        { cause: err },
      );
    }
  });
}

/**
 * Logs in and opens the signing session. `pinFile` (undefined: the environment) says where the
 * PIN came from, for the error message.
 */
export async function openSigningSession(hsm: Hsm, pin: string, pinFile: string | undefined): Promise<void> {
  try {
    await hsm.openSigningSession(pin);
  } catch (err) {
    const source = pinFile === undefined ? `environment variable ${PIN_ENV}` : `hsm.pin_file ${pinFile}`;
    throw new HsmError(
      `cannot log in to token ${JSON.stringify(hsm.tokenLabel)} with the PIN from ${source}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}
