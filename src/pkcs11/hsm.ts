import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { sha256 } from '@noble/hashes/sha2.js';
import pkcs11js from 'pkcs11js';
import { bytesEqual } from '../cometbft/bytes.ts';
import { publicKeyFromPrivate } from '../cometbft/keys.ts';
import type { KeyType, PubKey } from '../cometbft/types.ts';
import { normalizeLowS, verifySignature } from '../cometbft/verify.ts';
import type { Signer } from '../guard/signer.ts';
import { CKK_EC_EDWARDS } from './constants.ts';
import { ecPointForImport, keyTypeOfEcParams, pubKeyFromEcPoint } from './ec.ts';
import { HsmError, isCkr, Pkcs11Error, p11, p11Async, TokenNotFoundError } from './errors.ts';
import { acquireModule, type LoadedModule, releaseModule, tokenLabel } from './module.ts';
import { Mutex } from './mutex.ts';
import { DEFAULT_KEY_TYPES, type HsmProfile, type KeyTypeSupport } from './profiles.ts';

type Handle = pkcs11js.Handle;

/** Where the token is and how to talk to it. */
export interface HsmOptions {
  /** path of the PKCS#11 module (.so) */
  module: string;
  /** CKA token label; the slot is found by it because slot ids change when a token is initialised */
  tokenLabel: string;
  /** serial number, needed only when two tokens share a label */
  tokenSerial?: string;
  /** HSM family profile; absent: PKCS#11 v3.0 defaults (what SoftHSM 2.6 expects) */
  profile?: HsmProfile;
}

/** One key pair on the token, as `listKeys` reports it. */
export interface KeyInfo {
  label: string;
  type: KeyType;
  pubKey: PubKey;
  /** CKA_ID in hex */
  id: string;
}

/** PIN failures after which another login attempt would only bring the token closer to locking. */
const PIN_FAILURES = new Set([
  'CKR_PIN_INCORRECT',
  'CKR_PIN_INVALID',
  'CKR_PIN_LEN_RANGE',
  'CKR_PIN_EXPIRED',
  'CKR_PIN_LOCKED',
]);

/** Return values after which the signing session can no longer be used and must be reopened. */
const SESSION_LOST = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_DEVICE_REMOVED',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_DEVICE_ERROR',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
]);

/** Minimum time between two attempts to reopen a lost signing session. */
const REOPEN_INTERVAL_MS = 500;

/** A stale object handle: the cached key handle is dropped so the next sign looks it up again. */
const HANDLE_LOST = new Set(['CKR_OBJECT_HANDLE_INVALID', 'CKR_KEY_HANDLE_INVALID']);

/** Output buffer for C_Sign: larger than any signature we accept, so CKR_BUFFER_TOO_SMALL (which would leave the operation active) cannot happen. */
const SIGN_BUFFER_LEN = 256;
const SIGNATURE_LEN = 64;
/** Upper bound on objects read per C_FindObjects call. */
const FIND_BATCH = 64;
/** Message signed and verified right after a key is generated or imported. */
const SELF_TEST_MESSAGE = new TextEncoder().encode('cometkms key self-test');

/** The logged-in session the leader signs with. */
interface SigningSession {
  session: Handle;
  /** serialises C_SignInit + C_Sign: the pair is not atomic across the await */
  lock: Mutex;
  /** private key handles by "type:label"; valid only for this session */
  keys: Map<string, Handle>;
  /** settled-never-rejecting mirrors of the signatures running in this session */
  inflight: Set<Promise<void>>;
  /** set when closing starts or the session was lost: no new signature may start */
  stopped: boolean;
  /** whether our C_Login made the token logged in (so closing must log out) */
  loggedInByUs: boolean;
  /**
   * The key ("type:label") whose C_SignInit already ran in `session` for the next signature
   * (#armNext); undefined while no sign operation is active in it.
   */
  armed: string | undefined;
}

/**
 * Attempts, and the pause between them, for a token that is missing or answers
 * CKR_GENERAL_ERROR while it is being opened or logged in to. SoftHSM keeps a token in files that
 * each process rereads, and a process reading them while another rewrites them (every C_Login
 * does) can miss the token or get CKR_GENERAL_ERROR: measured 35 missing tokens and 3 failed
 * logins in 5,457 opens beside a process logging in without pause. Nodes started together on
 * one host share a token that way, so these failures are retried a bounded number of times;
 * nothing else is, and a PIN failure never is (#login).
 */
const TRANSIENT_TOKEN_ATTEMPTS = 5;
const TRANSIENT_TOKEN_RETRY_MS = 100;

function isTransientTokenError(err: unknown): boolean {
  return err instanceof TokenNotFoundError || isCkr(err, 'CKR_GENERAL_ERROR');
}

