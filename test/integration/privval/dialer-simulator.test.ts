import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import pino from 'pino';
import { STUCK_LINK_HOLD_OFF_MS, YieldWhenStuck } from '../../../src/cluster/stuck-link.ts';
import { tryAgain } from '../../../src/cometbft/replies.ts';
import { PROTOCOL_VERSIONS, type ProtocolVersion, SignedMsgType } from '../../../src/cometbft/types.ts';
import { ValidatorDialer } from '../../../src/privval/dialer.ts';
import type { RequestHandler } from '../../../src/privval/handler.ts';
import { nodeIdFromPubKey, type TransportIdentity } from '../../../src/privval/identity.ts';
import { InMemorySigningHandler } from '../../../src/privval/memory-handler.ts';
import { SignRecord } from '../../../src/simulator/sign-record.ts';
import { type SimulatorOptions, ValidatorSimulator } from '../../../src/simulator/simulator.ts';

const logger = pino({ level: 'silent' });
const CHAIN = 'sim-chain';

function identity(): TransportIdentity {
  const seed = new Uint8Array(randomBytes(32));
  const publicKey = ed25519.getPublicKey(seed);
  return { seed, publicKey, nodeId: nodeIdFromPubKey(publicKey) };
}

function memoryHandler(version: ProtocolVersion): InMemorySigningHandler {
  return new InMemorySigningHandler({ chainId: CHAIN, version, privateKey: new Uint8Array(randomBytes(32)) });
}

/** Runs one simulator against one dialer and returns the summary; everything is closed after. */
async function simulate(
  listen: string,
  version: ProtocolVersion,
  overrides: Partial<SimulatorOptions>,
  handler = memoryHandler(version),
) {
  const sim = new ValidatorSimulator({
    listen,
    chainId: CHAIN,
    protocol: version,
    blockTimeMs: 0,
    heights: 10,
    seed: 7,
    connectTimeoutMs: 10_000,
    logger,
    ...overrides,
  });
  const dialer = new ValidatorDialer({
    addr: await sim.listen(),
    version,
    identity: identity(),
    handler,
    logger,
  });
  dialer.start();
  try {
    const summary = await sim.run();
    assert.ok(dialer.connected);
    return { summary, status: dialer.status };
  } finally {
    await dialer.stop();
    await sim.close();
  }
}

