import assert from 'node:assert/strict';
import { it } from 'node:test';
import { LeaderWatch } from '../../../src/cluster/leader-watch.ts';
import type { Clock, Timer } from '../../../src/ports/clock.ts';
import type { PeerAddress, PeerPort } from '../../../src/ports/peers.ts';

/** A clock whose time moves only when the test says; due timers run in order. */
class ManualClock implements Clock {
  t = 0;
  readonly #timers: Array<{ at: number; every?: number; fn: () => void; live: boolean }> = [];
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): Timer {
    const timer = { at: this.t + ms, fn, live: true };
    this.#timers.push(timer);
    return { cancel: () => (timer.live = false) };
  }
  setInterval(fn: () => void, ms: number): Timer {
    const timer = { at: this.t + ms, every: ms, fn, live: true };
    this.#timers.push(timer);
    return { cancel: () => (timer.live = false) };
  }
  defer(fn: () => void): void {
    fn();
  }
  /** The process stops until `to`: every timer due meanwhile fires once, late, at `to`. */
  stall(to: number): void {
    this.t = to;
    for (const x of this.#timers) if (x.live && x.at < to) x.at = to;
  }
  /** Moves time to `to`, running every timer due on the way (and the promises they start). */
  async advance(to: number): Promise<void> {
    for (;;) {
      const due = this.#timers.filter((x) => x.live && x.at <= to).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      this.t = due.at;
      if (due.every !== undefined) due.at += due.every;
      else due.live = false;
      due.fn();
      await new Promise((r) => setImmediate(r));
    }
    this.t = to;
  }
}

const LEADER: PeerAddress = { nodeId: 'kms-1', advertise: '127.0.0.1:1' };

function setup() {
  const clock = new ManualClock();
  let alive = true;
  const sent: number[] = [];
  const peers: PeerPort = {
    marks: async () => undefined,
    raise: async () => false,
    heartbeat: async () => {
      sent.push(clock.t);
      return alive;
    },
  };
  const silent: Array<[string, string]> = [];
  const watch = new LeaderWatch({
    peers,
    clock,
    heartbeatMs: 100,
    silenceMs: 300,
    onSilent: (leader, lease) => silent.push([leader.nodeId, lease]),
  });
  return { clock, watch, silent, sent, setAlive: (v: boolean) => (alive = v) };
}

it('a leader that answers is never reported', async () => {
  const { clock, watch, silent, sent } = setup();
  watch.follow(LEADER, 'lease-1');
  await clock.advance(5_000);
  assert.equal(silent.length, 0);
  assert.equal(sent.length, 50, 'one heartbeat every 100 ms');
});

it('a silent leader is reported once, 300-400 ms after its last answer', async () => {
  const { clock, watch, silent, setAlive } = setup();
  watch.follow(LEADER, 'lease-1');
  await clock.advance(1_000);
  setAlive(false);
  await clock.advance(1_300);
  assert.equal(silent.length, 0);
  await clock.advance(1_400);
  assert.deepEqual(silent, [['kms-1', 'lease-1']]);
  await clock.advance(3_000);
  assert.equal(silent.length, 1, 'reported once per leader and lease');
  watch.follow(LEADER, 'lease-2');
  await clock.advance(3_500);
  assert.deepEqual(silent[1], ['kms-1', 'lease-2'], 'a new lease is watched afresh');
});

it('a gap in its own timer (this node paused) does not blame the leader', async () => {
  const { clock, watch, silent, setAlive } = setup();
  watch.follow(LEADER, 'lease-1');
  await clock.advance(1_000);
  setAlive(false);
  await clock.advance(1_100);
  // This process stops for 2 s (the leader was fine): its next tick comes late.
  setAlive(true);
  clock.stall(3_100);
  await clock.advance(4_000);
  assert.equal(silent.length, 0);
});

it('stops heartbeating when told (this node leads, or no leader is known)', async () => {
  const { clock, watch, sent } = setup();
  watch.follow(LEADER, 'lease-1');
  await clock.advance(300);
  watch.stop();
  const n = sent.length;
  await clock.advance(2_000);
  assert.equal(sent.length, n);
});
