/**
 * CometBFT SecretConnection (spec §2): the authenticated, encrypted transport the KMS uses on
 * tcp:// privval connections. The handshake is symmetric, so the same code serves whichever
 * side dialed. After the handshake, {@link SecretConnection} is a plaintext byte stream whose
 * bytes travel in sealed 1044-byte frames.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import protobuf from 'protobufjs/minimal.js';
import { NO_STAGES, type StageObserver } from '../stages.ts';
import { MerlinTranscript } from './merlin.ts';

/** Largest plaintext payload carried by one frame. */
export const DATA_MAX_SIZE = 1024;
/** Plaintext frame: LE32 payload length ‖ payload ‖ zero padding. */
const FRAME_PLAIN_SIZE = 4 + DATA_MAX_SIZE;
const TAG_SIZE = 16;
/** A sealed frame on the wire: ChaCha20-Poly1305 ciphertext of the plaintext frame plus tag. */
export const SEALED_FRAME_SIZE = FRAME_PLAIN_SIZE + TAG_SIZE;
/** Read limit for each of the two handshake messages (the uvarint length value). */
const MAX_HANDSHAKE_MESSAGE = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 5000;
/** Go panics rather than wrap; this counter value is never used for a frame. */
const NONCE_LIMIT = 2n ** 64n - 1n;

const TRANSCRIPT_LABEL = 'TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH';
const KDF_INFO = new TextEncoder().encode('TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN');
const EMPTY = Buffer.alloc(0);

/** A failed SecretConnection handshake; the message is the reason (see spec §2.2). */
export class HandshakeError extends Error {
  constructor(reason: string, options?: ErrorOptions) {
    super(reason, options);
    this.name = 'HandshakeError';
  }
}

/** Options for {@link secretHandshake}. */
export interface HandshakeOptions {
  /** Deadline for the whole handshake, in milliseconds (default 5000). */
  timeoutMs?: number;
  /** Tests only: a fixed X25519 ephemeral private key instead of a random one. */
  ephemeralPrivateKey?: Uint8Array;
  /** receives the time spent opening each inbound frame, as stage `read` (src/stages.ts) */
  stages?: StageObserver;
}

/**
 * Splits the DH secret into the two directional keys (spec §2.2 step 7). The side whose
 * ephemeral key sorts lowest receives with okm[0:32]; okm[64:96] is unused.
 */
export function deriveSecrets(
  dhSecret: Uint8Array,
  locIsLeast: boolean,
): { sendKey: Uint8Array; recvKey: Uint8Array } {
  // salt undefined = RFC 5869 "not provided" = HashLen zero bytes, as in the Go code.
  const okm = hkdf(sha256, dhSecret, undefined, KDF_INFO, 96);
  const first = okm.slice(0, 32);
  const second = okm.slice(32, 64);
  return locIsLeast ? { recvKey: first, sendKey: second } : { sendKey: first, recvKey: second };
}

/**
 * One direction of the frame layer: ChaCha20-Poly1305 with an empty AAD and the nonce
 * `4 zero bytes ‖ LE u64 counter`, the counter advancing by one per frame.
 */
export class FrameCipher {
  private readonly key: Uint8Array;
  private counter: bigint;

  /** `counter` is the next nonce counter; only tests start anywhere but 0. */
  constructor(key: Uint8Array, counter = 0n) {
    if (key.length !== 32) throw new RangeError('FrameCipher: key must be 32 bytes');
    if (counter < 0n || counter > NONCE_LIMIT) throw new RangeError('FrameCipher: counter out of range');
    this.key = key;
    this.counter = counter;
  }

  /** Seals `payload` (at most 1024 bytes) into one 1044-byte frame. */
  seal(payload: Uint8Array): Buffer {
    if (payload.length > DATA_MAX_SIZE) throw new RangeError('FrameCipher: payload exceeds 1024 bytes');
    const frame = Buffer.alloc(FRAME_PLAIN_SIZE); // zero padding
    frame.writeUInt32LE(payload.length, 0);
    frame.set(payload, 4);
    const cipher = createCipheriv('chacha20-poly1305', this.key, this.takeNonce(), {
      authTagLength: TAG_SIZE,
    });
    const sealed = Buffer.concat([cipher.update(frame), cipher.final(), cipher.getAuthTag()]);
    return sealed;
  }

