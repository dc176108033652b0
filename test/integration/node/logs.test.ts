/**
 * What a running `cometkms start` writes, from real processes: nothing but JSON lines (ISO-8601
 * `time`) on stdout and nothing on stderr, also for a cluster node whose etcd endpoints are IP
 * addresses over TLS (where grpc-js makes Node print deprecation warnings as plain text unless
 * they go through the logger); lifecycle lines (ready, takeover, hand-over, step-down, stopped)
 * that name the version, the node id, each chain's key address and last HRS; and refusals that
 * name the chain, the HRS, the reason, the validator endpoint and the remote node's id — on a
 * follower too, which relays the leader's refusal and names the endpoint it came from.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { toHexUpper, validatorAddress } from '../../../src/cometbft/keys.ts';
import { type PrivvalMessage, SignedMsgType } from '../../../src/cometbft/types.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { makeTestCerts, type TestCerts } from '../../helpers/certs.ts';
import {
  generateKeys,
  KmsHome,
  type KmsProcess,
  killAllKms,
  nodeStatus,
  runCli,
} from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';
import { startTlsEtcd, type TlsEtcd } from '../../helpers/tls-etcd.ts';

const VERSION = (
  JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;
const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const KEY = 'log-key';

/** Every stdout line is a JSON object with an ISO-8601 time, and stderr is empty. */
function assertJsonOnly(p: KmsProcess): void {
  assert.equal(p.stderr, '', `stderr of pid ${p.pid} is empty`);
  const lines = p.lines.filter((l) => l !== '');
  assert.ok(lines.length > 0);
  for (const line of lines) {
    const record = JSON.parse(line) as Record<string, unknown>;
    assert.match(String(record['time']), ISO_TIME, line);
  }
}

function find(p: KmsProcess, msg: string): Record<string, unknown> {
  const record = p.logs().find((r) => r['msg'] === msg);
  assert.ok(record, `a "${msg}" line in ${p.lines.join('\n')}`);
  return record;
}

function signed(reply: PrivvalMessage): boolean {
  return reply.kind === 'signedVoteResponse' && reply.error === undefined && reply.vote.signature.length > 0;
}

function refusal(reply: PrivvalMessage): string | undefined {
  return reply.kind === 'signedVoteResponse' ? reply.error?.description : undefined;
}

let token: SoftHsmToken;
let keyAddress: string;

before(async () => {
  token = await createSoftHsmToken();
  const keys = await generateKeys(token, [{ label: KEY, type: 'ed25519' }]);
  keyAddress = toHexUpper(validatorAddress(keys.get(KEY)!));
});

after(async () => {
  await killAllKms();
  await token.cleanup();
});

