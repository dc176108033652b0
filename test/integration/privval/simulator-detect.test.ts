import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import pino from 'pino';
import { type PrivvalMessage, type ProtocolVersion, SignedMsgType } from '../../../src/cometbft/types.ts';
import { ValidatorDialer } from '../../../src/privval/dialer.ts';
import type { RequestHandler } from '../../../src/privval/handler.ts';
import { nodeIdFromPubKey } from '../../../src/privval/identity.ts';
import { InMemorySigningHandler } from '../../../src/privval/memory-handler.ts';
import { SignRecord } from '../../../src/simulator/sign-record.ts';
import { type SimulatorOptions, ValidatorSimulator } from '../../../src/simulator/simulator.ts';

const logger = pino({ level: 'silent' });
const CHAIN = 'detect-chain';
const KEY = new Uint8Array(32).fill(3);

function dialerFor(addr: string, version: ProtocolVersion, handler: RequestHandler): ValidatorDialer {
  const seed = new Uint8Array(randomBytes(32));
  const publicKey = ed25519.getPublicKey(seed);
  const dialer = new ValidatorDialer({
    addr,
    version,
    identity: { seed, publicKey, nodeId: nodeIdFromPubKey(publicKey) },
    handler,
    logger,
  });
  dialer.start();
  return dialer;
}

/** A handler that lets `tamper` rewrite the honest handler's replies. */
function tampering(
  version: ProtocolVersion,
  tamper: (reply: PrivvalMessage, request: PrivvalMessage) => PrivvalMessage,
): RequestHandler {
  const honest = new InMemorySigningHandler({ chainId: CHAIN, version, privateKey: KEY });
  return { handle: async (req) => tamper(await honest.handle(req), req) };
}

/** A signer with no memory at all: signs whatever it is asked (a double-signing KMS). */
function forgetful(version: ProtocolVersion): RequestHandler {
  return {
    handle: (req) => new InMemorySigningHandler({ chainId: CHAIN, version, privateKey: KEY }).handle(req),
  };
}

async function runWith(
  handler: RequestHandler,
  version: ProtocolVersion,
  opts: Partial<SimulatorOptions> = {},
) {
  const sim = new ValidatorSimulator({
    listen: 'tcp://127.0.0.1:0',
    chainId: CHAIN,
    protocol: version,
    blockTimeMs: 0,
    heights: 4,
    proposerEvery: 1,
    nilVoteRate: 0,
    roundChangeRate: 0,
    retryRate: 0,
    retry: { attempts: 5, delayMs: 1 },
    logger,
    ...opts,
  });
  const dialer = dialerFor(await sim.listen(), version, handler);
  try {
    return await sim.run();
  } finally {
    await dialer.stop();
    await sim.close();
  }
}