  /** Opens one 1044-byte frame and returns its payload; throws if it is forged or malformed. */
  open(sealed: Uint8Array): Buffer {
    if (sealed.length !== SEALED_FRAME_SIZE)
      throw new RangeError('FrameCipher: sealed frame must be 1044 bytes');
    const nonce = this.takeNonce();
    const decipher = createDecipheriv('chacha20-poly1305', this.key, nonce, { authTagLength: TAG_SIZE });
    decipher.setAuthTag(sealed.subarray(FRAME_PLAIN_SIZE));
    let frame: Buffer;
    try {
      frame = Buffer.concat([decipher.update(sealed.subarray(0, FRAME_PLAIN_SIZE)), decipher.final()]);
    } catch (err) {
      throw new Error('SecretConnection: frame authentication failed', { cause: err });
    }
    const chunkLen = frame.readUInt32LE(0);
    if (chunkLen > DATA_MAX_SIZE) {
      throw new Error(`SecretConnection: frame chunk length ${chunkLen} exceeds ${DATA_MAX_SIZE}`);
    }
    // Padding after the payload is unspecified (Go may leave stale bytes) and is ignored.
    return frame.subarray(4, 4 + chunkLen);
  }

  /** Returns the current nonce and advances the counter; refuses the last counter value. */
  private takeNonce(): Buffer {
    // Reusing a nonce under the same key would break ChaCha20-Poly1305, so never wrap.
    if (this.counter >= NONCE_LIMIT) throw new Error('SecretConnection: nonce counter exhausted');
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64LE(this.counter, 4);
    this.counter++;
    return nonce;
  }
}

/** Everything the handshake established, handed to the SecretConnection constructor. */
interface Established {
  send: FrameCipher;
  recv: FrameCipher;
  localPubKey: Uint8Array;
  remotePubKey: Uint8Array;
  /** Plaintext that shared the final auth frame (data the peer sent right after it). */
  plaintext: Buffer;
  /** Raw socket bytes received after the auth frame(s). */
  raw: Buffer;
}

/**
 * Performs the SecretConnection handshake on `socket` with the ed25519 identity derived from
 * `identitySeed` (spec §2.2) and resolves with the established connection. The deadline covers
 * the whole handshake. On any failure the socket is destroyed, all timers and listeners are
 * removed, and the promise rejects with a {@link HandshakeError}.
 */