describe('single node', () => {
  let sim: ValidatorSimulator;
  let home: KmsHome;

  before(async () => {
    sim = new ValidatorSimulator({
      listen: 'tcp://127.0.0.1:0',
      chainId: 'log-chain',
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 0,
      extensions: false,
    });
    home = await KmsHome.create({
      token,
      chains: [
        {
          id: 'log-chain',
          keyLabel: KEY,
          keyType: 'ed25519',
          protocol: 'v0.38',
          validators: [await sim.listen()],
        },
      ],
    });
  });

  after(async () => {
    await sim.close();
    await home.cleanup();
  });

  test('ready/stopped name version, node, key address and HRS; a refusal names who asked', async () => {
    const p = home.start();
    const admin = await p.waitReady();
    const ready = find(p, 'ready');
    assert.equal(ready['version'], VERSION);
    assert.equal(ready['nodeId'], 'kms-test');
    assert.deepEqual(ready['chains'], [
      { chainId: 'log-chain', keyAddress, lastHrs: '0/0/0', validators: [sim.address] },
    ]);
    assert.ok(await sim.waitForSigner(15_000));

    const blockA = sim.blockIdFor(5n, 0);
    await sim.requestPubKey(); // buildVote names the key's address from here on
    assert.ok(signed(await sim.requestVote(sim.buildVote(SignedMsgType.Prevote, 5n, 0, blockA))));
    const other = sim.blockIdFor(6n, 0);
    const reason = refusal(await sim.requestVote(sim.buildVote(SignedMsgType.Prevote, 5n, 0, other)));
    assert.match(reason ?? '', /conflicting data/);

    const remote = (await nodeStatus(admin, home.adminToken)).chains[0]!.validators[0]!.remote_node_id;
    assert.match(remote ?? '', /^[0-9a-f]{40}$/);
    const refused = find(p, 'vote refused');
    assert.equal(refused['level'], 40);
    assert.deepEqual(
      {
        chainId: refused['chainId'],
        height: refused['height'],
        round: refused['round'],
        step: refused['step'],
        endpoint: refused['endpoint'],
        remoteNodeId: refused['remoteNodeId'],
      },
      { chainId: 'log-chain', height: '5', round: 0, step: 2, endpoint: sim.address, remoteNodeId: remote },
    );
    assert.match(String(refused['reason']), /conflicting data/);

    p.kill('SIGTERM');
    assert.deepEqual(await p.waitExit(15_000), { code: 0, signal: null });
    const stopped = find(p, 'stopped');
    assert.equal(stopped['version'], VERSION);
    assert.equal(stopped['nodeId'], 'kms-test');
    assert.equal(stopped['clean'], true);
    assert.deepEqual(stopped['chains'], [{ chainId: 'log-chain', keyAddress, lastHrs: '5/0/2' }]);
    assertJsonOnly(p);
  });
});

