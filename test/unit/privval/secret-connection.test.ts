import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { MerlinTranscript } from '../../../src/privval/merlin.ts';
import {
  DATA_MAX_SIZE,
  deriveSecrets,
  FrameCipher,
  SEALED_FRAME_SIZE,
  type SecretConnection,
  secretHandshake,
} from '../../../src/privval/secret-connection.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const unhex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));
const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

interface HkdfVector {
  dh_secret: string;
  loc_is_least: boolean;
  recv_secret: string;
  send_secret: string;
  okm_64_96: string;
}
interface SideVector {
  identity_seed: string;
  identity_pub: string;
  ephemeral_priv: string;
  ephemeral_pub: string;
  loc_is_least: boolean;
  send_key: string;
  recv_key: string;
  auth_plaintext: string;
  sent_ephemeral_msg: string;
  sent_auth_frame: string;
}
interface HandshakeVector {
  a: SideVector;
  b: SideVector;
  dh_secret: string;
  transcript_lo: string;
  transcript_hi: string;
  challenge: string;
  a_first_data: { plaintext_utf8: string; nonce_counter: number; frame: string };
}

const hkdfVectors = readJson<{ vectors: HkdfVector[] }>(
  new URL('../../vectors/upstream/secret-connection-hkdf-golden.json', import.meta.url).pathname,
).vectors;
const nonceVectors = readJson<{ secret_connection_nonce: { after_increments: Record<string, string> } }>(
  new URL('../../vectors/upstream/crypto-keys.json', import.meta.url).pathname,
).secret_connection_nonce.after_increments;
const handshakeVector = readJson<HandshakeVector>(
  new URL('../../vectors/secret-connection-handshake.json', import.meta.url).pathname,
);

/** Opens a sealed frame with node:crypto directly (independent of FrameCipher). */
function openFrame(key: Uint8Array, counter: bigint, sealed: Uint8Array): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(counter, 4);
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  d.setAuthTag(sealed.subarray(1028));
  return Buffer.concat([d.update(sealed.subarray(0, 1028)), d.final()]);
}

/** Seals a raw 1028-byte plaintext frame with node:crypto directly. */
function sealRaw(key: Uint8Array, counter: bigint, frame: Uint8Array): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(counter, 4);
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  return Buffer.concat([c.update(frame), c.final(), c.getAuthTag()]);
}

interface TcpPair {
  client: net.Socket;
  server: net.Socket;
}

let listener: net.Server;
async function tcpPair(): Promise<TcpPair> {
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  return { client, server: await accepted };
}

/** Records every buffer written to `sock` (the exact bytes put on the wire). */
function tapWrites(sock: net.Socket): Buffer[] {
  const writes: Buffer[] = [];
  const original = sock.write.bind(sock);
  sock.write = ((chunk: Uint8Array, ...rest: never[]) => {
    writes.push(Buffer.from(chunk));
    return original(chunk, ...rest);
  }) as typeof sock.write;
  return writes;
}

/** Resolves with exactly `n` bytes read from `stream`; rejects on error or early end. */
function readBytes(stream: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('error', onError);
      stream.off('end', onEnd);
    };
    const onData = (d: Buffer) => {
      chunks.push(d);
      len += d.length;
      if (len >= n) {
        cleanup();
        stream.pause();
        if (len > n) reject(new Error(`read ${len} bytes, expected ${n}`));
        else resolve(Buffer.concat(chunks));
      }
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`stream ended after ${len} of ${n} bytes`));
    };
    stream.on('data', onData);
    stream.on('error', onError);
    stream.on('end', onEnd);
    stream.resume(); // an earlier readBytes may have paused it
  });
}

async function connectedPair(): Promise<{ a: SecretConnection; b: SecretConnection; pair: TcpPair }> {
  const pair = await tcpPair();
  const [a, b] = await Promise.all([
    secretHandshake(pair.client, unhex(handshakeVector.a.identity_seed)),
    secretHandshake(pair.server, unhex(handshakeVector.b.identity_seed)),
  ]);
  return { a, b, pair };
}