export async function secretHandshake(
  socket: Duplex,
  identitySeed: Uint8Array,
  opts: HandshakeOptions = {},
): Promise<SecretConnection> {
  const input = new HandshakeInput(socket);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new HandshakeError('handshake timed out')),
      opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
  });
  try {
    const est = await Promise.race([
      runHandshake(socket, input, identitySeed, opts.ephemeralPrivateKey),
      deadline,
    ]);
    est.raw = input.detach();
    return new SecretConnection(socket, est, opts.stages);
  } catch (err) {
    // Detaching wakes a handshake still waiting for input, so it settles instead of hanging.
    input.detach();
    socket.destroy();
    if (err instanceof HandshakeError) throw err;
    throw new HandshakeError(err instanceof Error ? err.message : String(err), { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

async function runHandshake(
  socket: Duplex,
  input: HandshakeInput,
  identitySeed: Uint8Array,
  fixedEphemeral: Uint8Array | undefined,
): Promise<Established> {
  if (identitySeed.length !== 32) throw new HandshakeError('identity seed must be 32 bytes');
  const localPubKey = ed25519.getPublicKey(identitySeed);
  const ephPriv = fixedEphemeral ?? randomBytes(32);
  const ephPub = x25519.getPublicKey(ephPriv);

  // Both sides run this code, so each must send before reading or they would deadlock.
  socket.write(Buffer.concat([Buffer.from([0x22, 0x0a, 0x20]), ephPub]));
  const remoteEph = decodeEphemeral(await readDelimited(input));

  // Go: locIsLeast = (local == lo), so equal keys count as "least".
  const locIsLeast = Buffer.compare(ephPub, remoteEph) <= 0;
  const [lo, hi] = locIsLeast ? [ephPub, remoteEph] : [remoteEph, ephPub];
  const transcript = new MerlinTranscript(TRANSCRIPT_LABEL);
  transcript.appendMessage('EPHEMERAL_LOWER_PUBLIC_KEY', lo);
  transcript.appendMessage('EPHEMERAL_UPPER_PUBLIC_KEY', hi);
  const dh = computeDh(ephPriv, remoteEph);
  transcript.appendMessage('DH_SECRET', dh);
  const { sendKey, recvKey } = deriveSecrets(dh, locIsLeast);
  const challenge = transcript.challengeBytes('SECRET_CONNECTION_MAC', 32);
  const send = new FrameCipher(sendKey);
  const recv = new FrameCipher(recvKey);

  // One write = one frame (nonce 0), as Go does; the peer's arrives concurrently.
  const signature = ed25519.sign(challenge, identitySeed);
  socket.write(send.seal(encodeAuthSig(localPubKey, signature)));
  const decrypted = new DecryptingInput(input, recv);
  const auth = decodeAuthSig(await readDelimited(decrypted));
  if (!verifyChallenge(auth.signature, challenge, auth.pubKey)) {
    throw new HandshakeError('challenge verification failed');
  }
  return { send, recv, localPubKey, remotePubKey: auth.pubKey, plaintext: decrypted.available, raw: EMPTY };
}

/** X25519 with the low-order checks of spec §2.2 step 5. */
function computeDh(ephPriv: Uint8Array, remoteEph: Uint8Array): Uint8Array {
  let dh: Uint8Array;
  try {
    // noble rejects the known low-order u-coordinates (and their non-canonical encodings)
    // before running the ladder.
    dh = x25519.getSharedSecret(ephPriv, remoteEph);
  } catch (err) {
    throw new HandshakeError('low-order ephemeral key', { cause: err });
  }
  // The check the spec requires (Go's), kept independent of the library's own list.
  if (dh.every((b) => b === 0)) throw new HandshakeError('low-order ephemeral key');
  return dh;
}

function verifyChallenge(signature: Uint8Array, challenge: Uint8Array, pubKey: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  try {
    return ed25519.verify(signature, challenge, pubKey);
  } catch {
    return false;
  }
}

function encodeAuthSig(pubKey: Uint8Array, signature: Uint8Array): Buffer {
  // uvarint(102) ‖ field 1 PublicKey{ field 1 ed25519 } ‖ field 2 sig: 103 bytes in total.
  return Buffer.concat([
    Buffer.from([0x66, 0x0a, 0x22, 0x0a, 0x20]),
    pubKey,
    Buffer.from([0x12, 0x40]),
    signature,
  ]);
}

interface ProtoField {
  field: number;
  wireType: number;
  bytes?: Uint8Array;
}

/** Walks the top-level fields of a protobuf message, keeping the bytes of length-delimited ones. */
function protoFields(msg: Uint8Array, what: string): ProtoField[] {
  const fields: ProtoField[] = [];
  try {
    const reader = protobuf.Reader.create(msg);
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      const field = tag >>> 3;
      const wireType = tag & 7;
      if (field === 0) throw new Error('field number 0');
      if (wireType === 2) fields.push({ field, wireType, bytes: reader.bytes() });
      else {
        reader.skipType(wireType);
        fields.push({ field, wireType });
      }
    }
  } catch (err) {
    throw new HandshakeError(`malformed ${what}`, { cause: err });
  }
  return fields;
}

/** The last occurrence of a bytes/message field (protobuf "last one wins"), if any. */
function lastBytes(fields: ProtoField[], field: number, what: string): Uint8Array | undefined {
  let found: Uint8Array | undefined;
  for (const f of fields) {
    if (f.field !== field) continue;
    if (f.bytes === undefined)
      throw new HandshakeError(`malformed ${what}: wrong wire type for field ${field}`);
    found = f.bytes;
  }
  return found;
}

function decodeEphemeral(msg: Uint8Array): Uint8Array {
  const value = lastBytes(protoFields(msg, 'ephemeral key message'), 1, 'ephemeral key message');
  // A compliant peer always sends exactly 32 bytes; be strict like tendermint-rs.
  if (value?.length !== 32) throw new HandshakeError('malformed ephemeral key message: expected 32 bytes');
  return value;
}

function decodeAuthSig(msg: Uint8Array): { pubKey: Uint8Array; signature: Uint8Array } {
  const fields = protoFields(msg, 'auth signature message');
  const pubKeyMsg = lastBytes(fields, 1, 'auth signature message') ?? EMPTY;
  const signature = lastBytes(fields, 2, 'auth signature message') ?? EMPTY;
  // PublicKey is a oneof of length-delimited members (1 ed25519, 2 secp256k1, ...); the last
  // member on the wire is the one that counts, and only ed25519 is acceptable.
  const member = protoFields(pubKeyMsg, 'auth public key')
    .filter((f) => f.bytes !== undefined)
    .at(-1);
  if (member?.field !== 1 || member.bytes?.length !== 32) throw new HandshakeError('expected ed25519 pubkey');
  // Copy out of the receive buffer so the identity key does not alias connection memory.
  return { pubKey: Uint8Array.from(member.bytes), signature };
}

/** A growing byte buffer that handshake parsing reads from and can ask to grow. */
interface ByteInput {
  readonly available: Buffer;
  consume(n: number): void;
  /** Resolves once more bytes are available; rejects if none will come. */
  more(): Promise<void>;
}

/**
 * Reads one uvarint-length-delimited message (the length value at most 1 MiB). The length is
 * checked while its bytes arrive, so an oversized prefix fails before any body is buffered.
 */
async function readDelimited(input: ByteInput): Promise<Buffer> {
  for (;;) {
    const header = parseLengthPrefix(input.available);
    if (header !== undefined && input.available.length >= header.size + header.value) {
      const msg = Buffer.from(input.available.subarray(header.size, header.size + header.value));
      input.consume(header.size + header.value);
      return msg;
    }
    await input.more();
  }
}

function parseLengthPrefix(buf: Buffer): { value: number; size: number } | undefined {
  let value = 0;
  for (let i = 0; i < 10; i++) {
    const b = buf[i];
    if (b === undefined) return undefined;
    value += (b & 0x7f) * 2 ** (7 * i);
    // Later bytes can only increase the value, so this is final even for a partial prefix.
    if (value > MAX_HANDSHAKE_MESSAGE) throw new HandshakeError('handshake message too large');
    if ((b & 0x80) === 0) return { value, size: i + 1 };
  }
  throw new HandshakeError('malformed length prefix');
}

/**
 * Raw socket bytes during the handshake. The socket is paused after every chunk and resumed
 * only while parsing needs more, so a flooding peer cannot make us buffer beyond one chunk
 * past the current (≤ 1 MiB) message.
 */
class HandshakeInput implements ByteInput {
  available: Buffer = EMPTY;
  private failure: HandshakeError | undefined;
  private wake: (() => void) | undefined;
  private attached = true;

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.on('end', this.onClosed);
    socket.on('close', this.onClosed);
    socket.on('error', this.onError);
    if (socket.destroyed || socket.readableEnded) this.onClosed();
  }

  consume(n: number): void {
    this.available = this.available.subarray(n);
  }

  async more(): Promise<void> {
    if (this.failure) throw this.failure;
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      this.socket.resume();
    });
    if (this.failure) throw this.failure;
  }

  /** Stops listening, leaves the socket paused, and returns the bytes not yet consumed. */
  detach(): Buffer {
    if (this.attached) {
      this.attached = false;
      this.socket.pause();
      this.socket.off('data', this.onData);
      this.socket.off('end', this.onClosed);
      this.socket.off('close', this.onClosed);
      this.socket.off('error', this.onError);
      this.fail(new HandshakeError('handshake aborted'));
    }
    return this.available;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.available = this.available.length === 0 ? chunk : Buffer.concat([this.available, chunk]);
    this.socket.pause();
    this.notify();
  };

  private readonly onClosed = (): void => {
    this.fail(new HandshakeError('connection closed during handshake'));
  };

  private readonly onError = (err: Error): void => {
    this.fail(new HandshakeError(`socket error during handshake: ${err.message}`, { cause: err }));
  };

  private fail(err: HandshakeError): void {
    this.failure ??= err;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** Decrypted handshake bytes: pulls whole sealed frames from the raw input as needed. */
class DecryptingInput implements ByteInput {
  available: Buffer = EMPTY;

  constructor(
    private readonly raw: HandshakeInput,
    private readonly recv: FrameCipher,
  ) {}

  consume(n: number): void {
    this.available = this.available.subarray(n);
  }

  async more(): Promise<void> {
    while (this.raw.available.length < SEALED_FRAME_SIZE) await this.raw.more();
    const payload = this.recv.open(this.raw.available.subarray(0, SEALED_FRAME_SIZE));
    this.raw.consume(SEALED_FRAME_SIZE);
    this.available = Buffer.concat([this.available, payload]);
  }
}

/**
 * An established SecretConnection: a plaintext Duplex over the encrypted socket. Obtain one
 * from {@link secretHandshake}. Writes are split into ≤ 1024-byte chunks, each sealed into one
 * frame; reads yield the payload bytes with no frame boundaries. A forged or malformed frame,
 * or a connection closed mid-frame, destroys the stream with an error. Destroying this stream
 * destroys the socket.
 */
export class SecretConnection extends Duplex {
  /** The peer's authenticated ed25519 identity key. */
  readonly remotePubKey: Uint8Array;
  /** This side's ed25519 identity key. */
  readonly localPubKey: Uint8Array;
  private readonly socket: Duplex;
  private readonly send: FrameCipher;
  private readonly recv: FrameCipher;
  private raw: Buffer;
  /** Set by _read, cleared when push() asks us to stop: frames are only opened on demand. */
  private wantMore = false;
  /** How the socket's inbound side finished: not yet, cleanly ('end'), or abruptly. */
  private eof: 'none' | 'end' | 'abort';
  private eofDelivered = false;
  private readonly stages: StageObserver;

  /** Internal: use {@link secretHandshake}. */
  constructor(socket: Duplex, est: Established, stages: StageObserver = NO_STAGES) {
    // Mirror net.Socket's default: when the peer ends, stop writing too.
    super({ allowHalfOpen: false });
    this.socket = socket;
    this.send = est.send;
    this.recv = est.recv;
    this.localPubKey = est.localPubKey;
    this.remotePubKey = est.remotePubKey;
    this.raw = est.raw;
    this.stages = stages;
    // The socket may already have ended while the handshake finished from buffered bytes.
    this.eof = socket.readableEnded ? 'end' : socket.destroyed ? 'abort' : 'none';
    if (est.plaintext.length > 0) this.push(est.plaintext);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
  }

  override _read(): void {
    this.wantMore = true;
    this.drain();
    if (this.wantMore && this.eof === 'none') this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const frames: Buffer[] = [];
    try {
      for (let off = 0; off < chunk.length; off += DATA_MAX_SIZE) {
        frames.push(this.send.seal(chunk.subarray(off, off + DATA_MAX_SIZE)));
      }
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (frames.length === 0) {
      callback();
      return;
    }
    this.socket.write(Buffer.concat(frames), (err) => callback(err));
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(() => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    this.socket.destroy();
    callback(error);
  }

  /** Opens buffered frames while the reader wants data, then delivers EOF once drained. */
  private drain(): void {
    while (!this.destroyed && this.wantMore && this.raw.length >= SEALED_FRAME_SIZE) {
      let payload: Buffer;
      const start = performance.now();
      try {
        payload = this.recv.open(this.raw.subarray(0, SEALED_FRAME_SIZE));
      } catch (err) {
        this.destroy(err as Error);
        return;
      }
      this.stages.observe('read', performance.now() - start);
      this.raw = this.raw.subarray(SEALED_FRAME_SIZE);
      if (payload.length > 0) this.wantMore = this.push(payload);
    }
    if (this.destroyed) return;
    if (!this.wantMore) this.socket.pause();
    if (this.eof === 'none' || this.eofDelivered || this.raw.length >= SEALED_FRAME_SIZE) return;
    this.eofDelivered = true;
    if (this.raw.length > 0) this.destroy(new Error('SecretConnection: connection closed mid-frame'));
    else if (this.eof === 'abort') this.destroy(new Error('SecretConnection: connection closed'));
    else this.push(null);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.raw = this.raw.length === 0 ? chunk : Buffer.concat([this.raw, chunk]);
    this.drain();
  };

  private readonly onEnd = (): void => {
    this.eof = 'end';
    this.drain();
  };

  private readonly onClose = (): void => {
    if (this.eof === 'none') this.eof = 'abort';
    this.drain();
  };

  private readonly onError = (err: Error): void => {
    this.destroy(err);
  };
}