/** Opens the token labelled `opts.tokenLabel` in module `opts.module`. No login happens here. */
export async function openHsm(opts: HsmOptions): Promise<Hsm> {
  for (let attempt = 1; ; attempt++) {
    const module = acquireModule(opts.module);
    try {
      const slot = findSlot(module, opts.tokenLabel, opts.tokenSerial);
      // A read-only public session: enough to find public keys, so followers can check health.
      const session = p11('C_OpenSession', () =>
        module.pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION),
      );
      return new Hsm(module, slot, session, opts);
    } catch (err) {
      // Releasing the last share finalises the module: the next C_Initialize reads the token anew.
      releaseModule(module);
      if (attempt >= TRANSIENT_TOKEN_ATTEMPTS || !isTransientTokenError(err)) throw err;
    }
    await delay(TRANSIENT_TOKEN_RETRY_MS);
  }
}

function findSlot(module: LoadedModule, label: string, serial: string | undefined): Handle {
  const pk = module.pkcs11;
  const slots = p11('C_GetSlotList', () => pk.C_GetSlotList(true));
  const seen: string[] = [];
  const matches: Handle[] = [];
  for (const slot of slots) {
    const info = p11('C_GetTokenInfo', () => pk.C_GetTokenInfo(slot));
    // Uninitialised tokens have a blank label and cannot hold keys.
    if ((info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0) continue;
    const found = tokenLabel(info);
    const tokenSerial = info.serialNumber.trim();
    seen.push(`"${found}" (serial ${tokenSerial})`);
    if (found === label && (serial === undefined || tokenSerial === serial)) matches.push(slot);
  }
  const which = serial === undefined ? `"${label}"` : `"${label}" with serial ${serial}`;
  if (matches.length === 0) {
    throw new TokenNotFoundError(
      `token ${which} not found in ${module.path} (tokens present: ${seen.length ? seen.join(', ') : 'none'})`,
    );
  }
  if (matches.length > 1) {
    throw new HsmError(
      `${matches.length} tokens are labelled "${label}"; configure the token serial as well`,
    );
  }
  return matches[0] as Handle;
}

/**
 * One token of a PKCS#11 module. Public keys can be read at any time without a PIN; signing
 * needs the signing session, which the cluster opens while this node is leader.
 */
export class Hsm {
  readonly #module: LoadedModule;
  readonly #slot: Handle;
  readonly #publicSession: Handle;
  readonly #keyTypes: Partial<Record<KeyType, KeyTypeSupport>>;
  readonly #setAllowedMechanisms: boolean;
  readonly #tokenLabel: string;
  /** serialises session open/close, key creation and close() */
  readonly #admin = new Mutex();
  #signing: SigningSession | undefined;
  #closed = false;
  /** a PIN failure seen earlier: further logins are refused rather than retried */
  #loginRefused: Pkcs11Error | undefined;
  /** set by openSigningSession, cleared by closeSigningSession/close: a signing session is wanted */
  #wantedPin: string | undefined;
  /**
   * when a lost signing session was last reopened (ms, monotonic: a wall clock stepped back
   * would rate-limit every reopen until it caught up, and signing would stop that long)
   */
  #lastReopen = Number.NEGATIVE_INFINITY;
  /** the key ("type:label") of the last signature, for #severalKeys */
  #lastKey: string | undefined;
  /** set once two keys have signed through this instance: from then on nothing is armed */
  #severalKeys = false;

  /** Use {@link openHsm}. */
  constructor(module: LoadedModule, slot: Handle, publicSession: Handle, opts: HsmOptions) {
    this.#module = module;
    this.#slot = slot;
    this.#publicSession = publicSession;
    this.#keyTypes = opts.profile?.keyTypes ?? DEFAULT_KEY_TYPES;
    this.#setAllowedMechanisms = opts.profile?.setAllowedMechanisms ?? true;
    this.#tokenLabel = opts.tokenLabel;
  }

  /** The label of the token this instance talks to. */
  get tokenLabel(): string {
    return this.#tokenLabel;
  }

  /** True while a logged-in signing session is open and usable. */
  get signingSessionOpen(): boolean {
    return this.#signing !== undefined && !this.#signing.stopped;
  }

  /**
   * The public key labelled `label`, which must be of `type`. Needs no login, so a follower can
   * use it as a health check of the HSM.
   */
  findPublicKey(label: string, type: KeyType): PubKey {
    this.#assertOpen();
    const handle = this.#findOne(this.#publicSession, pkcs11js.CKO_PUBLIC_KEY, label, 'public key');
    const actual = this.#keyTypeOf(this.#publicSession, handle);
    if (actual !== type) {
      throw new HsmError(`key "${label}" is ${actual ?? 'of an unsupported type'}, not ${type}`);
    }
    return this.#readPubKey(this.#publicSession, handle, type);
  }

  /** Every ed25519 and secp256k1 public key on the token (other objects are skipped). */
  listKeys(): KeyInfo[] {
    this.#assertOpen();
    return this.#listKeys(this.#publicSession);
  }

  #listKeys(s: Handle): KeyInfo[] {
    const out: KeyInfo[] = [];
    for (const handle of this.#find(s, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }])) {
      const type = this.#keyTypeOf(s, handle);
      if (type === undefined) continue;
      const [label, id] = p11('C_GetAttributeValue', () =>
        this.#module.pkcs11.C_GetAttributeValue(s, handle, [
          { type: pkcs11js.CKA_LABEL },
          { type: pkcs11js.CKA_ID },
        ]),
      );
      out.push({
        label: label?.value?.toString('utf8') ?? '',
        type,
        pubKey: this.#readPubKey(s, handle, type),
        id: id?.value?.toString('hex') ?? '',
      });
    }
    return out.sort((a, b) => a.label.localeCompare(b.label));
  }

  /**
   * Logs in and opens the session signatures are made in. Idempotent. A PIN is tried at most
   * once per call (only a CKR_GENERAL_ERROR, no verdict on the PIN, is tried again) and never
   * after a PIN failure: real HSMs lock the user after a few wrong PINs, so a leader flapping with
   * a bad PIN must not keep trying.
   */
  async openSigningSession(pin: string): Promise<void> {
    this.#wantedPin = pin;
    try {
      await this.#admin.run(() => this.#openSigningLocked(pin));
    } catch (err) {
      // Nothing is open: signatures must not keep trying to open it on the caller's behalf.
      if (this.#wantedPin === pin) this.#wantedPin = undefined;
      throw err;
    }
  }

  /** The body of openSigningSession, run under the admin lock. */
  async #openSigningLocked(pin: string): Promise<void> {
    this.#assertOpen();
    if (this.#signing && !this.#signing.stopped) return;
    // A session lost to a token error is torn down before a fresh one is opened; its key
    // handles die with it and are looked up again in the new session.
    if (this.#signing) await this.#teardownSigning(this.#signing);
    const pk = this.#module.pkcs11;
    const session = p11('C_OpenSession', () => pk.C_OpenSession(this.#slot, pkcs11js.CKF_SERIAL_SESSION));
    let loggedInByUs: boolean;
    try {
      loggedInByUs = await this.#login(session, pin);
    } catch (err) {
      p11('C_CloseSession', () => pk.C_CloseSession(session));
      throw err;
    }
    this.#signing = {
      session,
      lock: new Mutex(),
      keys: new Map(),
      inflight: new Set(),
      stopped: false,
      loggedInByUs,
      armed: undefined,
    };
  }

  /**
   * Reopens a signing session the token lost (CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED,
   * ...) while one is still wanted, i.e. between openSigningSession and closeSigningSession:
   * without this a single node, or a leader that keeps its lease, would answer "retry" forever
   * after one token hiccup (found by the chaos harness, hsm-fail / hsm-close-session). Re-checked
   * under the admin lock, so a close that was asked for first wins and a follower never gets a
   * session back. Attempts are rate-limited; a refused PIN is never retried (#login).
   */
  async #reopenLostSession(pin: string): Promise<void> {
    const now = performance.now();
    if (now - this.#lastReopen < REOPEN_INTERVAL_MS) {
      throw new HsmError('the HSM signing session was lost; the next reopen attempt is rate-limited');
    }
    this.#lastReopen = now;
    await this.#admin.run(async () => {
      if (this.#wantedPin !== pin || this.#closed) return;
      await this.#openSigningLocked(pin);
    });
  }

  /** Stops new signatures, waits for the running ones, logs out and closes the session. */
  async closeSigningSession(): Promise<void> {
    this.#wantedPin = undefined;
    await this.#admin.run(async () => {
      if (this.#signing) await this.#teardownSigning(this.#signing);
    });
  }

  /**
   * A {@link Signer} for the key pair labelled `label`. Its public key is read now (no login
   * needed); signing needs an open signing session. Every signature is verified against the
   * public key before `sign` returns it, unless `verifiedByCaller`: for the HRS guard, which
   * verifies every signature itself before it returns one (verifying the same bytes twice with
   * the same key adds nothing but a second ed25519 verification, a large share of a signature's
   * cost). Low-S normalisation is done either way.
   */
  signer(label: string, type: KeyType, opts: { verifiedByCaller?: boolean } = {}): HsmSigner {
    const pubKey = this.findPublicKey(label, type);
    const verify = opts.verifiedByCaller !== true;
    return new HsmSigner(label, pubKey, (message) => this.#sign(label, pubKey, message, verify));
  }

  /**
   * Generates a key pair inside the token: persistent, sensitive, non-extractable,
   * unmodifiable, restricted to its signing mechanism. Refuses a label that is already used.
   */
  async generateKey(label: string, type: KeyType, pin: string): Promise<PubKey> {
    const support = this.#support(type, false);
    return this.#withLogin(pin, async (session) => {
      this.#assertLabelFree(session, label);
      const pk = this.#module.pkcs11;
      const id = randomBytes(8);
      const { publicKey, privateKey } = await p11Async('C_GenerateKeyPair', () =>
        pk.C_GenerateKeyPairAsync(
          session,
          { mechanism: support.keyGenMechanism },
          [
            ...this.#publicTemplate(type, label, id),
            { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from(support.ecParams) },
          ],
          this.#privateTemplate(type, label, id, support),
        ),
      );
      try {
        const pubKey = this.#readPubKey(session, publicKey, type);
        await this.#selfTest(session, privateKey, pubKey, support, label);
        return pubKey;
      } catch (err) {
        this.#destroy(session, [publicKey, privateKey]);
        throw err;
      }
    });
  }

  /**
   * Imports a 32-byte private key (ed25519 seed or secp256k1 scalar) as a token key with the
   * same protections as a generated one. The pair is test-signed before this returns; on any
   * failure the objects are destroyed again.
   */
  async importKey(label: string, type: KeyType, privateKey: Uint8Array, pin: string): Promise<PubKey> {
    const support = this.#support(type, true);
    // SoftHSM accepts a 64-byte ed25519 value (seed‖pub) without complaint and only fails when
    // signing, so the length is checked here.
    if (privateKey.length !== 32) {
      throw new HsmError(`a ${type} private key must be 32 bytes, got ${privateKey.length}`);
    }
    let pubKey: PubKey;
    try {
      pubKey = publicKeyFromPrivate(type, privateKey);
    } catch (err) {
      throw new HsmError(`invalid ${type} private key: ${(err as Error).message}`, { cause: err });
    }
    return this.#withLogin(pin, async (session) => {
      this.#assertLabelFree(session, label);
      // Two labels for one key would let two configurations, each with its own guard and sign
      // state, sign with the same key without anyone noticing.
      const twin = this.#listKeys(session).find(
        (k) => k.type === type && bytesEqual(k.pubKey.bytes, pubKey.bytes),
      );
      if (twin !== undefined) {
        throw new HsmError(
          `token "${this.#tokenLabel}" already holds this ${type} key, labelled "${twin.label}": ` +
            'a key is imported once, under one label',
        );
      }
      const pk = this.#module.pkcs11;
      const id = randomBytes(8);
      const created: Handle[] = [];
      try {
        created.push(
          p11('C_CreateObject', () =>
            pk.C_CreateObject(session, [
              ...this.#privateTemplate(type, label, id, support),
              { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from(support.ecParams) },
              { type: pkcs11js.CKA_VALUE, value: Buffer.from(privateKey) },
            ]),
          ),
        );
        created.push(
          p11('C_CreateObject', () =>
            pk.C_CreateObject(session, [
              ...this.#publicTemplate(type, label, id),
              { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from(support.ecParams) },
              { type: pkcs11js.CKA_EC_POINT, value: Buffer.from(ecPointForImport(pubKey)) },
            ]),
          ),
        );
        const stored = this.#readPubKey(session, created[1] as Handle, type);
        if (!bytesEqual(stored.bytes, pubKey.bytes)) {
          throw new HsmError(`token stored a different public key for "${label}"`);
        }
        await this.#selfTest(session, created[0] as Handle, pubKey, support, label);
        return pubKey;
      } catch (err) {
        this.#destroy(session, created);
        throw err;
      }
    });
  }

  /**
   * Destroys the key pair labelled `label` (its public and its private key object) for good.
   * Refuses while this process has a signing session open, and when the label names no key or
   * more than one object of a class. Returns what was deleted, for the operator's record.
   */
  async deleteKey(label: string, pin: string): Promise<{ type: KeyType | undefined; pubKey?: PubKey }> {
    if (this.#signing !== undefined) throw new HsmError('refusing to delete a key while signing');
    return this.#withLogin(pin, async (session) => {
      const objects = (cls: number) =>
        this.#find(session, [
          { type: pkcs11js.CKA_CLASS, value: cls },
          { type: pkcs11js.CKA_LABEL, value: label },
        ]);
      const publicKeys = objects(pkcs11js.CKO_PUBLIC_KEY);
      const privateKeys = objects(pkcs11js.CKO_PRIVATE_KEY);
      if (publicKeys.length === 0 && privateKeys.length === 0) {
        throw new HsmError(`no key labelled "${label}" on token "${this.#tokenLabel}"`);
      }
      if (publicKeys.length > 1 || privateKeys.length > 1) {
        throw new HsmError(
          `several keys are labelled "${label}" on token "${this.#tokenLabel}"; delete them with the vendor's tools`,
        );
      }
      const [pub] = publicKeys;
      const type = this.#keyTypeOf(session, (pub ?? privateKeys[0]) as Handle);
      const pubKey =
        pub !== undefined && type !== undefined ? this.#readPubKey(session, pub, type) : undefined;
      // Private key first: once it is gone nothing can sign, whatever happens to the public half.
      for (const h of [...privateKeys, ...publicKeys]) {
        p11('C_DestroyObject', () => this.#module.pkcs11.C_DestroyObject(session, h));
      }
      return pubKey === undefined ? { type } : { type, pubKey };
    });
  }

  /**
   * Drains and closes everything; the module is finalised when the last {@link Hsm} of the
   * process closes. Idempotent.
   */
  async close(): Promise<void> {
    this.#wantedPin = undefined;
    await this.#admin.run(async () => {
      if (this.#closed) return;
      this.#closed = true;
      if (this.#signing) await this.#teardownSigning(this.#signing);
      try {
        p11('C_CloseSession', () => this.#module.pkcs11.C_CloseSession(this.#publicSession));
      } finally {
        releaseModule(this.#module);
      }
    });
  }

  /** One signature; a session the token lost is reopened first while one is wanted. */
  #sign(label: string, pubKey: PubKey, message: Uint8Array, verify: boolean): Promise<Uint8Array> {
    const s = this.#signing;
    const pin = this.#wantedPin;
    if (pin !== undefined && !this.#closed && (s === undefined || s.stopped)) {
      return this.#reopenLostSession(pin).then(() => this.#signTracked(label, pubKey, message, verify));
    }
    return this.#signTracked(label, pubKey, message, verify);
  }

  /** One signature in the current session, tracked so that closing waits for it. */
  #signTracked(label: string, pubKey: PubKey, message: Uint8Array, verify: boolean): Promise<Uint8Array> {
    const s = this.#signing;
    if (this.#closed || s === undefined || s.stopped) {
      return Promise.reject(new HsmError('no HSM signing session is open (this node is not the leader)'));
    }
    const op = this.#signIn(s, label, pubKey, message, verify);
    const settled = op.then(
      () => undefined,
      () => undefined,
    );
    s.inflight.add(settled);
    void settled.then(() => s.inflight.delete(settled));
    return op;
  }

  async #signIn(
    s: SigningSession,
    label: string,
    pubKey: PubKey,
    message: Uint8Array,
    verify: boolean,
  ): Promise<Uint8Array> {
    const type = pubKey.type;
    const support = this.#support(type, false);
    // CometBFT sign bytes are never empty; pkcs11js cannot pass an empty buffer to C_Sign.
    if (message.length === 0) throw new HsmError('refusing to sign an empty message');
    const raw = await s.lock.run(async () => {
      // Re-checked under the lock: the session may have stopped while this call waited.
      if (s.stopped) throw new HsmError('the HSM signing session closed before this signature started');
      const cacheKey = `${type}:${label}`;
      if (this.#lastKey !== undefined && this.#lastKey !== cacheKey) this.#severalKeys = true;
      this.#lastKey = cacheKey;
      // An operation armed for another key cannot be cancelled (PKCS#11 2.40): start afresh.
      if (s.armed !== undefined && s.armed !== cacheKey) {
        this.#replaceSession(s);
        if (s.stopped) throw new HsmError('the HSM signing session could not be replaced');
      }
      let key = s.keys.get(cacheKey);
      if (key === undefined) {
        key = this.#findPrivateKey(s.session, label, type);
        s.keys.set(cacheKey, key);
      }
      const armed = s.armed === cacheKey;
      // C_Sign ends the operation, whether it succeeds or fails.
      s.armed = undefined;
      try {
        const raw = await this.#rawSign(s.session, key, support, type, message, armed);
        this.#armNext(s, cacheKey, support);
        return raw;
      } catch (err) {
        if (err instanceof Pkcs11Error && HANDLE_LOST.has(err.ckr)) s.keys.delete(cacheKey);
        if (err instanceof Pkcs11Error && SESSION_LOST.has(err.ckr)) s.stopped = true;
        else this.#replaceSession(s);
        throw err;
      }
    });
    return finishSignature(pubKey, message, raw, label, verify);
  }

  /**
   * C_SignInit (unless `armed`: #armNext already ran it) + C_Sign with the mechanism of `type`;
   * secp256k1 signs SHA-256 of the message.
   */
  async #rawSign(
    session: Handle,
    key: Handle,
    support: KeyTypeSupport,
    type: KeyType,
    message: Uint8Array,
    armed: boolean,
  ): Promise<Uint8Array> {
    const pk = this.#module.pkcs11;
    const data = type === 'ed25519' ? message : sha256(message);
    if (!armed) p11('C_SignInit', () => pk.C_SignInit(session, { mechanism: support.signMechanism }, key));
    const sig = await p11Async('C_Sign', () =>
      pk.C_SignAsync(session, Buffer.from(data), Buffer.alloc(SIGN_BUFFER_LEN)),
    );
    return Uint8Array.from(sig);
  }

  /**
   * Runs the next signature's C_SignInit now, off the request path: a signature then needs only
   * C_Sign, and C_SignInit (about 0.07 ms with SoftHSM, more after idle) no longer delays the
   * reply. C_SignInit only selects key and mechanism; nothing is signed until C_Sign gets the
   * bytes the guard reserved, so an armed operation never signs anything by itself. It runs
   * under the session lock once the current callbacks are done (a signature already waiting
   * goes first), and not at all once the session stopped or two keys signed through this
   * instance (a session holds one operation, and one armed for the other key would cost a
   * session swap). A failed C_SignInit leaves no operation active: the next signature then
   * calls C_SignInit itself and meets the error on its own path. Closing the session ends an
   * armed operation.
   */
  #armNext(s: SigningSession, cacheKey: string, support: KeyTypeSupport): void {
    if (this.#severalKeys) return;
    setImmediate(() => {
      void s.lock.run(() => {
        const key = s.keys.get(cacheKey);
        if (s.stopped || s.armed !== undefined || this.#severalKeys || key === undefined) return;
        try {
          this.#module.pkcs11.C_SignInit(s.session, { mechanism: support.signMechanism }, key);
          s.armed = cacheKey;
        } catch {
          // unarmed: see above
        }
      });
    });
  }

  /**
   * Swaps the signing session for a fresh one after a failed sign. A C_Sign that fails before
   * reaching the token (e.g. rejected arguments) leaves the C_SignInit operation active, and
   * PKCS#11 2.40 has no way to cancel it: every later call on that session would fail with
   * CKR_OPERATION_ACTIVE. The login survives because it belongs to the token, not the session
   * (the public session keeps it alive). Object handles are looked up again afterwards.
   */
  #replaceSession(s: SigningSession): void {
    const pk = this.#module.pkcs11;
    s.keys.clear();
    s.armed = undefined;
    try {
      pk.C_CloseSession(s.session);
    } catch {
      // The session is being discarded; a failure to close it changes nothing below.
    }
    try {
      s.session = p11('C_OpenSession', () => pk.C_OpenSession(this.#slot, pkcs11js.CKF_SERIAL_SESSION));
    } catch {
      // No usable session: the next signature reopens one (#reopenLostSession).
      s.stopped = true;
    }
  }

  async #teardownSigning(s: SigningSession): Promise<void> {
    s.stopped = true;
    // Every signature already started finishes before the session goes away: closing or
    // finalising under a running C_Sign crashes SoftHSM.
    await Promise.all([...s.inflight]);
    await s.lock.run(() => undefined);
    const pk = this.#module.pkcs11;
    try {
      if (s.loggedInByUs) {
        try {
          p11('C_Logout', () => pk.C_Logout(s.session));
        } catch (err) {
          // Already logged out (token reset, session lost): the goal is reached.
          if (!(err instanceof Pkcs11Error)) throw err;
        }
      }
      try {
        p11('C_CloseSession', () => pk.C_CloseSession(s.session));
      } catch (err) {
        if (!(err instanceof Pkcs11Error)) throw err;
      }
    } finally {
      if (this.#signing === s) this.#signing = undefined;
    }
  }

  /**
   * C_Login as the user: once, or again only after CKR_GENERAL_ERROR (TRANSIENT_TOKEN_ATTEMPTS
   * in all). Returns whether this call logged the token in (false when it already was:
   * CKR_USER_ALREADY_LOGGED_IN is success).
   */
  async #login(session: Handle, pin: string): Promise<boolean> {
    if (this.#loginRefused) {
      throw new HsmError(
        `login refused: an earlier login failed with ${this.#loginRefused.ckr}; fix the PIN and restart (no retry, to avoid locking the token)`,
      );
    }
    for (let attempt = 1; ; attempt++) {
      try {
        p11('C_Login', () => this.#module.pkcs11.C_Login(session, pkcs11js.CKU_USER, pin));
        return true;
      } catch (err) {
        if (isCkr(err, 'CKR_USER_ALREADY_LOGGED_IN')) return false;
        if (err instanceof Pkcs11Error && PIN_FAILURES.has(err.ckr)) this.#loginRefused = err;
        // CKR_GENERAL_ERROR is no verdict on the PIN, so trying again cannot bring a lock closer.
        if (attempt >= TRANSIENT_TOKEN_ATTEMPTS || !isCkr(err, 'CKR_GENERAL_ERROR')) throw err;
      }
      await delay(TRANSIENT_TOKEN_RETRY_MS);
    }
  }

  /** Runs `fn` in a fresh read-write session with the user logged in, then cleans up. */
  async #withLogin<T>(pin: string, fn: (session: Handle) => Promise<T>): Promise<T> {
    return this.#admin.run(async () => {
      this.#assertOpen();
      const pk = this.#module.pkcs11;
      const session = p11('C_OpenSession', () =>
        pk.C_OpenSession(this.#slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION),
      );
      let loggedInByUs = false;
      try {
        loggedInByUs = await this.#login(session, pin);
        return await fn(session);
      } finally {
        // Login state is shared by every session of the process: log out only if this call
        // logged in and no signing session relies on it.
        try {
          if (loggedInByUs && this.#signing === undefined) {
            p11('C_Logout', () => pk.C_Logout(session));
          }
        } finally {
          p11('C_CloseSession', () => pk.C_CloseSession(session));
        }
      }
    });
  }

  /** Signs a fixed message with a new key and verifies it, so a broken pair is never kept. */
  async #selfTest(
    session: Handle,
    privateKey: Handle,
    pubKey: PubKey,
    support: KeyTypeSupport,
    label: string,
  ): Promise<void> {
    const raw = await this.#rawSign(session, privateKey, support, pubKey.type, SELF_TEST_MESSAGE, false);
    finishSignature(pubKey, SELF_TEST_MESSAGE, raw, label, true);
  }

  #support(type: KeyType, forImport: boolean): KeyTypeSupport {
    const support = this.#keyTypes[type];
    if (support === undefined) throw new HsmError(`the HSM profile does not support ${type} keys`);
    if (forImport && !support.importable)
      throw new HsmError(`the HSM profile does not allow importing ${type} keys`);
    return support;
  }

  #publicTemplate(type: KeyType, label: string, id: Buffer): pkcs11js.Template {
    return [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: keyTypeConstant(type) },
      { type: pkcs11js.CKA_TOKEN, value: true },
      // Public: followers find it without logging in.
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_ID, value: id },
      { type: pkcs11js.CKA_VERIFY, value: true },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
    ];
  }

  #privateTemplate(type: KeyType, label: string, id: Buffer, support: KeyTypeSupport): pkcs11js.Template {
    const template: pkcs11js.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: keyTypeConstant(type) },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_ID, value: id },
      // Key material never leaves the token (ARCHITECTURE.md invariant 5).
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
      { type: pkcs11js.CKA_SIGN, value: true },
      { type: pkcs11js.CKA_SIGN_RECOVER, value: false },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ];
    if (this.#setAllowedMechanisms) {
      template.push({ type: pkcs11js.CKA_ALLOWED_MECHANISMS, value: mechanismList([support.signMechanism]) });
    }
    return template;
  }

  #assertOpen(): void {
    if (this.#closed) throw new HsmError('the HSM has been closed');
  }

  #assertLabelFree(session: Handle, label: string): void {
    const existing = this.#find(session, [{ type: pkcs11js.CKA_LABEL, value: label }]);
    if (existing.length > 0) {
      throw new HsmError(`a key labelled "${label}" already exists on token "${this.#tokenLabel}"`);
    }
  }

  #findPrivateKey(session: Handle, label: string, type: KeyType): Handle {
    const handle = this.#findOne(session, pkcs11js.CKO_PRIVATE_KEY, label, 'private key');
    const actual = this.#keyTypeOf(session, handle);
    if (actual !== type) {
      throw new HsmError(`private key "${label}" is ${actual ?? 'of an unsupported type'}, not ${type}`);
    }
    return handle;
  }

  /** The single object of `cls` labelled `label`; none or several is an error. */
  #findOne(session: Handle, cls: number, label: string, what: string): Handle {
    const found = this.#find(session, [
      { type: pkcs11js.CKA_CLASS, value: cls },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    if (found.length === 0)
      throw new HsmError(`no ${what} labelled "${label}" on token "${this.#tokenLabel}"`);
    if (found.length > 1) {
      throw new HsmError(
        `${found.length} ${what}s are labelled "${label}" on token "${this.#tokenLabel}"; labels must be unique`,
      );
    }
    return found[0] as Handle;
  }

  #find(session: Handle, template: pkcs11js.Template): Handle[] {
    const pk = this.#module.pkcs11;
    p11('C_FindObjectsInit', () => pk.C_FindObjectsInit(session, template));
    const out: Handle[] = [];
    try {
      for (;;) {
        const batch = p11('C_FindObjects', () => pk.C_FindObjects(session, FIND_BATCH));
        out.push(...batch);
        if (batch.length < FIND_BATCH) break;
      }
    } finally {
      p11('C_FindObjectsFinal', () => pk.C_FindObjectsFinal(session));
    }
    return out;
  }

  /** ed25519 / secp256k1 from CKA_KEY_TYPE and CKA_EC_PARAMS; undefined for anything else. */
  #keyTypeOf(session: Handle, handle: Handle): KeyType | undefined {
    const [keyType, params] = p11('C_GetAttributeValue', () =>
      this.#module.pkcs11.C_GetAttributeValue(session, handle, [
        { type: pkcs11js.CKA_KEY_TYPE },
        { type: pkcs11js.CKA_EC_PARAMS },
      ]),
    );
    if (keyType?.value === undefined || params?.value === undefined) return undefined;
    const ckk = readUlong(keyType.value);
    const curve = keyTypeOfEcParams(params.value);
    if (ckk === CKK_EC_EDWARDS && curve === 'ed25519') return 'ed25519';
    if (ckk === pkcs11js.CKK_EC && curve === 'secp256k1') return 'secp256k1';
    return undefined;
  }

  #readPubKey(session: Handle, handle: Handle, type: KeyType): PubKey {
    const [point] = p11('C_GetAttributeValue', () =>
      this.#module.pkcs11.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_EC_POINT }]),
    );
    if (point?.value === undefined) throw new HsmError('public key has no CKA_EC_POINT');
    return pubKeyFromEcPoint(type, point.value);
  }

  /** Best-effort removal of objects a failed generate/import left behind. */
  #destroy(session: Handle, handles: Handle[]): void {
    for (const h of handles) {
      try {
        this.#module.pkcs11.C_DestroyObject(session, h);
      } catch {
        // The original failure is what the operator needs to see; `keys list` shows leftovers.
      }
    }
  }
}

