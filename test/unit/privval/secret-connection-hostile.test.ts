/**
 * Hostile and unusual peers against secretHandshake / SecretConnection over loopback TCP.
 * The peer here is scripted independently of the implementation: X25519 and ed25519 from
 * @noble/curves, HKDF from @noble/hashes, ChaCha20-Poly1305 from node:crypto, and only the
 * (vector-checked) MerlinTranscript shared with the code under test.
 */
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { MerlinTranscript } from '../../../src/privval/merlin.ts';
import {
  HandshakeError,
  type SecretConnection,
  secretHandshake,
} from '../../../src/privval/secret-connection.ts';

const KMS_SEED = new Uint8Array(32).fill(0x4b);
const PEER_SEED = new Uint8Array(32).fill(0x50);
const SHORT_TIMEOUT = 2000;

/** The raw side of a TCP connection, driven by the test script. */
class Peer {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private isClosed = false;
  readonly closed: Promise<void>;

  constructor(readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.notify();
    });
    // The KMS side hanging up on a hostile peer (EPIPE, ECONNRESET) is the expected outcome.
    sock.on('error', () => {});
    this.closed = new Promise((resolve) =>
      sock.once('close', () => {
        this.isClosed = true;
        this.notify();
        resolve();
      }),
    );
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.isClosed) throw new Error(`peer: connection closed with ${this.buf.length}/${n} bytes`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve) => this.sock.write(data, () => resolve()));
  }

  /** Writes one byte per TCP segment (no Nagle, each write flushed before the next). */
  async writeBytewise(data: Uint8Array): Promise<void> {
    for (const b of data) {
      await this.write(Buffer.from([b]));
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Sends `chunk` repeatedly until the connection dies (bounded by `maxBytes`). */
  async flood(chunk: Buffer, maxBytes: number): Promise<number> {
    let sent = 0;
    while (!this.isClosed && !this.sock.destroyed && sent < maxBytes) {
      sent += chunk.length;
      if (!this.sock.write(chunk)) {
        await Promise.race([new Promise((resolve) => this.sock.once('drain', resolve)), this.closed]);
      }
    }
    return sent;
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

interface PeerKeys {
  sendKey: Uint8Array;
  recvKey: Uint8Array;
  challenge: Uint8Array;
}

function uvarint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

function ephemeralMessage(pub: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0x22, 0x0a, 0x20]), pub]);
}

/** Independent derivation of the session keys and challenge (spec §2.2 steps 3–8). */
function derive(ephPriv: Uint8Array, remoteEph: Uint8Array): PeerKeys {
  const ephPub = x25519.getPublicKey(ephPriv);
  const least = Buffer.compare(ephPub, remoteEph) <= 0;
  const t = new MerlinTranscript('TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH');
  t.appendMessage('EPHEMERAL_LOWER_PUBLIC_KEY', least ? ephPub : remoteEph);
  t.appendMessage('EPHEMERAL_UPPER_PUBLIC_KEY', least ? remoteEph : ephPub);
  const dh = x25519.getSharedSecret(ephPriv, remoteEph);
  t.appendMessage('DH_SECRET', dh);
  const info = new TextEncoder().encode('TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN');
  const okm = hkdf(sha256, dh, undefined, info, 96);
  const [first, second] = [okm.slice(0, 32), okm.slice(32, 64)];
  return {
    recvKey: least ? first : second,
    sendKey: least ? second : first,
    challenge: t.challengeBytes('SECRET_CONNECTION_MAC', 32),
  };
}

function nonce(counter: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(BigInt(counter), 4);
  return n;
}

/** Seals `payload` into a 1044-byte frame; `chunkLen` may lie about the payload length. */
function sealFrame(key: Uint8Array, counter: number, payload: Uint8Array, chunkLen = payload.length): Buffer {
  const frame = Buffer.alloc(1028);
  frame.writeUInt32LE(chunkLen, 0);
  frame.set(payload, 4);
  const c = createCipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  return Buffer.concat([c.update(frame), c.final(), c.getAuthTag()]);
}