describe('cluster nodes on etcd over TLS with IP-address endpoints', () => {
  let certs: TestCerts;
  let etcd: TlsEtcd;
  const sims: ValidatorSimulator[] = [];
  const homes: KmsHome[] = [];

  /** A cluster node that dials only `sim` (so that each simulator is served by one node). */
  async function clusterHome(nodeId: string, sim: ValidatorSimulator): Promise<KmsHome> {
    const f = certs.files(nodeId);
    const forward = `127.0.0.1:${await freeLoopbackPort()}`;
    const str = JSON.stringify;
    const home = await KmsHome.create({
      token,
      nodeId,
      chains: [
        {
          id: 'log-chain',
          keyLabel: KEY,
          keyType: 'ed25519',
          protocol: 'v0.38',
          validators: [await sim.listen()],
        },
      ],
      extraToml:
        `\n[cluster]\netcd_endpoints = ${str(etcd.endpoints)}\n` +
        `forward_listen = ${str(forward)}\nforward_advertise = ${str(forward)}\n` +
        `tls_ca_file = ${str(f.caFile)}\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`,
    });
    homes.push(home);
    return home;
  }

  before(async () => {
    certs = await makeTestCerts('cometkms logs test', ['etcd-0', 'kms-a', 'kms-b']);
    etcd = await startTlsEtcd([certs.files('etcd-0')]);
    for (let i = 0; i < 2; i++) {
      sims.push(
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: 'log-chain',
          protocol: 'v0.38',
          blockTimeMs: 0,
          heights: 0,
          extensions: false,
        }),
      );
    }
  });

  after(async () => {
    await killAllKms();
    for (const s of sims) await s.close();
    for (const h of homes) await h.cleanup();
    await etcd?.stop();
    await certs?.cleanup();
  });

  test('JSON only; takeover, relayed refusal, hand-over and stop lines name what happened', async () => {
    const [simA, simB] = sims as [ValidatorSimulator, ValidatorSimulator];
    assert.match(etcd.endpoints[0]!, /^https:\/\/127\.0\.0\.1:\d+$/);
    const homeA = await clusterHome('kms-a', simA);
    // What an operator does once for a new validator: the chain's state, in etcd.
    const init = await runCli(
      ['state', 'init', '--config', homeA.configPath, '--chain', 'log-chain'],
      homeA.env(),
    );
    assert.equal(init.code, 0, init.stderr);
    const a = homeA.start();
    await a.waitReady();
    const serving = await a.waitForLog((r) => r['msg'] === 'leader: serving', 30_000);
    assert.equal(serving['version'], VERSION);
    assert.equal(serving['nodeId'], 'kms-a');
    assert.match(String(serving['term']), /^[1-9]\d*$/);
    assert.deepEqual(serving['chains'], [{ chainId: 'log-chain', keyAddress, lastHrs: '0/0/0' }]);

    const homeB = await clusterHome('kms-b', simB);
    const b = homeB.start();
    const adminB = await b.waitReady();
    const deadline = Date.now() + 15_000;
    while ((await nodeStatus(adminB, homeB.adminToken)).leader_id !== 'kms-a') {
      assert.ok(Date.now() < deadline, 'kms-b sees kms-a lead');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(await simA.waitForSigner(15_000));
    assert.ok(await simB.waitForSigner(15_000));
    await simA.requestPubKey();
    await simB.requestPubKey();

    // kms-a signs for simA; the conflicting vote simB sends at that HRS goes through kms-b to
    // kms-a, which refuses it.
    assert.ok(
      signed(await simA.requestVote(simA.buildVote(SignedMsgType.Prevote, 10n, 0, simA.blockIdFor(10n, 0)))),
    );
    const conflicting = simB.buildVote(SignedMsgType.Prevote, 10n, 0, simB.blockIdFor(11n, 0));
    assert.match(refusal(await simB.requestVote(conflicting)) ?? '', /conflicting data/);

    const atLeader = find(a, 'vote refused');
    assert.equal(atLeader['forwardedBy'], 'kms-b');
    assert.equal(atLeader['height'], '10');
    const relayed = find(b, 'vote refused by the leader');
    const remoteB = (await nodeStatus(adminB, homeB.adminToken)).chains[0]!.validators[0]!.remote_node_id;
    assert.deepEqual(
      {
        chainId: relayed['chainId'],
        height: relayed['height'],
        round: relayed['round'],
        step: relayed['step'],
        endpoint: relayed['endpoint'],
        remoteNodeId: relayed['remoteNodeId'],
        leader: relayed['leader'],
      },
      {
        chainId: 'log-chain',
        height: '10',
        round: 0,
        step: 2,
        endpoint: simB.address,
        remoteNodeId: remoteB,
        leader: 'kms-a',
      },
    );
    assert.match(String(relayed['reason']), /conflicting data/);

    // SIGTERM on the leader hands over; its line names who took over.
    a.kill('SIGTERM');
    assert.deepEqual(await a.waitExit(15_000), { code: 0, signal: null });
    const handed = find(a, 'handed leadership over');
    assert.equal(handed['takenBy'], 'kms-b');
    assert.equal(handed['version'], VERSION);
    assert.deepEqual(handed['chains'], [{ chainId: 'log-chain', keyAddress, lastHrs: '10/0/2' }]);
    assert.equal(find(a, 'stopped')['clean'], true);
    const takeover = await b.waitForLog((r) => r['msg'] === 'leader: serving', 15_000);
    assert.deepEqual(takeover['chains'], [{ chainId: 'log-chain', keyAddress, lastHrs: '10/0/2' }]);

    // The last node has nobody to hand over to, and says so.
    b.kill('SIGTERM');
    assert.deepEqual(await b.waitExit(15_000), { code: 0, signal: null });
    assert.equal(
      b.logs().find((r) => String(r['msg']).startsWith('handed leadership over'))?.['takenBy'],
      null,
    );

    for (const p of [a, b]) assertJsonOnly(p);
    // The IP-address endpoints did make Node warn, and the warning came out as a log line.
    const warnings = [a, b].flatMap((p) => p.logs().filter((r) => r['warning'] !== undefined));
    assert.ok(
      warnings.some((w) => w['code'] === 'DEP0123'),
      `a DEP0123 warning line: ${JSON.stringify(warnings)}`,
    );
  });
});