describe('SecretConnection key derivation and framing', () => {
  it('splits HKDF output per the upstream golden file, for both locIsLeast cases', () => {
    assert.equal(hkdfVectors.length, 32);
    const cases = new Set(hkdfVectors.map((v) => v.loc_is_least));
    assert.deepEqual([...cases].sort(), [false, true], 'both orderings are covered');
    for (const v of hkdfVectors) {
      const { sendKey, recvKey } = deriveSecrets(unhex(v.dh_secret), v.loc_is_least);
      assert.equal(hex(recvKey), v.recv_secret);
      assert.equal(hex(sendKey), v.send_secret);
      // The unused third block confirms the HKDF parameters (empty salt, info string, L = 96).
      const okm = hkdf(
        sha256,
        unhex(v.dh_secret),
        undefined,
        new TextEncoder().encode('TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN'),
        96,
      );
      assert.equal(hex(okm.subarray(64)), v.okm_64_96);
    }
  });

  it('uses the nonce layout 4 zero bytes ‖ LE u64 counter (tendermint-rs vector)', () => {
    const key = new Uint8Array(32).fill(3);
    for (const [count, nonceHex] of Object.entries(nonceVectors)) {
      const sealed = new FrameCipher(key, BigInt(count)).seal(Buffer.from('x'));
      const d = createDecipheriv('chacha20-poly1305', key, Buffer.from(nonceHex, 'hex'), {
        authTagLength: 16,
      });
      d.setAuthTag(sealed.subarray(1028));
      const frame = Buffer.concat([d.update(sealed.subarray(0, 1028)), d.final()]);
      assert.equal(frame.readUInt32LE(0), 1);
      assert.equal(frame.subarray(4, 5).toString(), 'x');
    }
  });

  it('seals a payload as LE32 length ‖ payload ‖ zero padding, 1044 bytes on the wire', () => {
    const key = new Uint8Array(32).fill(4);
    const sealed = new FrameCipher(key).seal(Buffer.from('abc'));
    assert.equal(sealed.length, SEALED_FRAME_SIZE);
    const frame = openFrame(key, 0n, sealed);
    assert.deepEqual(frame.subarray(0, 7), Buffer.from([3, 0, 0, 0, 0x61, 0x62, 0x63]));
    assert.ok(frame.subarray(7).every((b) => b === 0));
    assert.throws(() => new FrameCipher(key).seal(new Uint8Array(DATA_MAX_SIZE + 1)), /exceeds 1024/);
  });

  it('opens frames in counter order, ignores padding, and rejects forgeries and chunkLen > 1024', () => {
    const key = new Uint8Array(32).fill(5);
    const frame = Buffer.alloc(1028, 0xee); // non-zero padding, as Go may send
    frame.writeUInt32LE(2, 0);
    frame.write('hi', 4);
    const opener = new FrameCipher(key);
    assert.equal(opener.open(sealRaw(key, 0n, frame)).toString(), 'hi');
    assert.throws(() => opener.open(sealRaw(key, 0n, frame)), /authentication failed/, 'replayed nonce');
    const tampered = sealRaw(key, 1n, frame);
    tampered[10]! ^= 1;
    assert.throws(() => new FrameCipher(key, 1n).open(tampered), /authentication failed/);
    frame.writeUInt32LE(1025, 0);
    assert.throws(() => new FrameCipher(key, 2n).open(sealRaw(key, 2n, frame)), /chunk length 1025/);
  });

  it('refuses to seal or open at counter 2^64-1 instead of wrapping', () => {
    const key = new Uint8Array(32).fill(6);
    const last = 2n ** 64n - 2n;
    const sealer = new FrameCipher(key, last);
    const opener = new FrameCipher(key, last);
    const sealed = sealer.seal(Buffer.from('z'));
    assert.equal(opener.open(sealed).toString(), 'z');
    assert.throws(() => sealer.seal(Buffer.from('z')), /nonce counter exhausted/);
    assert.throws(() => opener.open(sealed), /nonce counter exhausted/);
  });
});

