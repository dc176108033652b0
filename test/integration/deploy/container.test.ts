/**
 * The container images, tested outside a container (there is no Docker engine here): the health
 * probe against a real HTTP server, the entry point against the real CLI with a temporary home,
 * the Dockerfile's split into a production and a dev/test image (statically), and the production
 * file layout — dist/ with the production packages only — running a real node.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freshCli } from '../../helpers/dist.ts';
import { generateKeys, KmsHome, KmsProcess, killAllKms } from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const REPO = join(import.meta.dirname, '../../..');
const PROBE = join(REPO, 'deploy/container/probe.mjs');
const ENTRYPOINT = join(REPO, 'deploy/container/entrypoint.sh');
const TOKEN = 'probe-test-token';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-container-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('probe.mjs', () => {
  let server: Server;
  let listen: string;
  const probe = (...args: string[]) =>
    run(process.execPath, [PROBE, ...args], { COMETKMS_ADMIN_LISTEN: listen });

  before(async () => {
    // Like the admin API: /healthz public, /readyz behind the bearer token, /broken failing.
    server = createServer((req, res) => {
      if (req.url === '/healthz') res.writeHead(200).end('ok');
      else if (req.url === '/broken') res.writeHead(503).end();
      else if (req.headers.authorization !== `Bearer ${TOKEN}`) res.writeHead(401).end();
      else res.writeHead(200).end('ready');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    listen = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    await writeFile(join(dir, 'admin.token'), `${TOKEN}\n`, { mode: 0o600 });
  });

  after(() => {
    server.close();
  });

  test('a public route answering 2xx passes', async () => {
    assert.equal((await probe('/healthz')).code, 0);
  });

  test('a token route passes with --token-file and fails without it', async () => {
    assert.equal((await probe('/readyz', '--token-file', join(dir, 'admin.token'))).code, 0);
    const r = await probe('/readyz');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 401/);
  });

  test('a non-2xx answer, a dead port and bad usage fail', async () => {
    assert.match((await probe('/broken')).stderr, /HTTP 503/);
    const port = Number(listen.split(':')[1]);
    const dead = await run(process.execPath, [PROBE, '/healthz'], {
      COMETKMS_ADMIN_LISTEN: `127.0.0.1:${port === 1 ? 2 : 1}`,
    });
    assert.equal(dead.code, 1);
    const usage = await probe('healthz');
    assert.equal(usage.code, 1);
    assert.match(usage.stderr, /usage/);
  });

  test('a wildcard listen address is probed on 127.0.0.1', async () => {
    const port = listen.split(':')[1];
    const r = await run(process.execPath, [PROBE, '/healthz'], { COMETKMS_ADMIN_LISTEN: `0.0.0.0:${port}` });
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('entrypoint.sh', () => {
  test('initialises the home once, then runs cometkms with the given arguments', async () => {
    const home = join(dir, 'home');
    const env = { COMETKMS_APP: REPO, COMETKMS_HOME: home, COMETKMS_NODE_ID: 'kms-7' };
    const first = await run('sh', [ENTRYPOINT, '--help'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /Usage: cometkms/);
    const config = await readFile(join(home, 'config.toml'), 'utf8');
    assert.match(config, /^id = "kms-7"$/m);
    const files = (await readdir(home)).sort();
    // A second start must not re-initialise (init refuses to overwrite; the script must not try).
    const second = await run('sh', [ENTRYPOINT, '--help'], { ...env, COMETKMS_NODE_ID: 'other' });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(await readFile(join(home, 'config.toml'), 'utf8'), config);
    assert.deepEqual((await readdir(home)).sort(), files);
  });
});

/** The stages of the Dockerfile: name, base image or stage, and the instructions in it. */
interface Stage {
  name: string;
  from: string;
  body: string;
}

async function dockerfileStages(): Promise<{ args: string; stages: Stage[] }> {
  const text = (await readFile(join(REPO, 'deploy/container/Dockerfile'), 'utf8')).replace(/\\\n/g, ' ');
  const [args, ...parts] = text.split(/^FROM /m);
  const stages = parts.map((part) => {
    const [head, ...rest] = part.split('\n');
    const m = /^(\S+) AS (\S+)\s*$/.exec(head ?? '');
    assert.ok(m, `FROM line names its stage: FROM ${head}`);
    return { from: m[1]!, name: m[2]!, body: rest.join('\n') };
  });
  return { args: args ?? '', stages };
}

/** Debian packages a stage installs with apt-get. */
function aptPackages(stage: Stage): string[] {
  return [...stage.body.matchAll(/apt-get install -y --no-install-recommends ([^&\n]+)/g)].flatMap((m) =>
    m[1]!.trim().split(/\s+/),
  );
}

/** A stage and every stage it is built FROM. */
function lineage(stages: Stage[], name: string): Stage[] {
  const out: Stage[] = [];
  for (let s = stages.find((x) => x.name === name); s; s = stages.find((x) => x.name === s?.from))
    out.push(s);
  return out;
}

const TEST_TOOLING = ['softhsm2', 'opensc', 'g++', 'gcc', 'make', 'python3', 'build-essential', 'openssl'];