function openFrame(key: Uint8Array, counter: number, sealed: Uint8Array): Buffer {
  const d = createDecipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  d.setAuthTag(sealed.subarray(1028));
  const frame = Buffer.concat([d.update(sealed.subarray(0, 1028)), d.final()]);
  return frame.subarray(4, 4 + frame.readUInt32LE(0));
}

/** Length-delimited AuthSigMessage with a caller-chosen PublicKey body and signature. */
function authMessage(pubKeyMsg: Uint8Array, sig: Uint8Array): Buffer {
  const body = Buffer.concat([
    Buffer.from([0x0a]),
    uvarint(pubKeyMsg.length),
    pubKeyMsg,
    Buffer.from([0x12]),
    uvarint(sig.length),
    sig,
  ]);
  return Buffer.concat([uvarint(body.length), body]);
}

const ed25519Key = (pub: Uint8Array) => Buffer.concat([Buffer.from([0x0a, pub.length]), pub]);
const goodAuth = (keys: PeerKeys) =>
  authMessage(ed25519Key(ed25519.getPublicKey(PEER_SEED)), ed25519.sign(keys.challenge, PEER_SEED));

let listener: net.Server;

interface Scenario {
  peer: Peer;
  kmsSocket: net.Socket;
  handshake: Promise<SecretConnection>;
  timersBefore: number;
  listenersBefore: Record<string, number>;
}

const SOCKET_EVENTS = ['data', 'end', 'close', 'error'] as const;

const activeTimers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/** Connects a scripted peer to a KMS endpoint that starts its handshake right away. */
async function start(timeoutMs = SHORT_TIMEOUT): Promise<Scenario> {
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const kmsSocket = await accepted;
  const timersBefore = activeTimers();
  const listenersBefore = Object.fromEntries(SOCKET_EVENTS.map((e) => [e, kmsSocket.listenerCount(e)]));
  const handshake = secretHandshake(kmsSocket, KMS_SEED, { timeoutMs });
  // Some scenarios only await the outcome after flooding; mark the rejection as handled now.
  handshake.catch(() => {});
  return { peer: new Peer(client), kmsSocket, handshake, timersBefore, listenersBefore };
}

/** Runs a correct peer handshake; returns the keys and the KMS's verified auth message. */
async function peerHandshake(s: Scenario, extraPlaintext = Buffer.alloc(0)): Promise<PeerKeys> {
  const ephPriv = randomBytes(32);
  await s.peer.write(ephemeralMessage(x25519.getPublicKey(ephPriv)));
  const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
  await s.peer.write(sealFrame(keys.sendKey, 0, Buffer.concat([goodAuth(keys), extraPlaintext])));
  return keys;
}

/** Asserts the handshake failed with `reason` and left nothing behind. */
async function expectFailure(s: Scenario, reason: RegExp): Promise<void> {
  await assert.rejects(s.handshake, (err: unknown) => {
    assert.ok(err instanceof HandshakeError, `HandshakeError, got ${String(err)}`);
    assert.match(err.message, reason);
    return true;
  });
  assert.equal(s.kmsSocket.destroyed, true, 'KMS socket destroyed');
  for (const event of SOCKET_EVENTS) {
    assert.equal(s.kmsSocket.listenerCount(event), s.listenersBefore[event], `no ${event} listener left`);
  }
  assert.equal(activeTimers(), s.timersBefore, 'handshake timer cleared');
  await s.peer.closed; // the peer observes the hang-up
}

/** Asserts an established connection fails with `reason` and tears down its socket. */
async function expectStreamError(conn: SecretConnection, s: Scenario, reason: RegExp): Promise<void> {
  const err = await new Promise<Error>((resolve) => conn.once('error', resolve));
  assert.match(err.message, reason);
  await s.peer.closed;
  assert.equal(conn.destroyed, true);
  assert.equal(s.kmsSocket.destroyed, true);
}

