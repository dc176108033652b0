import pkcs11js from 'pkcs11js';

/**
 * A PKCS#11 call that returned something other than CKR_OK. `ckr` is the symbolic name
 * ("CKR_PIN_INCORRECT"), `code` the numeric return value.
 */
export class Pkcs11Error extends Error {
  readonly ckr: string;
  readonly code: number;

  constructor(ckr: string, code: number, call?: string) {
    super(call ? `${call} failed: ${ckr} (0x${code.toString(16)})` : `${ckr} (0x${code.toString(16)})`);
    this.name = 'Pkcs11Error';
    this.ckr = ckr;
    this.code = code;
  }
}

/**
 * A failure that is not a PKCS#11 return value: token or key not found, duplicate label, wrong
 * key type, a signature that does not verify, no signing session, bad input.
 */
export class HsmError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HsmError';
  }
}

/**
 * The token was not among the module's initialised tokens. Besides a wrong label or a missing
 * token this can be transient with a file-backed module (see openHsm), so openHsm retries it.
 */
export class TokenNotFoundError extends HsmError {
  constructor(message: string) {
    super(message);
    this.name = 'TokenNotFoundError';
  }
}

/** CKR code → name, from the constants pkcs11js exports. */
const CKR_NAMES: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [key, value] of Object.entries(pkcs11js)) {
    if (key.startsWith('CKR_') && typeof value === 'number' && !names.has(value)) names.set(value, key);
  }
  return names;
})();

/** The symbolic name of a CKR code, or its hex form when pkcs11js does not know it (vendor codes). */
export function ckrName(code: number): string {
  return CKR_NAMES.get(code) ?? `CKR_0x${code.toString(16)}`;
}

const CKR_IN_TEXT = /(CKR_[A-Z0-9_]+):(\d+)/;

/**
 * Turns whatever a pkcs11js call threw into a {@link Pkcs11Error} when it carries a CKR value.
 * pkcs11js throws its own Pkcs11Error for most calls, but some paths (async callbacks, native
 * errors) throw a plain `Error("CKR_X:n")`, so the text is parsed as well. Anything else (a
 * TypeError from bad arguments, a native loader error) is returned unchanged.
 */
export function normalizeError(err: unknown, call?: string): Error {
  if (err instanceof Pkcs11Error || err instanceof HsmError) return err;
  if (!(err instanceof Error)) return new Error(String(err));
  const code = (err as { code?: unknown }).code;
  if (/^CKR_[A-Z0-9_]+$/.test(err.message) && typeof code === 'number') {
    return new Pkcs11Error(err.message, code, call);
  }
  const match = CKR_IN_TEXT.exec(err.message) ?? CKR_IN_TEXT.exec(err.stack ?? '');
  if (match?.[1] !== undefined && match[2] !== undefined) {
    const n = Number(match[2]);
    return new Pkcs11Error(CKR_NAMES.get(n) ?? match[1], n, call);
  }
  return err;
}

/** Runs a synchronous PKCS#11 call and rethrows its failure as a normalised error. */
export function p11<T>(call: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw normalizeError(err, call);
  }
}

/** Awaits an asynchronous PKCS#11 call and rethrows its failure as a normalised error. */
export async function p11Async<T>(call: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw normalizeError(err, call);
  }
}

/** True when `err` is a PKCS#11 error with the given CKR name. */
export function isCkr(err: unknown, ckr: string): boolean {
  return err instanceof Pkcs11Error && err.ckr === ckr;
}
