/**
 * `cometkms start --config FILE`: runs a node until SIGTERM or SIGINT — a single node without
 * `[cluster]`, a cluster node with it. Startup errors (bad config, home not initialised, home in
 * use, bad state, missing key, wrong PIN, unreadable TLS files, …) are reported before any
 * validator is dialed, as one fatal log line, and the process exits with the code of their class
 * (errors.ts: 3 config, 4 HSM, 1 anything else).
 *
 * Once the logger exists, everything the process writes is a JSON log line (or a pretty one with
 * `--log-format pretty`): Node's process warnings (e.g. the deprecation warnings grpc-js triggers
 * for IP-address etcd endpoints) and uncaught errors go through the logger, never as plain text.
 *
 * An unreachable etcd is not a startup error in cluster mode: the node starts as a follower that
 * signs nothing (every signing request is answered "try again"), reports not ready on /readyz,
 * and joins the election as soon as etcd answers. Hosts boot in any order, and a node that exited
 * because its etcd member was still starting would need a supervisor to bring it back.
 */
import { Command, Option } from 'commander';
import type pino from 'pino';
import { loadConfig } from '../../config/load.ts';
import { VERSION } from '../../version.ts';
import { EXIT_CODES, exitCodeOf, ReportedError, UsageError } from '../errors.ts';
import { createLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../logger.ts';
import { CRASH_ENV, CRASH_FLAG, crashProbability } from '../runtime/crash-hook.ts';
import { limitHeapGrowth } from '../runtime/heap-growth.ts';
import { ShutdownSignals } from '../runtime/signals.ts';

interface StartOptions {
  config: string;
  logFormat: LogFormat;
  logLevel: LogLevel;
  testCrashAfterReserve?: boolean;
}

/** What start needs of a running node (SingleNode or ClusterNode). */
interface RunningNode {
  stop(): Promise<boolean>;
  /** version, node id, each chain's key address and last HRS */
  summary(): object;
}

/**
 * After a clean shutdown the process should end by itself; if some handle still holds the event
 * loop open after this long, exit anyway rather than hang a supervisor's stop.
 */
const EXIT_GRACE_MS = 2000;

async function runStart(o: StartOptions): Promise<void> {
  const log = await createLogger({ format: o.logFormat, level: o.logLevel });
  logProcessEvents(log);
  try {
    await runNode(o, log);
  } catch (err) {
    const exitCode = exitCodeOf(err);
    const message = err instanceof Error ? err.message : String(err);
    // Configuration, usage and HSM errors say what to fix; a stack is only noise there.
    const details = exitCode === EXIT_CODES.failure ? { err } : { error: (err as Error).name };
    log.fatal({ version: VERSION, exitCode, ...details }, message);
    throw new ReportedError(exitCode);
  }
}

async function runNode(o: StartOptions, log: pino.Logger): Promise<void> {
  let crashAfterReserve: number | undefined;
  try {
    crashAfterReserve = crashProbability(o.testCrashAfterReserve === true, process.env);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (crashAfterReserve === undefined && process.env[CRASH_ENV]) {
    log.warn(`${CRASH_ENV} is set but ignored: the test-only fault hook is not armed`);
  }
  const config = await loadConfig(o.config);
  const heapFlag = limitHeapGrowth();
  log.debug({ v8Flag: heapFlag ?? 'as given to node' }, 'old-generation growing step');
  // Watched from before startup, so that a signal during startup stops the node once it is up
  // (and a second one exits at once) instead of killing it halfway through.
  const signals = new ShutdownSignals(log);
  try {
    if (config.cluster !== undefined && crashAfterReserve !== undefined) {
      throw new UsageError(`${CRASH_FLAG} is a single-node test hook; this config has [cluster]`);
    }
    // Each runtime is loaded only when it runs: a single node never loads the etcd client.
    let node: RunningNode;
    if (config.cluster === undefined) {
      const { SingleNode } = await import('../runtime/single-node.ts');
      node = await SingleNode.start(
        config,
        crashAfterReserve === undefined ? { logger: log } : { logger: log, crashAfterReserve },
      );
    } else {
      const { ClusterNode } = await import('../runtime/cluster-node.ts');
      node = await ClusterNode.start(config, { logger: log });
    }
    await signals.first;
    const clean = await node.stop();
    log.info({ ...node.summary(), clean }, 'stopped');
    process.exitCode = clean ? 0 : 1;
    setTimeout(() => {
      log.warn('handles still open after shutdown; exiting');
      process.exit();
    }, EXIT_GRACE_MS).unref();
  } finally {
    signals.dispose();
  }
}

/**
 * Routes what Node itself would print as plain text through the logger: process warnings
 * (deprecations, experimental features) as warn lines, and an uncaught exception or unhandled
 * rejection as one fatal line before the process exits with 1, as it would have anyway.
 */
function logProcessEvents(log: pino.Logger): void {
  // Node's own listener writes warnings to stderr as text; this one writes them as JSON.
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string; detail?: string }) => {
    log.warn(
      {
        warning: w.name,
        ...(w.code === undefined ? {} : { code: w.code }),
        ...(w.detail === undefined ? {} : { detail: w.detail }),
      },
      w.message,
    );
  });
  const die = (what: string) => (err: unknown) => {
    log.fatal({ version: VERSION, err }, `${what}; exiting`);
    process.exit(EXIT_CODES.failure);
  };
  process.on('uncaughtException', die('uncaught exception'));
  process.on('unhandledRejection', die('unhandled promise rejection'));
}

/** Adds `cometkms start`. */
export function registerStart(program: Command): void {
  program.addCommand(
    new Command('start')
      .description('run a CometKMS node: dial the configured validators and sign for them')
      .requiredOption('--config <file>', 'config.toml of this node')
      .addOption(
        new Option('--log-format <format>', 'log output (pretty needs the pino-pretty package)')
          .choices(LOG_FORMATS)
          .default('json'),
      )
      .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
      // Test-only fault hook; hidden, and inert without NODE_ENV=test and its variable (crash-hook.ts).
      .addOption(new Option(CRASH_FLAG).hideHelp())
      .action((o: StartOptions) => runStart(o)),
  );
}