function readAll(conn: SecretConnection, n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    conn.on('error', reject);
    conn.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.length >= n) resolve(text);
    });
  });
}

describe('SecretConnection against hostile peers', { timeout: 30_000 }, () => {
  before(async () => {
    listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  });

  it('completes when every byte arrives in its own segment', async () => {
    const s = await start();
    const ephPriv = randomBytes(32);
    await s.peer.writeBytewise(ephemeralMessage(x25519.getPublicKey(ephPriv)));
    const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
    await s.peer.writeBytewise(
      Buffer.concat([
        sealFrame(keys.sendKey, 0, goodAuth(keys)),
        sealFrame(keys.sendKey, 1, Buffer.from('bytewise')),
      ]),
    );
    const conn = await s.handshake;
    // The KMS's own auth frame, checked from the peer's side.
    const kmsAuth = openFrame(keys.recvKey, 0, await s.peer.read(1044));
    assert.equal(kmsAuth.length, 103);
    assert.deepEqual(new Uint8Array(kmsAuth.subarray(5, 37)), ed25519.getPublicKey(KMS_SEED));
    assert.ok(ed25519.verify(kmsAuth.subarray(39), keys.challenge, ed25519.getPublicKey(KMS_SEED)));
    assert.deepEqual(conn.remotePubKey, ed25519.getPublicKey(PEER_SEED));
    assert.equal(await readAll(conn, 8), 'bytewise');
    conn.destroy();
    await s.peer.closed;
  });

  it('keeps bytes coalesced with the handshake: same chunk and same frame as the auth message', async () => {
    const s = await start();
    const ephPriv = randomBytes(32);
    const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
    await s.peer.write(
      Buffer.concat([
        ephemeralMessage(x25519.getPublicKey(ephPriv)),
        sealFrame(keys.sendKey, 0, Buffer.concat([goodAuth(keys), Buffer.from('tail|')])),
        sealFrame(keys.sendKey, 1, Buffer.from('one|')),
        sealFrame(keys.sendKey, 2, Buffer.alloc(0)),
        sealFrame(keys.sendKey, 3, Buffer.from('two')),
      ]),
    );
    const conn = await s.handshake;
    assert.equal(await readAll(conn, 12), 'tail|one|two');
    conn.destroy();
    await s.peer.closed;
  });

  it('rejects a tampered auth frame (AEAD failure)', async () => {
    const s = await start();
    const ephPriv = randomBytes(32);
    await s.peer.write(ephemeralMessage(x25519.getPublicKey(ephPriv)));
    const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
    const frame = sealFrame(keys.sendKey, 0, goodAuth(keys));
    frame[50]! ^= 0x01;
    await s.peer.write(frame);
    await expectFailure(s, /frame authentication failed/);
  });

  it('destroys the stream on a tampered data frame after the handshake', async () => {
    const s = await start();
    const keys = await peerHandshake(s);
    const conn = await s.handshake;
    const frame = sealFrame(keys.sendKey, 1, Buffer.from('data'));
    frame[1043]! ^= 0x80; // tag byte
    await s.peer.write(frame);
    conn.resume();
    await expectStreamError(conn, s, /frame authentication failed/);
  });

  const badSignatures: Array<[string, (k: PeerKeys) => Uint8Array]> = [
    ['a signature over other bytes', () => ed25519.sign(new Uint8Array(32), PEER_SEED)],
    ['another key’s signature', (k) => ed25519.sign(k.challenge, KMS_SEED)],
    ['a 63-byte signature', (k) => ed25519.sign(k.challenge, PEER_SEED).subarray(0, 63)],
  ];
  for (const [name, makeSig] of badSignatures) {
    it(`rejects ${name} ("challenge verification failed")`, async () => {
      const s = await start();
      const ephPriv = randomBytes(32);
      await s.peer.write(ephemeralMessage(x25519.getPublicKey(ephPriv)));
      const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
      const auth = authMessage(ed25519Key(ed25519.getPublicKey(PEER_SEED)), makeSig(keys));
      await s.peer.write(sealFrame(keys.sendKey, 0, auth));
      await expectFailure(s, /challenge verification failed/);
    });
  }

  const badKeys: Array<[string, Uint8Array]> = [
    // PublicKey oneof member 2 = secp256k1 (33-byte compressed key).
    ['a secp256k1 identity', Buffer.concat([Buffer.from([0x12, 33, 0x02]), randomBytes(32)])],
    ['an absent identity key', Buffer.alloc(0)],
    ['a 31-byte ed25519 key', ed25519Key(ed25519.getPublicKey(PEER_SEED).subarray(0, 31))],
    [
      'ed25519 followed by secp256k1 (last oneof member wins)',
      Buffer.concat([
        ed25519Key(ed25519.getPublicKey(PEER_SEED)),
        Buffer.from([0x12, 33, 0x03]),
        randomBytes(32),
      ]),
    ],
  ];
  for (const [name, pubKeyMsg] of badKeys) {
    it(`rejects ${name} ("expected ed25519 pubkey")`, async () => {
      const s = await start();
      const ephPriv = randomBytes(32);
      await s.peer.write(ephemeralMessage(x25519.getPublicKey(ephPriv)));
      const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
      await s.peer.write(
        sealFrame(keys.sendKey, 0, authMessage(pubKeyMsg, ed25519.sign(keys.challenge, PEER_SEED))),
      );
      await expectFailure(s, /expected ed25519 pubkey/);
    });
  }

  // Low-order X25519 u-coordinates: 0, 1, the two order-8 points, p−1, and the non-canonical
  // encodings p and p+1 (the tendermint-rs blocklist), plus 0 with the ignored top bit set.
  const lowOrder: Array<[string, string]> = [
    ['0 (all-zero point)', '0000000000000000000000000000000000000000000000000000000000000000'],
    ['1', '0100000000000000000000000000000000000000000000000000000000000000'],
    ['order-8 point #1', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'],
    ['order-8 point #2', '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157'],
    ['p-1', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
    ['p (non-canonical 0)', 'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
    ['p+1 (non-canonical 1)', 'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
    ['0 with the top bit set', '0000000000000000000000000000000000000000000000000000000000000080'],
  ];
  for (const [name, point] of lowOrder) {
    it(`rejects a low-order ephemeral key: ${name}`, async () => {
      const s = await start();
      await s.peer.write(ephemeralMessage(Buffer.from(point, 'hex')));
      await expectFailure(s, /low-order ephemeral key/);
    });
  }

  it('times out a peer that stalls before sending anything', async () => {
    const s = await start(150);
    await expectFailure(s, /handshake timed out/);
  });

  it('times out a peer that stalls after its ephemeral key', async () => {
    const s = await start(150);
    await s.peer.write(ephemeralMessage(x25519.getPublicKey(randomBytes(32))));
    await s.peer.read(35);
    await expectFailure(s, /handshake timed out/);
  });

  it('fails when the peer closes mid-handshake', async () => {
    const s = await start();
    await s.peer.write(ephemeralMessage(x25519.getPublicKey(randomBytes(32))).subarray(0, 10));
    s.peer.sock.end();
    await expectFailure(s, /connection closed during handshake/);
  });

  it('rejects an ephemeral message whose length prefix exceeds 1 MiB, before any body', async () => {
    const s = await start();
    await s.peer.write(uvarint(1024 * 1024 + 1));
    await expectFailure(s, /handshake message too large/);
  });

  it('rejects a malformed ephemeral message', async () => {
    const s = await start();
    await s.peer.write(Buffer.from([0x21, 0x0a, 0x1f, ...randomBytes(31)])); // 31-byte key
    await expectFailure(s, /malformed ephemeral key message/);
  });

  it('accepts an ephemeral message of exactly 1 MiB (unknown fields are skipped)', async () => {
    const s = await start();
    const ephPriv = randomBytes(32);
    const key = Buffer.concat([Buffer.from([0x0a, 0x20]), x25519.getPublicKey(ephPriv)]);
    // Unknown field 15 (LEN) pads the message: 1 tag byte + 3 length bytes + filler.
    const fillerLen = 1024 * 1024 - key.length - 4;
    const msg = Buffer.concat([Buffer.from([0x7a]), uvarint(fillerLen), Buffer.alloc(fillerLen), key]);
    assert.equal(msg.length, 1024 * 1024);
    await s.peer.write(Buffer.concat([uvarint(msg.length), msg]));
    const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
    await s.peer.write(sealFrame(keys.sendKey, 0, goodAuth(keys)));
    const conn = await s.handshake;
    assert.deepEqual(conn.remotePubKey, ed25519.getPublicKey(PEER_SEED));
    conn.destroy();
    await s.peer.closed;
  });

  it('rejects an encrypted auth message whose length exceeds 1 MiB', async () => {
    const s = await start();
    const ephPriv = randomBytes(32);
    await s.peer.write(ephemeralMessage(x25519.getPublicKey(ephPriv)));
    const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
    await s.peer.write(sealFrame(keys.sendKey, 0, uvarint(2 * 1024 * 1024)));
    await expectFailure(s, /handshake message too large/);
  });

  it('rejects an auth frame with chunkLen > 1024', async () => {
    const s = await start();
    const ephPriv = randomBytes(32);
    await s.peer.write(ephemeralMessage(x25519.getPublicKey(ephPriv)));
    const keys = derive(ephPriv, (await s.peer.read(35)).subarray(3));
    await s.peer.write(sealFrame(keys.sendKey, 0, goodAuth(keys), 1025));
    await expectFailure(s, /chunk length 1025 exceeds 1024/);
  });

  it('destroys the stream on a data frame with chunkLen > 1024', async () => {
    const s = await start();
    const keys = await peerHandshake(s);
    const conn = await s.handshake;
    await s.peer.write(sealFrame(keys.sendKey, 1, Buffer.from('x'), 0xffffffff));
    conn.resume();
    await expectStreamError(conn, s, /chunk length 4294967295 exceeds 1024/);
  });

  it('destroys the stream when the peer closes mid-frame', async () => {
    const s = await start();
    const keys = await peerHandshake(s);
    const conn = await s.handshake;
    await s.peer.write(sealFrame(keys.sendKey, 1, Buffer.from('partial')).subarray(0, 500));
    s.peer.sock.end();
    conn.resume();
    await expectStreamError(conn, s, /closed mid-frame/);
  });

  it('survives a garbage flood during the handshake', async () => {
    const s = await start();
    // A well-formed ephemeral key followed by an endless stream of noise instead of an auth frame.
    await s.peer.write(ephemeralMessage(x25519.getPublicKey(randomBytes(32))));
    const sent = await s.peer.flood(randomBytes(64 * 1024), 256 * 1024 * 1024);
    assert.ok(sent < 256 * 1024 * 1024, 'the KMS hung up before the flood ended');
    await expectFailure(s, /frame authentication failed/);
  });

  it('survives a flood of oversized-length garbage during the handshake', async () => {
    const s = await start();
    await s.peer.flood(Buffer.alloc(64 * 1024, 0xff), 256 * 1024 * 1024);
    await expectFailure(s, /handshake message too large/);
  });

  it('survives a garbage flood after the handshake', async () => {
    const s = await start();
    await peerHandshake(s);
    const conn = await s.handshake;
    conn.resume();
    const failed = expectStreamError(conn, s, /frame authentication failed/);
    await s.peer.flood(randomBytes(64 * 1024), 256 * 1024 * 1024);
    await failed;
  });
});
