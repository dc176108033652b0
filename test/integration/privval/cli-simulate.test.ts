import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import pino from 'pino';
import { ValidatorDialer } from '../../../src/privval/dialer.ts';
import { nodeIdFromPubKey } from '../../../src/privval/identity.ts';
import { InMemorySigningHandler } from '../../../src/privval/memory-handler.ts';
import { freshCli } from '../../helpers/dist.ts';

const BIN = freshCli();

/** Spawns the CLI; resolves with its exit code and output (bounded by a kill after 60 s). */
function runCli(args: string[], onStderrLine?: (line: string) => void) {
  const child: ChildProcess = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c) => {
    stdout += c;
  });
  child.stderr?.on('data', (c) => {
    const before = stderr.length;
    stderr += c;
    if (onStderrLine) for (const line of stderr.slice(before).split('\n')) if (line) onStderrLine(line);
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('cometkms simulate', () => {
  /** Runs `simulate` with 2 sentries; each listen line gets a dialer with the handler `handlerFor` gives. */
  async function simulateWithKms(handlerFor: () => InMemorySigningHandler) {
    const dialers: ValidatorDialer[] = [];
    const version = 'v0.38';
    const args = [
      'simulate',
      '--listen',
      'tcp://127.0.0.1:0',
      '--chain-id',
      'cli-chain',
      '--protocol',
      version,
    ];
    args.push('--block-time', '5ms', '--heights', '6', '--sentries', '2', '--seed', '3', '--json');
    const result = await runCli(args, (line) => {
      const m = /^listening on (tcp:\/\/\S+)$/.exec(line);
      if (!m) return;
      const seed = new Uint8Array(randomBytes(32));
      const publicKey = ed25519.getPublicKey(seed);
      const d = new ValidatorDialer({
        addr: m[1] as string,
        version,
        identity: { seed, publicKey, nodeId: nodeIdFromPubKey(publicKey) },
        handler: handlerFor(),
        logger: pino({ level: 'silent' }),
      });
      d.start();
      dialers.push(d);
    });
    await Promise.all(dialers.map((d) => d.stop()));
    assert.equal(dialers.length, 2, 'one listen line per sentry');
    return result;
  }

  const newHandler = () =>
    new InMemorySigningHandler({
      chainId: 'cli-chain',
      version: 'v0.38',
      privateKey: new Uint8Array(32).fill(5),
    });

  it('prints the listen addresses, simulates two sentries against one KMS and prints a JSON summary', async () => {
    const shared = newHandler();
    const result = await simulateWithKms(() => shared);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as {
      total: { heightsCompleted: number; doubleSigns: number; invalidSignatures: number; signed: number };
      sentries: unknown[];
    };
    assert.equal(out.sentries.length, 2);
    assert.equal(out.total.heightsCompleted, 6);
    assert.equal(out.total.doubleSigns, 0);
    assert.equal(out.total.invalidSignatures, 0);
    assert.ok(out.total.signed > 0);
  });

  it('exits non-zero when two independent signers with one key double-sign', async () => {
    const result = await simulateWithKms(newHandler);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /simulation failed: \d+ double sign\(s\) detected/);
    const out = JSON.parse(result.stdout) as { total: { doubleSigns: number } };
    assert.ok(out.total.doubleSigns > 0);
  });

  it('exits non-zero with a clear message when no KMS connects', async () => {
    const result = await runCli([
      'simulate',
      '--listen',
      'tcp://127.0.0.1:0',
      '--chain-id',
      'c',
      '--heights',
      '1',
      '--connect-timeout',
      '200ms',
    ]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /listening on tcp:\/\/127\.0\.0\.1:\d+/);
    assert.match(result.stderr, /no signer connected to tcp:\/\/127\.0\.0\.1:\d+ within 200 ms/);
  });

  it('rejects a malformed duration', async () => {
    const result = await runCli([
      'simulate',
      '--listen',
      'tcp://127.0.0.1:0',
      '--chain-id',
      'c',
      '--block-time',
      '5',
    ]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /invalid duration "5"/);
  });
});