describe('SecretConnection handshake over loopback TCP', { timeout: 20_000 }, () => {
  before(async () => {
    listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  });

  it('the stored handshake vector is internally consistent (independent recomputation)', () => {
    const v = handshakeVector;
    const sides = [v.a, v.b] as const;
    for (const s of sides) {
      assert.equal(hex(x25519.getPublicKey(unhex(s.ephemeral_priv))), s.ephemeral_pub);
      assert.equal(hex(ed25519.getPublicKey(unhex(s.identity_seed))), s.identity_pub);
      assert.equal(s.sent_ephemeral_msg, `220a20${s.ephemeral_pub}`);
    }
    const [lo, hi] = [v.a.ephemeral_pub, v.b.ephemeral_pub].sort();
    assert.equal(v.transcript_lo, lo);
    assert.equal(v.transcript_hi, hi);
    assert.equal(v.a.loc_is_least, v.a.ephemeral_pub === lo);
    assert.equal(v.b.loc_is_least, !v.a.loc_is_least);
    const dh = x25519.getSharedSecret(unhex(v.a.ephemeral_priv), unhex(v.b.ephemeral_pub));
    assert.equal(hex(dh), v.dh_secret);
    assert.equal(
      hex(x25519.getSharedSecret(unhex(v.b.ephemeral_priv), unhex(v.a.ephemeral_pub))),
      v.dh_secret,
    );

    const t = new MerlinTranscript('TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH');
    t.appendMessage('EPHEMERAL_LOWER_PUBLIC_KEY', unhex(v.transcript_lo));
    t.appendMessage('EPHEMERAL_UPPER_PUBLIC_KEY', unhex(v.transcript_hi));
    t.appendMessage('DH_SECRET', dh);
    assert.equal(hex(t.challengeBytes('SECRET_CONNECTION_MAC', 32)), v.challenge);

    const info = new TextEncoder().encode('TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN');
    const okm = hkdf(sha256, dh, new Uint8Array(32), info, 96);
    const least = v.a.loc_is_least ? v.a : v.b;
    const other = v.a.loc_is_least ? v.b : v.a;
    assert.equal(least.recv_key, hex(okm.subarray(0, 32)));
    assert.equal(least.send_key, hex(okm.subarray(32, 64)));
    assert.equal(other.send_key, least.recv_key);
    assert.equal(other.recv_key, least.send_key);

    for (const s of sides) {
      const plain = openFrame(unhex(s.send_key), 0n, unhex(s.sent_auth_frame));
      assert.equal(plain.readUInt32LE(0), 103);
      const auth = plain.subarray(4, 107);
      assert.equal(hex(auth), s.auth_plaintext);
      assert.equal(hex(auth.subarray(0, 5)), '660a220a20');
      assert.equal(hex(auth.subarray(5, 37)), s.identity_pub);
      assert.equal(hex(auth.subarray(37, 39)), '1240');
      assert.ok(ed25519.verify(auth.subarray(39), unhex(v.challenge), unhex(s.identity_pub)));
      assert.ok(
        plain.subarray(107).every((b) => b === 0),
        'zero padding',
      );
    }
    const data = openFrame(
      unhex(v.a.send_key),
      BigInt(v.a_first_data.nonce_counter),
      unhex(v.a_first_data.frame),
    );
    const len = data.readUInt32LE(0);
    assert.equal(data.subarray(4, 4 + len).toString(), v.a_first_data.plaintext_utf8);
  });

  it('reproduces the stored handshake vector byte for byte with fixed keys', async () => {
    const v = handshakeVector;
    const pair = await tcpPair();
    const sentA = tapWrites(pair.client);
    const sentB = tapWrites(pair.server);
    const [a, b] = await Promise.all([
      secretHandshake(pair.client, unhex(v.a.identity_seed), {
        ephemeralPrivateKey: unhex(v.a.ephemeral_priv),
      }),
      secretHandshake(pair.server, unhex(v.b.identity_seed), {
        ephemeralPrivateKey: unhex(v.b.ephemeral_priv),
      }),
    ]);
    try {
      assert.equal(hex(a.localPubKey), v.a.identity_pub);
      assert.equal(hex(a.remotePubKey), v.b.identity_pub);
      assert.equal(hex(b.localPubKey), v.b.identity_pub);
      assert.equal(hex(b.remotePubKey), v.a.identity_pub);
      a.write(v.a_first_data.plaintext_utf8);
      assert.equal((await readBytes(b, 4)).toString(), v.a_first_data.plaintext_utf8);
      assert.deepEqual(
        sentA.map((w) => hex(w)),
        [v.a.sent_ephemeral_msg, v.a.sent_auth_frame, v.a_first_data.frame],
      );
      assert.deepEqual(
        sentB.map((w) => hex(w)),
        [v.b.sent_ephemeral_msg, v.b.sent_auth_frame],
      );
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('exchanges small writes both ways', async () => {
    const { a, b } = await connectedPair();
    try {
      a.write('hello from a');
      b.write('hello from b');
      assert.equal((await readBytes(b, 12)).toString(), 'hello from a');
      assert.equal((await readBytes(a, 12)).toString(), 'hello from b');
      a.write(Buffer.alloc(0)); // an empty write sends nothing
      a.write('!');
      assert.equal((await readBytes(b, 1)).toString(), '!');
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('splits a 5000-byte write into five frames and reassembles it', async () => {
    const { a, b, pair } = await connectedPair();
    const sent = tapWrites(pair.client);
    try {
      const payload = Buffer.alloc(5000);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
      a.write(payload);
      assert.deepEqual(await readBytes(b, 5000), payload);
      assert.equal(Buffer.concat(sent).length, 5 * SEALED_FRAME_SIZE);
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('delivers many tiny writes in order, in both directions at once', async () => {
    const { a, b } = await connectedPair();
    try {
      const fromA: Buffer[] = [];
      const fromB: Buffer[] = [];
      for (let i = 0; i < 400; i++) {
        fromA.push(Buffer.from([i & 0xff, (i >> 8) & 0xff]));
        fromB.push(Buffer.from([(i * 3) & 0xff]));
      }
      const readA = readBytes(b, 800);
      const readB = readBytes(a, 400);
      for (let i = 0; i < 400; i++) {
        a.write(fromA[i]);
        b.write(fromB[i]);
      }
      assert.deepEqual(await readA, Buffer.concat(fromA));
      assert.deepEqual(await readB, Buffer.concat(fromB));
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('propagates a graceful end, and destroying a connection destroys its socket', async () => {
    const { a, b, pair } = await connectedPair();
    const ended = new Promise<void>((resolve) => b.once('end', resolve));
    a.end('bye');
    assert.equal((await readBytes(b, 3)).toString(), 'bye');
    b.resume();
    await ended;
    const closed = new Promise<void>((resolve) => pair.client.once('close', () => resolve()));
    a.destroy();
    await closed;
    assert.equal(pair.client.destroyed, true);
    b.destroy();
    assert.equal(pair.server.destroyed, true);
  });
});
