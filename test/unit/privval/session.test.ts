import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { encodeUvarint, FrameDecoder, lengthPrefixed } from '../../../src/cometbft/framing.ts';
import { decodeMessage, encodeMessage, zeroVote } from '../../../src/cometbft/messages.ts';
import type { PrivvalMessage, ProtocolVersion, Vote } from '../../../src/cometbft/types.ts';
import type { RequestHandler } from '../../../src/privval/handler.ts';
import { runSession } from '../../../src/privval/session.ts';

/** Two in-memory Duplex ends: what one writes, the other reads. */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (other: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        other().push(chunk);
        cb();
      },
      final(cb) {
        other().push(null);
        cb();
      },
    });
  ends.push(
    make(() => ends[1] as Duplex),
    make(() => ends[0] as Duplex),
  );
  return [ends[0] as Duplex, ends[1] as Duplex];
}

/** The node's end: sends requests, collects decoded replies. */
class Peer {
  readonly replies: PrivvalMessage[] = [];
  readonly rawReplies: Uint8Array[] = [];
  private readonly decoder = new FrameDecoder({ maxLength: 10240 });
  private waiters: (() => void)[] = [];

  constructor(
    readonly end: Duplex,
    private readonly version: ProtocolVersion,
  ) {
    end.on('data', (chunk: Uint8Array) => {
      for (const body of this.decoder.push(chunk)) {
        this.rawReplies.push(body);
        this.replies.push(decodeMessage(body, version));
      }
      for (const w of this.waiters.splice(0)) w();
    });
    end.on('error', () => {});
  }

  frame(msg: PrivvalMessage): Uint8Array {
    return lengthPrefixed(encodeMessage(msg, this.version));
  }

  send(msg: PrivvalMessage): void {
    this.end.write(this.frame(msg));
  }

  async waitReplies(n: number): Promise<PrivvalMessage[]> {
    while (this.replies.length < n) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.replies;
  }
}

function vote(height: bigint, extension = new Uint8Array(0)): Vote {
  return { ...zeroVote(), type: 2, height, round: 0, extension };
}

function signRequest(v: Vote): PrivvalMessage {
  return { kind: 'signVoteRequest', vote: v, chainId: 'test-chain', skipExtensionSigning: false };
}

/** Echoes votes with a fake signature; records the order of events. */
class RecordingHandler implements RequestHandler {
  readonly events: string[] = [];
  active = 0;
  maxActive = 0;
  gate: Promise<void> = Promise.resolve();

  async handle(request: PrivvalMessage): Promise<PrivvalMessage> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    const h = request.kind === 'signVoteRequest' ? String(request.vote?.height) : request.kind;
    this.events.push(`start ${h}`);
    await this.gate;
    this.events.push(`end ${h}`);
    this.active--;
    if (request.kind !== 'signVoteRequest' || !request.vote) return { kind: 'empty' };
    return { kind: 'signedVoteResponse', vote: { ...request.vote, signature: new Uint8Array(64).fill(7) } };
  }
}

const REPLIES_PER_LEAK_CHECK = 20_000;

