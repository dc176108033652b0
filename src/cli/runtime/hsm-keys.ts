/**
 * Startup checks against the token: every chain's key must exist with the configured type, and
 * the PIN must open the signing session. Each failure is an error naming what to fix, thrown
 * before any validator is dialed.
 */
import type { ChainSection } from '../../config/types.ts';
import type { Hsm, HsmSigner } from '../../pkcs11/hsm.ts';
import { PIN_ENV } from '../../pkcs11/pin.ts';

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
      throw new Error(
        `chain ${JSON.stringify(chain.id)}: key_label ${JSON.stringify(chain.key_label)} ` +
          `(key_type ${chain.key_type}) is not usable on token ${JSON.stringify(hsm.tokenLabel)}: ` +
          `${(err as Error).message}. Create it with \`cometkms keys generate\` or \`cometkms keys import\`, ` +
          'or fix [[chain]] key_label / key_type',
      );
    }
  });
}

/**
 * Logs in and opens the signing session. A single node is always the leader, so it signs from
 * the start. `pinFile` (undefined: the environment) says where the PIN came from, for the error message.
 */
export async function openSigningSession(hsm: Hsm, pin: string, pinFile: string | undefined): Promise<void> {
  try {
    await hsm.openSigningSession(pin);
  } catch (err) {
    const source = pinFile === undefined ? `environment variable ${PIN_ENV}` : `hsm.pin_file ${pinFile}`;
    throw new Error(
      `cannot log in to token ${JSON.stringify(hsm.tokenLabel)} with the PIN from ${source}: ${(err as Error).message}`,
    );
  }
}