describe('dialer ↔ simulator with the in-memory handler', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ckms-sim-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const version of PROTOCOL_VERSIONS) {
    for (const transport of ['tcp', 'unix'] as const) {
      it(`${version} over ${transport}: every height signed, exact counts, no double sign`, async () => {
        const listen = transport === 'tcp' ? 'tcp://127.0.0.1:0' : `unix://${join(dir, `${version}.sock`)}`;
        const heights = 12;
        const { summary, status } = await simulate(listen, version, {
          heights,
          proposerEvery: 1,
          nilVoteRate: 0,
          roundChangeRate: 0,
          retryRate: 0,
        });
        assert.equal(summary.heightsCompleted, heights);
        assert.equal(summary.lastHeight, heights);
        assert.equal(summary.signed, heights * 3, 'a proposal, a prevote and a precommit per height');
        assert.equal(summary.refused, 0);
        assert.equal(summary.retried, 0);
        assert.equal(summary.emptyReplies, 0);
        assert.equal(summary.invalidSignatures, 0);
        assert.equal(summary.doubleSigns, 0);
        assert.equal(summary.unanswered, 0);
        assert.equal(summary.connects, 1);
        assert.deepEqual(summary.problems, []);
        assert.equal(status.connects, 1);
        assert.equal(status.remoteNodeId !== undefined, transport === 'tcp');
      });
    }
  }

  it('reports round trips by request type, and from restartLatencies on', async () => {
    // Prevotes are held 200 ms by the signer, the others answered at once: only the prevotes'
    // figures can hold the delay, whatever the machine's speed.
    const HOLD_MS = 200;
    const inner = memoryHandler('v0.38');
    const holdPrevotes: RequestHandler = {
      async handle(request) {
        if (request.kind === 'signVoteRequest' && request.vote?.type === SignedMsgType.Prevote) {
          await new Promise((r) => setTimeout(r, HOLD_MS));
        }
        return inner.handle(request);
      },
    };
    const sim = new ValidatorSimulator({
      listen: 'tcp://127.0.0.1:0',
      chainId: CHAIN,
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 5,
      seed: 7,
      proposerEvery: 1,
      nilVoteRate: 0,
      roundChangeRate: 0,
      retryRate: 0,
      connectTimeoutMs: 10_000,
      logger,
    });
    const dialer = new ValidatorDialer({
      addr: await sim.listen(),
      version: 'v0.38',
      identity: identity(),
      handler: holdPrevotes,
      logger,
    });
    dialer.start();
    try {
      const summary = await sim.run();
      assert.equal(summary.signed, 15);
      const { proposal, prevote, precommit } = summary.latencyByTypeMs;
      assert.ok(prevote.p50 >= HOLD_MS, `prevote p50 ${prevote.p50}`);
      assert.ok(proposal.p50 < HOLD_MS && precommit.p50 < HOLD_MS, JSON.stringify(summary.latencyByTypeMs));
      assert.ok(summary.latencyMs.p99 >= HOLD_MS, 'all requests together include the prevotes');

      sim.restartLatencies();
      const restarted = sim.summary();
      assert.deepEqual(restarted.latencyMs, { p50: 0, p99: 0 }, 'no round trip since the restart');
      assert.deepEqual(restarted.latencyByTypeMs.prevote, { p50: 0, p99: 0 });
      assert.equal(restarted.signed, 15, 'the counters are kept');
    } finally {
      await dialer.stop();
      await sim.close();
    }
  });

  it('random nil votes, round changes and identical retries: all signed, retries answered identically', async () => {
    const { summary } = await simulate('tcp://127.0.0.1:0', 'v0.38', {
      heights: 30,
      seed: 99,
      proposerEvery: 2,
      nilVoteRate: 0.2,
      roundChangeRate: 0.2,
      retryRate: 0.3,
    });
    assert.equal(summary.heightsCompleted, 30);
    assert.ok(summary.signed >= 60, `signed ${summary.signed}`);
    assert.ok(summary.retried > 0, 'the seed produces identical retries');
    assert.equal(summary.refused, 0);
    assert.equal(summary.invalidSignatures, 0);
    assert.equal(summary.doubleSigns, 0);
    assert.deepEqual(summary.problems, []);
  });

  it('signs votes whose extension makes the echoed reply exceed 10 KiB', async () => {
    const { summary } = await simulate('tcp://127.0.0.1:0', 'v0.38', {
      heights: 3,
      extensionBytes: 12_000,
      proposerEvery: 1,
      nilVoteRate: 0,
      roundChangeRate: 0,
      retryRate: 0,
    });
    assert.equal(summary.signed, 9);
    assert.equal(summary.invalidSignatures, 0);
    assert.equal(summary.emptyReplies, 0);
  });

  it('two sentries sharing one key and one record: conflicts are refused, never double-signed', async () => {
    const version: ProtocolVersion = 'v1.0';
    const handler = memoryHandler(version);
    const record = new SignRecord();
    const sims = [0, 1].map(
      (i) =>
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: CHAIN,
          protocol: version,
          blockTimeMs: 0,
          heights: 15,
          seed: 100 + i,
          nilVoteRate: 0.3,
          roundChangeRate: 0.1,
          proposerEvery: 1,
          record,
          logger,
        }),
    );
    const dialers: ValidatorDialer[] = [];
    for (const sim of sims) {
      const dialer = new ValidatorDialer({
        addr: await sim.listen(),
        version,
        identity: identity(),
        handler,
        logger,
      });
      dialer.start();
      dialers.push(dialer);
    }
    try {
      const summaries = await Promise.all(sims.map((s) => s.run()));
      const total = (k: 'signed' | 'refused' | 'doubleSigns' | 'invalidSignatures') =>
        summaries.reduce((acc, s) => acc + s[k], 0);
      assert.equal(total('doubleSigns'), 0);
      assert.equal(total('invalidSignatures'), 0);
      assert.equal(record.doubleSigns.length, 0);
      assert.ok(total('signed') > 0);
      assert.ok(total('refused') > 0, 'sentries that disagree get refusals');
    } finally {
      await Promise.all(dialers.map((d) => d.stop()));
      await Promise.all(sims.map((s) => s.close()));
    }
  });

  it('a signer that can only answer "try again" lets the connection go to one that can sign', async () => {
    const version: ProtocolVersion = 'v0.38';
    const signer = memoryHandler(version);
    // Like a cluster node cut from etcd and from the leader: it holds the connection, knows the
    // public key, and can sign nothing.
    const cutOff: RequestHandler = {
      handle: (req) =>
        req.kind === 'signVoteRequest' || req.kind === 'signProposalRequest'
          ? Promise.resolve(tryAgain())
          : signer.handle(req),
    };
    const sim = new ValidatorSimulator({
      listen: 'tcp://127.0.0.1:0',
      chainId: CHAIN,
      protocol: version,
      blockTimeMs: 0,
      heights: 4,
      seed: 11,
      // one request is re-sent for 4 s: longer than the 2 s after which a stuck signer yields
      retry: { attempts: 40, delayMs: 100 },
      logger,
    });
    const addr = await sim.listen();
    let stuck: ValidatorDialer | undefined;
    const yielding = new YieldWhenStuck(cutOff, {
      now: () => performance.now(),
      onStuck: (why) => stuck?.yieldLink(STUCK_LINK_HOLD_OFF_MS, why),
    });
    stuck = new ValidatorDialer({ addr, version, identity: identity(), handler: yielding, logger });
    const able = new ValidatorDialer({ addr, version, identity: identity(), handler: signer, logger });
    const running = sim.run();
    stuck.start();
    await until(() => stuck?.connected === true, 5_000);
    able.start();
    try {
      const summary = await running;
      assert.equal(summary.unanswered, 0, summary.problems.join('; '));
      assert.equal(summary.heightsCompleted, 4);
      assert.ok(summary.signed >= 8, `signed ${summary.signed}`);
      assert.ok(
        summary.emptyReplies > 0,
        'the first signer did hold the connection and answered "try again"',
      );
      assert.equal(able.connected, true);
      assert.equal(stuck.status.connects, 1);
    } finally {
      await Promise.all([stuck.stop(), able.stop()]);
      await sim.close();
    }
  });
});

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
