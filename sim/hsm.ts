/**
 * A simulated HSM per node: the validator key in memory, a signing session that only the serving
 * leader opens, a latency per signature, failures on command, and a witness: every signature is
 * reported to the checker at the moment the HSM makes it.
 */
import { createPrivateKey, sign as cryptoSign } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import type { SigningSession } from '../src/cluster/role.ts';
import type { PubKey } from '../src/cometbft/types.ts';
import type { Signer } from '../src/guard/signer.ts';
import type { Checker } from './checker.ts';
import type { Owner, Scheduler } from './scheduler.ts';

/** The one validator key of the simulation (fixed: runs are reproducible). */
const SECRET = new Uint8Array(32).fill(42);
export const PUBKEY: PubKey = { type: 'ed25519', bytes: ed25519.getPublicKey(SECRET) };
/** The same key for OpenSSL, which signs ~20× faster than pure JS (ed25519 is deterministic). */
const PRIVATE_KEY = createPrivateKey({
  key: {
    kty: 'OKP',
    crv: 'Ed25519',
    d: Buffer.from(SECRET).toString('base64url'),
    x: Buffer.from(PUBKEY.bytes).toString('base64url'),
  },
  format: 'jwk',
});

export class SimHsm implements Signer, SigningSession {
  readonly pubKey = PUBKEY;
  #open = false;
  #inFlight = 0;
  #idle: Array<() => void> = [];
  /** chance that one signature fails (an HSM error) */
  failRate = 0;

  constructor(
    private readonly s: Scheduler,
    private readonly owner: Owner,
    private readonly node: string,
    private readonly checker: Checker,
  ) {}

  get isOpen(): boolean {
    return this.#open;
  }

  open(): Promise<void> {
    return new Promise((resolve) =>
      this.s.at(
        this.s.between(1, 3),
        () => {
          this.#open = true;
          resolve();
        },
        this.owner,
      ),
    );
  }

  /** Closes the session once the signature in progress (if any) is done. */
  async close(): Promise<void> {
    if (this.#inFlight > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
    this.#open = false;
  }

  sign(message: Uint8Array): Promise<Uint8Array> {
    this.#inFlight++;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.s.at(
        this.s.between(1, 2),
        () => {
          this.#done();
          if (!this.#open) {
            reject(new Error('CKR_USER_NOT_LOGGED_IN: no signing session'));
            return;
          }
          if (this.s.rng.chance(this.failRate)) {
            reject(new Error('CKR_DEVICE_ERROR (simulated)'));
            return;
          }
          this.checker.signed(this.node, message);
          resolve(new Uint8Array(cryptoSign(null, message, PRIVATE_KEY)));
        },
        this.owner,
      );
    });
  }

  #done(): void {
    this.#inFlight--;
    if (this.#inFlight === 0) for (const wake of this.#idle.splice(0)) wake();
  }
}