describe('Dockerfile: a production image and a dev/test image', () => {
  test('stages: build, base, dev, and production last (the default target)', async () => {
    const { stages } = await dockerfileStages();
    const node = '$' + '{NODE_MAJOR}-$' + '{DEBIAN}';
    assert.deepEqual(
      stages.map((s) => `${s.name}<${s.from}`),
      [`build<node:${node}-slim`, `base<node:${node}-slim`, 'dev<base', 'production<base'],
    );
  });

  test('the Node line is the current LTS one, and package.json engines accept it', async () => {
    const { args } = await dockerfileStages();
    const major = Number(/^ARG NODE_MAJOR=(\d+)$/m.exec(args)?.[1]);
    assert.equal(major, 26, 'Node 26 is the Active LTS line since October 2026');
    const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as {
      engines: { node: string };
    };
    // Every alternative of the range is ^X.Y.Z or >=X; the image's line must fall in one.
    const accepted = pkg.engines.node.split('||').some((alt) => {
      const m = /^\s*(\^|>=)(\d+)/.exec(alt);
      assert.ok(m, `engines alternative "${alt}"`);
      return m[1] === '^' ? Number(m[2]) === major : major >= Number(m[2]);
    });
    assert.ok(accepted, `${pkg.engines.node} accepts Node ${major}`);
  });

  test('the image gives node the NODE_OPTIONS the systemd unit does, and node accepts them', async () => {
    const dockerfile = await readFile(join(REPO, 'deploy/container/Dockerfile'), 'utf8');
    const unit = await readFile(join(REPO, 'deploy/systemd/cometkms.service'), 'utf8');
    const inImage = /^\s+NODE_OPTIONS=(\S+)/m.exec(dockerfile)?.[1];
    const inUnit = /^Environment=NODE_OPTIONS=(.+)$/m.exec(unit)?.[1]?.trim();
    assert.ok(inUnit, 'the unit sets NODE_OPTIONS');
    assert.equal(inImage, inUnit);
    // node refuses an option NODE_OPTIONS does not allow ("... is not allowed in NODE_OPTIONS").
    const r = await run(process.execPath, ['-e', 'process.exit(0)'], { NODE_OPTIONS: inUnit });
    assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 0, stderr: '' });
  });

  test('the production image holds no SoftHSM, no OpenSC and no compiler', async () => {
    const { stages } = await dockerfileStages();
    const production = lineage(stages, 'production');
    assert.deepEqual(
      production.map((s) => s.name),
      ['production', 'base'],
    );
    for (const s of production) {
      for (const p of aptPackages(s)) assert.ok(!TEST_TOOLING.includes(p), `${s.name} installs ${p}`);
      assert.doesNotMatch(s.body, /COPY softhsm|make-certs/);
    }
    assert.deepEqual(aptPackages(stages.find((s) => s.name === 'base')!), ['tini']);
    assert.match(stages.find((s) => s.name === 'production')!.body, /^USER cometkms:cometkms$/m);
  });

  test('the dev image adds SoftHSM2, OpenSC and OpenSSL to the same base', async () => {
    const { stages } = await dockerfileStages();
    const dev = stages.find((s) => s.name === 'dev')!;
    assert.deepEqual(aptPackages(dev).sort(), ['opensc', 'openssl', 'softhsm2']);
    assert.match(dev.body, /^COPY softhsm \.\/softhsm$/m);
    assert.match(dev.body, /^USER cometkms:cometkms$/m);
  });

  test('the build stage compiles dist/ and prunes the dev packages; the images copy only the result', async () => {
    const { stages } = await dockerfileStages();
    const build = stages.find((s) => s.name === 'build')!;
    assert.match(build.body, /npm ci --no-audit --no-fund\s+&& npm prune --omit=dev/);
    const base = stages.find((s) => s.name === 'base')!;
    for (const what of ['package.json', 'node_modules', 'dist', 'native/build/Release/cometkms_flock.node']) {
      assert.match(base.body, new RegExp(`^COPY --from=build /opt/cometkms/${what} `, 'm'));
    }
    // the native helper's sources are there before npm ci compiles them
    assert.ok(build.body.indexOf('COPY native/') < build.body.indexOf('npm ci'));
    assert.doesNotMatch(base.body, /COPY src|tsx/);
    // Every path copied from the build context exists in the repository.
    for (const stage of stages) {
      for (const m of stage.body.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
        for (const src of m[1]!.split(/\s+/)) await stat(join(REPO, src));
      }
    }
  });

  test('compose builds the dev image (its nodes use SoftHSM); runtime dependencies hold no dev tooling', async () => {
    const compose = await readFile(join(REPO, 'deploy/container/compose.yaml'), 'utf8');
    assert.match(compose, /^ {4}target: dev$/m);
    const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as {
      version: string;
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    // The image is tagged with the package's version, so a release cannot ship a stale tag.
    assert.ok(
      compose.split('\n').includes(`  image: cometkms:${pkg.version}-dev`),
      'compose image tag is the package version',
    );
    for (const dev of ['tsx', 'pino-pretty', 'typescript', '@types/node']) {
      assert.equal(pkg.dependencies[dev], undefined, `${dev} is not a runtime dependency`);
      assert.ok(pkg.devDependencies[dev], `${dev} is a dev dependency`);
    }
  });
});