describe('simulator checks', () => {
  it('detects an invalid vote signature', async () => {
    const handler = tampering('v0.37', (reply) => {
      if (reply.kind !== 'signedVoteResponse' || reply.vote.height !== 2n) return reply;
      const signature = reply.vote.signature.slice();
      signature[0] = (signature[0] ?? 0) ^ 1;
      return { ...reply, vote: { ...reply.vote, signature } };
    });
    const s = await runWith(handler, 'v0.37');
    assert.equal(s.invalidSignatures, 2, 'prevote and precommit at height 2');
    assert.equal(s.signed, 10);
    assert.match(s.problems.join('\n'), /invalid signature on prevote 2\/0/);
  });

  it('detects an extension signature on a prevote and a missing one on a non-nil precommit', async () => {
    const extSig = new Uint8Array(64).fill(1);
    const handler = tampering('v0.38', (reply) => {
      if (reply.kind !== 'signedVoteResponse' || reply.vote.height !== 3n) return reply;
      const v = reply.vote;
      return {
        ...reply,
        vote: { ...v, extensionSignature: v.type === SignedMsgType.Prevote ? extSig : new Uint8Array(0) },
      };
    });
    const s = await runWith(handler, 'v0.38');
    assert.equal(s.invalidSignatures, 2);
    assert.match(s.problems.join('\n'), /extension signature on prevote 3\/0 \(a node would panic\)/);
    assert.match(s.problems.join('\n'), /missing extension signature on precommit 3\/0/);
  });

  it('re-sends after an empty reply and counts it', async () => {
    let emptied = false;
    const handler = tampering('v1.0', (reply, req) => {
      if (!emptied && req.kind === 'signVoteRequest' && req.vote?.height === 2n) {
        emptied = true;
        return { kind: 'empty' };
      }
      return reply;
    });
    const s = await runWith(handler, 'v1.0');
    assert.equal(s.emptyReplies, 1);
    assert.equal(s.retried, 1);
    assert.equal(s.signed, 12);
    assert.equal(s.invalidSignatures, 0);
  });

  it('applies a returned vote timestamp before verifying (timestamp-only path)', async () => {
    const version: ProtocolVersion = 'v0.38';
    const handler = new InMemorySigningHandler({ chainId: CHAIN, version, privateKey: KEY });
    const record = new SignRecord();
    const [a, b] = [0, 1].map(
      () =>
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: CHAIN,
          protocol: version,
          blockTimeMs: 0,
          heights: 0,
          record,
          logger,
        }),
    ) as [ValidatorSimulator, ValidatorSimulator];
    const dialers = [
      dialerFor(await a.listen(), version, handler),
      dialerFor(await b.listen(), version, handler),
    ];
    try {
      const block = a.blockIdFor(1n, 0);
      const first = a.buildVote(SignedMsgType.Prevote, 1n, 0, block);
      const second = { ...first, timestamp: { seconds: first.timestamp.seconds + 1n, nanos: 5 } };
      const r1 = await a.requestVote(first);
      const r2 = await b.requestVote(second);
      assert.equal(r2.kind === 'signedVoteResponse' && r2.vote.timestamp.seconds, first.timestamp.seconds);
      assert.deepEqual(
        r1.kind === 'signedVoteResponse' && r1.vote.signature,
        r2.kind === 'signedVoteResponse' && r2.vote.signature,
      );
      assert.equal(a.summary().signed + b.summary().signed, 2);
      assert.equal(b.summary().invalidSignatures, 0);
      assert.equal(record.doubleSigns.length, 0);
    } finally {
      await Promise.all(dialers.map((d) => d.stop()));
      await Promise.all([a.close(), b.close()]);
    }
  });

  for (const kind of ['honest', 'forgetful'] as const) {
    it(`race mode, ${kind} signer: conflicting votes from two nodes ${kind === 'honest' ? 'are refused' : 'are caught as a double sign'}`, async () => {
      const version: ProtocolVersion = 'v1.0';
      const handler =
        kind === 'honest'
          ? new InMemorySigningHandler({ chainId: CHAIN, version, privateKey: KEY })
          : forgetful(version);
      const record = new SignRecord();
      const mk = () =>
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: CHAIN,
          protocol: version,
          blockTimeMs: 0,
          heights: 0,
          record,
          logger,
        });
      const a = mk();
      const b = mk();
      const dialers = [
        dialerFor(await a.listen(), version, handler),
        dialerFor(await b.listen(), version, handler),
      ];
      try {
        const nil = { hash: new Uint8Array(0), partSetHeader: { total: 0, hash: new Uint8Array(0) } };
        const forBlock = a.buildVote(SignedMsgType.Precommit, 7n, 0, a.blockIdFor(7n, 0), Uint8Array.of(1));
        const forNil = b.buildVote(SignedMsgType.Precommit, 7n, 0, nil);
        const replies = await Promise.all([a.requestVote(forBlock), b.requestVote(forNil)]);
        const refused = replies.filter((r) => r.kind === 'signedVoteResponse' && r.error).length;
        if (kind === 'honest') {
          assert.equal(refused, 1);
          assert.equal(record.doubleSigns.length, 0);
        } else {
          assert.equal(refused, 0);
          assert.equal(record.doubleSigns.length, 1);
          assert.equal(a.summary().doubleSigns + b.summary().doubleSigns, 1);
          assert.equal(record.doubleSigns[0]?.height, 7n);
        }
        assert.equal(a.summary().invalidSignatures + b.summary().invalidSignatures, 0);
      } finally {
        await Promise.all(dialers.map((d) => d.stop()));
        await Promise.all([a.close(), b.close()]);
      }
    });
  }

  it('fails run() with a clear error when no signer connects in time', async () => {
    const sim = new ValidatorSimulator({
      listen: 'tcp://127.0.0.1:0',
      chainId: CHAIN,
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 1,
      connectTimeoutMs: 50,
      logger,
    });
    try {
      await assert.rejects(sim.run(), /no signer connected to tcp:\/\/127\.0\.0\.1:\d+ within 50 ms/);
    } finally {
      await sim.close();
    }
  });
});