describe('runSession', () => {
  it('answers Ping itself with PingResponse, without calling the handler', async () => {
    const [kms, node] = duplexPair();
    const handler = new RecordingHandler();
    const done = runSession(kms, { version: 'v0.38', handler });
    const peer = new Peer(node, 'v0.38');
    node.write(Uint8Array.from([0x02, 0x3a, 0x00]));
    await peer.waitReplies(1);
    assert.deepEqual([...(peer.rawReplies[0] as Uint8Array)], [0x42, 0x00]);
    assert.deepEqual(handler.events, []);
    node.end();
    const end = await done;
    assert.equal(end.reason, 'eof');
    assert.equal(end.requests, 1);
  });

  it('handles pipelined requests strictly one at a time and in order', async () => {
    const [kms, node] = duplexPair();
    const handler = new RecordingHandler();
    let release!: () => void;
    handler.gate = new Promise((resolve) => {
      release = resolve;
    });
    const done = runSession(kms, { version: 'v0.38', handler });
    const peer = new Peer(node, 'v0.38');
    // Three requests in one write: the session must not start the second before replying to the first.
    node.write(
      Buffer.concat([
        peer.frame(signRequest(vote(1n))),
        peer.frame(signRequest(vote(2n))),
        peer.frame(signRequest(vote(3n))),
      ]),
    );
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(handler.events, ['start 1']);
    release();
    const replies = await peer.waitReplies(3);
    assert.deepEqual(
      replies.map((r) => (r.kind === 'signedVoteResponse' ? r.vote.height : undefined)),
      [1n, 2n, 3n],
    );
    assert.equal(handler.maxActive, 1);
    assert.deepEqual(handler.events, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
    node.end();
    assert.equal((await done).requests, 3);
  });

  it('reassembles a request delivered one byte at a time', async () => {
    const [kms, node] = duplexPair();
    const done = runSession(kms, { version: 'v1.0', handler: new RecordingHandler() });
    const peer = new Peer(node, 'v1.0');
    for (const byte of peer.frame(signRequest(vote(9n)))) {
      node.write(Uint8Array.of(byte));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const [reply] = await peer.waitReplies(1);
    assert.equal(reply?.kind, 'signedVoteResponse');
    node.end();
    await done;
  });

  it('replies with an empty Message when the handler throws, and keeps serving', async () => {
    const [kms, node] = duplexPair();
    let calls = 0;
    const handler: RequestHandler = {
      async handle() {
        calls++;
        if (calls === 1) throw new Error('HSM unplugged');
        return { kind: 'pubKeyResponse', pubKey: { type: 'ed25519', bytes: new Uint8Array(32) } };
      },
    };
    const done = runSession(kms, { version: 'v0.34', handler });
    const peer = new Peer(node, 'v0.34');
    peer.send({ kind: 'pubKeyRequest', chainId: 'c' });
    peer.send({ kind: 'pubKeyRequest', chainId: 'c' });
    const replies = await peer.waitReplies(2);
    assert.equal(replies[0]?.kind, 'empty');
    assert.equal(peer.rawReplies[0]?.length, 0);
    assert.equal(replies[1]?.kind, 'pubKeyResponse');
    node.end();
    await done;
  });

  it('replies with an empty Message to a well-framed body that does not decode', async () => {
    const [kms, node] = duplexPair();
    const done = runSession(kms, { version: 'v0.38', handler: new RecordingHandler() });
    const peer = new Peer(node, 'v0.38');
    // Field 1 with wire type 7 (invalid), framed correctly; then a Ping.
    node.write(Uint8Array.from([0x02, 0x0f, 0x00, 0x02, 0x3a, 0x00]));
    const replies = await peer.waitReplies(2);
    assert.deepEqual(
      replies.map((r) => r.kind),
      ['empty', 'pingResponse'],
    );
    node.end();
    await done;
  });

  it('closes the connection on a length prefix above the request limit', async () => {
    const [kms, node] = duplexPair();
    const handler = new RecordingHandler();
    const done = runSession(kms, { version: 'v0.38', handler, maxRequestSize: 4096 });
    node.on('error', () => {});
    node.write(encodeUvarint(4097));
    const end = await done;
    assert.equal(end.reason, 'framing-error');
    assert.ok(kms.destroyed);
    assert.deepEqual(handler.events, []);
  });

  it('drops an oversize echoed extension from a signed vote reply', async () => {
    const [kms, node] = duplexPair();
    const done = runSession(kms, { version: 'v0.38', handler: new RecordingHandler() });
    const peer = new Peer(node, 'v0.38');
    peer.send(signRequest(vote(5n, new Uint8Array(12_000).fill(1))));
    const [reply] = await peer.waitReplies(1);
    assert.equal(reply?.kind, 'signedVoteResponse');
    assert.ok((peer.rawReplies[0]?.length ?? Infinity) <= 10240);
    if (reply?.kind === 'signedVoteResponse') {
      assert.equal(reply.vote.extension.length, 0);
      assert.equal(reply.vote.signature.length, 64);
    }
    node.end();
    await done;
  });

  it('replies with an empty Message when a reply stays too large', async () => {
    const [kms, node] = duplexPair();
    const handler: RequestHandler = {
      async handle() {
        return {
          kind: 'signedVoteResponse',
          vote: zeroVote(),
          error: { code: 0, description: 'x'.repeat(11_000) },
        };
      },
    };
    const done = runSession(kms, { version: 'v0.38', handler });
    const peer = new Peer(node, 'v0.38');
    peer.send(signRequest(vote(1n)));
    const [reply] = await peer.waitReplies(1);
    assert.equal(reply?.kind, 'empty');
    node.end();
    await done;
  });

  it('ends after the idle timeout when the node goes silent', async () => {
    const [kms] = duplexPair();
    const end = await runSession(kms, {
      version: 'v0.38',
      handler: new RecordingHandler(),
      idleTimeoutMs: 30,
    });
    assert.equal(end.reason, 'idle-timeout');
    assert.ok(kms.destroyed);
  });

  it('a peer trickling one byte at a time cannot hold the connection open', async () => {
    const [kms, node] = duplexPair();
    const done = runSession(kms, { version: 'v0.38', handler: new RecordingHandler(), idleTimeoutMs: 100 });
    const frame = new Peer(node, 'v0.38').frame(signRequest(vote(1n, new Uint8Array(500))));
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent < frame.length) node.write(frame.subarray(sent, ++sent));
    }, 5);
    try {
      const end = await done;
      assert.equal(end.reason, 'idle-timeout');
      // bytes kept arriving far more often than the idle timeout, but never a whole request
      assert.ok(sent >= 3 && sent < frame.length, `${sent} of ${frame.length} bytes sent`);
    } finally {
      clearInterval(trickle);
    }
  });

  it('a node that never reads its replies is dropped after the write timeout', async () => {
    // The KMS end of a socket whose peer never reads: writes are accepted but never completed.
    let pending = 0;
    const kms = new Duplex({
      read() {},
      write(_chunk, _enc, _cb) {
        pending++;
      },
    });
    const done = runSession(kms, {
      version: 'v0.38',
      handler: new RecordingHandler(),
      writeTimeoutMs: 30,
      idleTimeoutMs: 10_000,
    });
    kms.push(lengthPrefixed(encodeMessage({ kind: 'pingRequest' }, 'v0.38')));
    const end = await done;
    assert.equal(end.reason, 'write-timeout');
    assert.equal(pending, 1);
    assert.ok(kms.destroyed);
  });

  it('a request of a known type with out-of-range values gets a refusal of its type, not an endless retry', async () => {
    const [kms, node] = duplexPair();
    const done = runSession(kms, { version: 'v0.38', handler: new RecordingHandler() });
    const peer = new Peer(node, 'v0.38');
    const len = (b: number[]) => [b.length, ...b];
    const chainId = [0x12, ...len([...Buffer.from('test-chain')])];
    // SignVoteRequest{vote: Vote{round: 2^31}}: the round varint does not fit an int32
    const roundVote = [0x18, 0x80, 0x80, 0x80, 0x80, 0x08];
    // SignVoteRequest{vote: Vote{timestamp: {seconds: 253402300800}}}: year 10000
    const seconds = [...encodeUvarint(253402300800n)];
    const lateVote = [0x2a, ...len([0x08, ...seconds])];
    // SignProposalRequest{proposal: Proposal{round: 2^31}}
    const roundProposal = [0x18, 0x80, 0x80, 0x80, 0x80, 0x08];
    const frames = [
      [0x1a, ...len([0x0a, ...len(roundVote), ...chainId])],
      [0x1a, ...len([0x0a, ...len(lateVote), ...chainId])],
      [0x2a, ...len([0x0a, ...len(roundProposal), ...chainId])],
    ];
    for (const f of frames) node.write(lengthPrefixed(Uint8Array.from(f)));
    const replies = await peer.waitReplies(3);
    assert.deepEqual(
      replies.map((r) => r.kind),
      ['signedVoteResponse', 'signedVoteResponse', 'signedProposalResponse'],
    );
    const errors = replies.map((r) => ('error' in r ? r.error?.description : undefined));
    assert.match(errors[0] ?? '', /^unable to decode signVoteRequest: Vote\.round out of int32 range/);
    assert.match(errors[1] ?? '', /^unable to decode signVoteRequest: Vote\.timestamp\.seconds out of range/);
    assert.match(
      errors[2] ?? '',
      /^unable to decode signProposalRequest: Proposal\.round out of int32 range/,
    );
    node.end();
    await done;
  });

  it('waits for the in-flight request when the stream is destroyed, and writes nothing', async () => {
    const [kms, node] = duplexPair();
    const handler = new RecordingHandler();
    let release!: () => void;
    handler.gate = new Promise((resolve) => {
      release = resolve;
    });
    const done = runSession(kms, { version: 'v0.38', handler });
    const peer = new Peer(node, 'v0.38');
    peer.send(signRequest(vote(1n)));
    peer.send(signRequest(vote(2n)));
    while (handler.events.length === 0) await new Promise((resolve) => setImmediate(resolve));
    kms.destroy();
    let settled = false;
    void done.then(() => {
      settled = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(settled, false, 'the session must not end while the handler runs');
    release();
    const end = await done;
    assert.equal(end.reason, 'closed');
    assert.equal(end.requests, 0);
    assert.deepEqual(handler.events, ['start 1', 'end 1']);
    assert.equal(peer.replies.length, 0);
  });

  it('holds nothing per reply, however long the connection lives', async () => {
    // A validator connection lives for days at a few replies per second: anything the session
    // keeps per reply until it ends grows without bound. So the heap, after a forced GC, must not
    // grow with the number of replies a live session has written.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const kms = new Duplex({
      read() {},
      write(_chunk, _enc, cb) {
        cb();
      },
    });
    const done = runSession(kms, { version: 'v0.38', handler: new RecordingHandler() });
    const ping = lengthPrefixed(encodeMessage({ kind: 'pingRequest' }, 'v0.38'));
    const reply = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        kms.push(ping);
        // one request at a time, each answered before the next, as a node sends them
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const heapAfterGc = async (): Promise<number> => {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      return process.memoryUsage().heapUsed;
    };
    await reply(1_000); // warm-up: code, caches
    const before = await heapAfterGc();
    await reply(REPLIES_PER_LEAK_CHECK);
    const grown = (await heapAfterGc()) - before;
    kms.push(null);
    assert.equal((await done).requests, 1_000 + REPLIES_PER_LEAK_CHECK);
    // 100 bytes kept per reply would be 2 MB here (the race this replaced kept about 640)
    assert.ok(grown < 2_000_000, `the heap grew by ${grown} bytes over ${REPLIES_PER_LEAK_CHECK} replies`);
  });

  it('ends at once on an already destroyed stream', async () => {
    const [kms] = duplexPair();
    kms.destroy();
    assert.equal(
      (await runSession(kms, { version: 'v0.38', handler: new RecordingHandler() })).reason,
      'closed',
    );
  });
});
