/**
 * YieldWhenStuck: a validator connection on which every signing request got "try again" for
 * the stuck time is let go, once per spell; a signature or a refusal, and requests that need no
 * leader (PubKey, Ping), do not count as stuck.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { YieldWhenStuck } from '../../../src/cluster/stuck-link.ts';
import { refusedVote, tryAgain } from '../../../src/cometbft/replies.ts';
import type { PrivvalMessage } from '../../../src/cometbft/types.ts';
import type { RequestHandler } from '../../../src/privval/handler.ts';

const vote = { kind: 'signVoteRequest' } as PrivvalMessage;
const pubKey = { kind: 'pubKeyRequest', chainId: 'c' } as PrivvalMessage;

/** A handler whose next answers are set by the test, on a clock the test moves. */
function rig(stuckAfterMs = 2_000) {
  let now = 0;
  let next: PrivvalMessage = tryAgain();
  const stuck: string[] = [];
  const inner: RequestHandler = { handle: () => Promise.resolve(next) };
  const h = new YieldWhenStuck(inner, { now: () => now, stuckAfterMs, onStuck: (why) => stuck.push(why) });
  return {
    stuck,
    reset: () => h.reset(),
    answer(m: PrivvalMessage) {
      next = m;
    },
    async at(ms: number, req: PrivvalMessage = vote): Promise<PrivvalMessage> {
      now = ms;
      const reply = await h.handle(req);
      await new Promise((r) => setImmediate(r));
      return reply;
    },
  };
}

describe('YieldWhenStuck', () => {
  it('lets go after every signing request got "try again" for the stuck time, once per spell', async () => {
    const r = rig();
    await r.at(0);
    await r.at(1_000);
    await r.at(1_999);
    assert.equal(r.stuck.length, 0);
    assert.equal((await r.at(2_000)).kind, 'empty', 'the reply itself is passed through');
    assert.equal(r.stuck.length, 1);
    assert.match(r.stuck[0]!, /2000 ms/);
    await r.at(2_500);
    assert.equal(r.stuck.length, 1, 'a new spell starts after letting go');
    await r.at(4_500);
    assert.equal(r.stuck.length, 2);
  });

  it('a refusal or a signature shows the node can serve: the count starts over', async () => {
    const r = rig();
    await r.at(0);
    r.answer(refusedVote('conflicting data'));
    await r.at(1_500);
    r.answer(tryAgain());
    await r.at(1_600);
    await r.at(3_500);
    assert.equal(r.stuck.length, 0, 'only 1.9 s of "try again" since the refusal');
    await r.at(3_600);
    assert.equal(r.stuck.length, 1);
  });

  it('requests that need no leader neither count nor reset', async () => {
    const r = rig();
    r.answer({ kind: 'empty' } as PrivvalMessage);
    await r.at(0);
    await r.at(1_000, pubKey);
    await r.at(2_100, pubKey);
    assert.equal(r.stuck.length, 0, 'only signing requests can be stuck');
    await r.at(2_100);
    assert.equal(r.stuck.length, 1);
  });

  it('a new connection starts with a clean count', async () => {
    const r = rig();
    await r.at(0);
    r.reset();
    await r.at(1_500);
    await r.at(3_000);
    assert.equal(r.stuck.length, 0, '1.5 s of "try again" on the new connection');
    await r.at(3_500);
    assert.equal(r.stuck.length, 1);
  });
});