describe('the production file layout: dist/ and production packages only, no tsx, no pino-pretty', () => {
  let app: string;
  let token: SoftHsmToken;
  let home: KmsHome;

  before(async () => {
    // What the production image holds under /opt/cometkms, with node_modules reduced to the
    // packages the lockfile does not mark "dev" (linked from the repository's node_modules).
    app = join(dir, 'app');
    freshCli();
    for (const d of ['bin', 'dist', 'hsm']) await cp(join(REPO, d), join(app, d), { recursive: true });
    const flock = join('native', 'build', 'Release', 'cometkms_flock.node');
    await mkdir(dirname(join(app, flock)), { recursive: true });
    await cp(join(REPO, flock), join(app, flock));
    await cp(join(REPO, 'package.json'), join(app, 'package.json'));
    await mkdir(join(app, 'deploy', 'container'), { recursive: true });
    for (const f of ['entrypoint.sh', 'probe.mjs']) {
      await cp(join(REPO, 'deploy/container', f), join(app, 'deploy/container', f));
    }
    const lock = JSON.parse(await readFile(join(REPO, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; optional?: boolean }>;
    };
    for (const [path, entry] of Object.entries(lock.packages)) {
      // top-level packages only: nested ones come along inside their parent's directory
      if (!/^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) || entry.dev === true) continue;
      const real = join(REPO, path);
      if (
        !(await stat(real).then(
          () => true,
          () => false,
        ))
      )
        continue; // an optional package of another platform
      await mkdir(dirname(join(app, path)), { recursive: true });
      await symlink(real, join(app, path));
    }
    token = await createSoftHsmToken();
    await generateKeys(token, [{ label: 'prod-key', type: 'ed25519' }]);
    home = await KmsHome.create({
      token,
      chains: [
        {
          id: 'prod-chain',
          keyLabel: 'prod-key',
          keyType: 'ed25519',
          protocol: 'v0.38',
          validators: [`unix://${join(dir, 'nobody.sock')}`],
        },
      ],
    });
  });

  after(async () => {
    await killAllKms();
    await home?.cleanup();
    await token?.cleanup();
  });

  test('tsx and pino-pretty are not there', async () => {
    for (const m of ['tsx', 'pino-pretty', 'typescript']) {
      await assert.rejects(stat(join(app, 'node_modules', m)), { code: 'ENOENT' });
    }
  });

  test('config check and start run from dist/: the node gets ready and stops cleanly', async () => {
    const cli = join(app, 'bin', 'cometkms.js');
    const check = KmsProcess.spawn(['config', 'check', '--config', home.configPath], home.env(), [], cli);
    assert.deepEqual(await check.waitExit(30_000), { code: 0, signal: null }, check.stderr);
    assert.match(check.lines.join('\n'), /^config ok: /m);
    const node = KmsProcess.spawn(['start', '--config', home.configPath], home.env(), [], cli);
    await node.waitReady();
    node.kill('SIGTERM');
    assert.deepEqual(await node.waitExit(15_000), { code: 0, signal: null }, node.stderr);
    assert.equal(node.stderr, '');
    assert.equal(node.logs().length, node.lines.filter((l) => l !== '').length, 'every line is JSON');
  });

  test('--log-format pretty without pino-pretty: a usage error that says how to read the logs', async () => {
    const cli = join(app, 'bin', 'cometkms.js');
    const p = KmsProcess.spawn(
      ['start', '--config', home.configPath, '--log-format', 'pretty'],
      home.env(),
      [],
      cli,
    );
    assert.deepEqual(await p.waitExit(30_000), { code: 2, signal: null });
    assert.match(p.stderr, /needs the pino-pretty package.*npx pino-pretty/);
  });

  test('the entry point initialises a home with the compiled CLI', async () => {
    const r = await run('sh', [join(app, 'deploy/container/entrypoint.sh'), '--version'], {
      COMETKMS_APP: app,
      COMETKMS_HOME: join(dir, 'prod-home'),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')).version);
    await stat(join(dir, 'prod-home', 'config.toml'));
  });

  test('the cometkms/cometbft export resolves to dist/ for plain node (no tsx)', async () => {
    const probe = join(app, 'api-probe.mjs');
    await writeFile(
      probe,
      "import * as api from 'cometkms/cometbft';\n" +
        "const pub = { type: 'ed25519', bytes: new Uint8Array(32).fill(7) };\n" +
        'console.log(JSON.stringify({ cosmos: api.cosmosPubKeyJson(pub), valcons: api.consensusAddressBech32(pub) }));\n',
    );
    const r = await run(process.execPath, [probe], {});
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { cosmos: { '@type': string; key: string }; valcons: string };
    assert.deepEqual(out.cosmos, {
      '@type': '/cosmos.crypto.ed25519.PubKey',
      key: Buffer.alloc(32, 7).toString('base64'),
    });
    assert.match(out.valcons, /^cosmosvalcons1[02-9ac-hj-np-z]{38}$/);
  });
});