/** A {@link Signer} backed by a token key; created by {@link Hsm.signer}. */
export class HsmSigner implements Signer {
  readonly label: string;
  readonly pubKey: PubKey;
  readonly #sign: (message: Uint8Array) => Promise<Uint8Array>;

  constructor(label: string, pubKey: PubKey, sign: (message: Uint8Array) => Promise<Uint8Array>) {
    this.label = label;
    this.pubKey = pubKey;
    this.#sign = sign;
  }

  /** Signs in the HSM; throws HsmError when no signing session is open or verification fails. */
  sign(message: Uint8Array): Promise<Uint8Array> {
    return this.#sign(message);
  }
}

/**
 * Turns a token's raw signature into the one CometBFT accepts and checks it: secp256k1 S is
 * brought to low-S (SoftHSM returns high S about half the time), then (`verify`) the signature
 * must verify against the token's public key, or nothing is returned.
 */
function finishSignature(
  pubKey: PubKey,
  message: Uint8Array,
  raw: Uint8Array,
  label: string,
  verify: boolean,
): Uint8Array {
  if (raw.length !== SIGNATURE_LEN) {
    throw new HsmError(
      `HSM returned a ${raw.length}-byte signature for "${label}", expected ${SIGNATURE_LEN}`,
    );
  }
  let sig: Uint8Array;
  try {
    sig = pubKey.type === 'secp256k1' ? normalizeLowS(raw) : raw;
  } catch (err) {
    throw new HsmError(`HSM returned a malformed signature for "${label}"`, { cause: err });
  }
  if (verify && !verifySignature(pubKey, message, sig)) {
    throw new HsmError(
      `signature from the HSM does not verify against the public key of "${label}"; nothing was signed`,
    );
  }
  return sig;
}

function keyTypeConstant(type: KeyType): number {
  return type === 'ed25519' ? CKK_EC_EDWARDS : pkcs11js.CKK_EC;
}

/** CKA_ALLOWED_MECHANISMS value: an array of native CK_ULONG. */
function mechanismList(mechanisms: number[]): Buffer {
  const list = new BigUint64Array(mechanisms.map(BigInt));
  return Buffer.from(list.buffer);
}

/** A native CK_ULONG attribute value (8 bytes on 64-bit Unix, 4 elsewhere). */
function readUlong(value: Buffer): number {
  return value.length >= 8 ? Number(value.readBigUInt64LE(0)) : value.readUInt32LE(0);
}
