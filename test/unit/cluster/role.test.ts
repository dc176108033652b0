import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { LeaderInfo, Role } from '../../../src/cluster/leadership.ts';
import { RoleTransitions } from '../../../src/cluster/role.ts';

/** A leadership stand-in whose role and token the test sets. */
class FakeLeadership {
  role: Role = 'follower';
  token: { createRevision: string } | undefined;
  leader: LeaderInfo | undefined;
  resigned = 0;
  async resign(): Promise<void> {
    this.resigned++;
    this.role = 'follower';
    this.token = undefined;
  }
  win(term: string): void {
    this.role = 'leader';
    this.token = { createRevision: term };
    this.leader = { nodeId: 'me', advertise: 'me:1' };
  }
}

function setup(opts: { failInit?: boolean } = {}) {
  const events: string[] = [];
  const leadership = new FakeLeadership();
  const guard = {
    init: async () => {
      events.push('init');
      if (opts.failInit) throw new Error('etcd down');
    },
  };
  const roles = new RoleTransitions({
    nodeId: 'me',
    leadership,
    guards: () => [guard, guard],
    session: {
      open: async () => {
        events.push('open');
      },
      close: async () => {
        events.push('close');
      },
    },
    setForwardTarget: (l) => events.push(`forward:${l?.nodeId ?? 'none'}`),
    stopping: () => false,
    onServing: (s) => events.push(`serving:${s}`),
    log: { info: () => undefined, warn: () => undefined, error: () => undefined },
  });
  return { roles, leadership, events };
}

it('on winning: every guard reloads, then the session opens, then the node serves', async () => {
  const { roles, leadership, events } = setup();
  leadership.win('7');
  roles.onLeader();
  assert.equal(roles.servesLocally(), false, 'not before the reloads');
  await roles.settled();
  assert.deepEqual(events, ['forward:none', 'init', 'init', 'open', 'serving:true']);
  assert.equal(roles.servesLocally(), true);
});

it('on losing: stops serving at once, then closes the session and forwards to the new leader', async () => {
  const { roles, leadership, events } = setup();
  leadership.win('7');
  roles.onLeader();
  await roles.settled();
  events.length = 0;
  leadership.role = 'follower';
  leadership.token = undefined;
  leadership.leader = { nodeId: 'other', advertise: 'other:1' };
  roles.onFollower(leadership.leader);
  assert.equal(roles.servesLocally(), false);
  await roles.settled();
  assert.deepEqual(events, ['serving:false', 'forward:other', 'close', 'forward:other']);
});

it('a term that ended before its reloads finished never serves', async () => {
  const { roles, leadership, events } = setup();
  leadership.win('7');
  roles.onLeader();
  leadership.win('9'); // another term (another token) before the queued transition ran
  await roles.settled();
  assert.equal(roles.serving, false);
  assert.ok(!events.includes('open'));
});

it('a reload failure closes the session and hands the leadership over', async () => {
  const { roles, leadership, events } = setup({ failInit: true });
  leadership.win('7');
  roles.onLeader();
  await roles.settled();
  assert.equal(leadership.resigned, 1);
  assert.equal(roles.serving, false);
  assert.deepEqual(events, ['forward:none', 'init', 'close']);
});
