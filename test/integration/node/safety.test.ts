/**
 * The single-node safety holes found from outside, each reproduced against real `cometkms start`
 * processes on a SoftHSM token (ARCHITECTURE §2 invariant 7, SECURITY.md):
 * - a lost state file restarted the chain at height 0 (prevote 100/0 for block Y after X);
 * - a second process on the same home (bind mount, another network namespace) also "held" the
 *   lock and signed from its own memory;
 * - one request at height 2^63-1 disabled the chain for good; proposals with pol_round >= round
 *   were signed; a 1 MB chain id was echoed into the reply, the log and the audit log;
 * - a secp256k1 re-request after a restart got a second, different signature.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import { type PrivvalMessage, SignedMsgType, type Vote } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { chainFiles } from '../../../src/store/file.ts';
import { blockId } from '../../helpers/guard-fixtures.ts';
import { generateKeys, type KmsChain, KmsHome, KmsProcess, killAllKms } from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const ED = 'safety-ed';
const K1 = 'safety-k1';

describe('single node: a lost state is not an empty one, one process per home, hostile requests', () => {
  let token: SoftHsmToken;
  let dir: string;
  const homes: KmsHome[] = [];
  const sims: ValidatorSimulator[] = [];

  before(async () => {
    token = await createSoftHsmToken();
    dir = await mkdtemp(join(tmpdir(), 'cometkms-safety-'));
    await generateKeys(token, [
      { label: 'key-ed', type: 'ed25519' },
      { label: 'key-k1', type: 'secp256k1' },
    ]);
  });

  after(async () => {
    await killAllKms();
    await Promise.all(sims.map((s) => s.close()));
    for (const h of homes) await h.cleanup();
    await rm(dir, { recursive: true, force: true });
    await token.cleanup();
  });

  /** A listening race-mode validator of `chainId` on a unix socket. */
  async function validator(
    chainId: string,
    name: string,
  ): Promise<{ sim: ValidatorSimulator; addr: string }> {
    const sim = new ValidatorSimulator({
      listen: `unix://${join(dir, `${name}.sock`)}`,
      chainId,
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 0,
      extensions: false,
    });
    sims.push(sim);
    return { sim, addr: await sim.listen() };
  }

  async function home(chains: KmsChain[]): Promise<KmsHome> {
    const h = await KmsHome.create({ token, chains });
    homes.push(h);
    return h;
  }

  const prevote = (sim: ValidatorSimulator, height: bigint, block: number): Vote => ({
    ...sim.buildVote(SignedMsgType.Prevote, height, 0, blockId(block)),
  });
  const signature = (m: PrivvalMessage): Uint8Array =>
    m.kind === 'signedVoteResponse' && m.error === undefined ? m.vote.signature : new Uint8Array();
  const errorOf = (m: PrivvalMessage): string | undefined =>
    'error' in m ? m.error?.description : undefined;

  it('a deleted state file stops the chain: start refuses and names state init and state import', async () => {
    const { sim, addr } = await validator(ED, 'lost');
    const h = await home([
      { id: ED, keyLabel: 'key-ed', keyType: 'ed25519', protocol: 'v0.38', validators: [addr] },
    ]);
    const first = h.start();
    await first.waitReady();
    assert.ok(await sim.waitForSigner(15_000));
    await sim.requestPubKey();
    assert.equal(signature(await sim.requestVote(prevote(sim, 100n, 1))).length, 64, 'prevote 100/0 for X');
    first.kill('SIGKILL');
    await first.waitExit(10_000);

    const files = chainFiles(h.home, ED);
    await rm(files.log);
    await rm(files.seal);
    const second = h.start();
    const exit = await second.waitExit(30_000);
    assert.notEqual(exit.code, 0, 'start must refuse a chain whose state is gone');
    // start reports why it cannot start as its fatal log line (stdout, JSON)
    const why = second.fatal ?? '';
    assert.match(why, /has no sign state/);
    assert.match(why, /cometkms state init --config \S+config\.toml --chain "safety-ed"/);
    assert.match(why, /cometkms state import --config \S+config\.toml --chain "safety-ed"/);
    // the validator was never dialed again, so block Y at 100/0 cannot have been signed
    assert.equal(second.logs().filter((r) => r['msg'] === 'ready').length, 0);
  });

  it('a second start on the same home through a bind mount or from another network namespace exits with the lock error', async () => {
    const { sim, addr } = await validator(ED, 'lock');
    const h = await home([
      { id: ED, keyLabel: 'key-ed', keyType: 'ed25519', protocol: 'v0.38', validators: [addr] },
    ]);
    const first = h.start();
    await first.waitReady();
    assert.ok(await sim.waitForSigner(15_000));
    await sim.requestPubKey();
    const lockError = new RegExp(`is in use by another cometkms process \\(pid ${first.pid}\\)`);

    // the same home through a bind mount: another path, the same inodes
    const mount = await mkdtemp(join(dir, 'bind-'));
    execFileSync('mount', ['--bind', h.home, mount]);
    try {
      const config = join(dir, 'bind-config.toml');
      const text = await readFile(h.configPath, 'utf8');
      await writeFile(
        config,
        text.replace(`home = ${JSON.stringify(h.home)}`, `home = ${JSON.stringify(mount)}`),
        {
          mode: 0o600,
        },
      );
      const viaMount = KmsProcess.spawn(['start', '--config', config], h.env());
      assert.equal((await viaMount.waitExit(30_000)).code, 1);
      assert.match(viaMount.fatal ?? '', lockError);
    } finally {
      execFileSync('umount', [mount]);
    }
    // another network namespace (two containers on one volume): abstract sockets do not cross it
    const otherNetns = KmsProcess.spawn(['start', '--config', h.configPath], h.env(), ['unshare', '-n']);
    assert.equal((await otherNetns.waitExit(30_000)).code, 1);
    assert.match(otherNetns.fatal ?? '', lockError);

    // the first node signs on, undisturbed
    assert.equal(signature(await sim.requestVote(prevote(sim, 7n, 1))).length, 64);
    first.kill('SIGTERM');
    assert.equal((await first.waitExit(15_000)).code, 0);
  });

  it('hostile requests are refused without disabling the chain or flooding the log and audit log', async () => {
    const { sim, addr } = await validator(ED, 'hostile');
    const h = await home([
      { id: ED, keyLabel: 'key-ed', keyType: 'ed25519', protocol: 'v0.38', validators: [addr] },
    ]);
    const p = h.start();
    await p.waitReady();
    assert.ok(await sim.waitForSigner(15_000));
    await sim.requestPubKey();

    // one request at the top of int64 must not burn every height below it
    const top = await sim.requestRaw({
      kind: 'signVoteRequest',
      vote: prevote(sim, (1n << 63n) - 1n, 1),
      chainId: ED,
      skipExtensionSigning: false,
    });
    assert.match(errorOf(top) ?? '', /^error signing vote: height 9223372036854775807 is above the limit/);
    const far = await sim.requestRaw({
      kind: 'signVoteRequest',
      vote: prevote(sim, 1n << 40n, 1),
      chainId: ED,
      skipExtensionSigning: false,
    });
    assert.match(errorOf(far) ?? '', /^error signing vote: height jump too large/);
    assert.equal(signature(await sim.requestVote(prevote(sim, 5n, 1))).length, 64, 'the chain still signs');

    // a proposal whose POL round is not before its round is invalid in CometBFT
    const proposal = { ...sim.buildVote(SignedMsgType.Prevote, 6n, 2, blockId(2)) };
    const badPol = await sim.requestRaw({
      kind: 'signProposalRequest',
      chainId: ED,
      proposal: {
        type: SignedMsgType.Proposal,
        height: 6n,
        round: 2,
        polRound: 2,
        blockId: proposal.blockId,
        timestamp: proposal.timestamp,
        signature: new Uint8Array(),
      },
    });
    assert.equal(badPol.kind, 'signedProposalResponse');
    assert.equal(errorOf(badPol), 'error signing proposal: invalid pol_round 2 for round 2');

    // a 1 MB chain id: refused, and never echoed whole anywhere
    const huge = 'h'.repeat(1024 * 1024);
    const hostile = await sim.requestRaw({
      kind: 'signVoteRequest',
      vote: prevote(sim, 9n, 1),
      chainId: huge,
      skipExtensionSigning: false,
    });
    const text = errorOf(hostile) ?? '';
    assert.match(text, /chain id mismatch: got h{256}…\[cut: 1048576 bytes\], want safety-ed$/);
    assert.equal(signature(await sim.requestVote(prevote(sim, 9n, 1))).length, 64);

    p.kill('SIGTERM');
    assert.equal((await p.waitExit(15_000)).code, 0);
    const longest = (lines: string[]) => Math.max(...lines.map((l) => l.length));
    assert.ok(longest(p.lines) < 4096, `a log line of ${longest(p.lines)} characters`);
    const audit = (await readFile(join(h.home, 'audit', 'audit.jsonl'), 'utf8')).trim().split('\n');
    assert.ok(
      audit.some((l) => l.includes('[cut: 1048576 bytes]')),
      'the refusal is audited',
    );
    assert.ok(longest(audit) < 4096, `an audit line of ${longest(audit)} characters`);
  });

  it('a secp256k1 re-request after a restart gets the very same signature bytes back', async () => {
    const { sim, addr } = await validator(K1, 'secp');
    const h = await home([
      { id: K1, keyLabel: 'key-k1', keyType: 'secp256k1', protocol: 'v0.38', validators: [addr] },
    ]);
    const first = h.start();
    await first.waitReady();
    assert.ok(await sim.waitForSigner(15_000));
    const pubKey = await sim.requestPubKey();
    const vote = prevote(sim, 12n, 3);
    const sig1 = signature(await sim.requestVote(vote));
    assert.ok(verifySignature(pubKey, voteSignBytes(K1, vote), sig1));
    // the reply may have been lost: the node crashes and asks again after the restart
    first.kill('SIGKILL');
    await first.waitExit(10_000);
    const second = h.start();
    await second.waitReady();
    assert.ok(await sim.waitForSigner(15_000));
    assert.deepEqual(signature(await sim.requestVote(vote)), sig1, 'an identical retry');
    const later = { ...vote, timestamp: { ...vote.timestamp, seconds: vote.timestamp.seconds + 3n } };
    const retried = await sim.requestVote(later);
    assert.deepEqual(signature(retried), sig1, 'a timestamp-only retry');
    assert.equal(
      retried.kind === 'signedVoteResponse' && retried.vote.timestamp.seconds,
      vote.timestamp.seconds,
    );
    second.kill('SIGTERM');
    await second.waitExit(15_000);
  });
});
