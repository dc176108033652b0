import { readSecretFile } from '../config/secrets.ts';
import { HsmError } from './errors.ts';

/** Environment variable that holds the user PIN when no pin file is configured. */
export const PIN_ENV = 'COMETKMS_HSM_PIN';

/**
 * The HSM user PIN: from `pinFile` when given (one trailing newline removed; a file readable by
 * group or others is refused), else from COMETKMS_HSM_PIN. A PIN is never taken from the
 * command line, where `ps` shows it to every user of the machine.
 */
export async function readPin(pinFile?: string): Promise<string> {
  if (pinFile !== undefined) return readSecretFile(pinFile, 'HSM PIN');
  const pin = process.env[PIN_ENV];
  if (pin === undefined || pin === '') {
    throw new HsmError(`no HSM PIN: configure hsm.pin_file (or --pin-file) or set ${PIN_ENV}`);
  }
  return pin;
}
