/**
 * `cometkms start --config FILE`: runs a node until SIGTERM or SIGINT — a single node without
 * `[cluster]`, a cluster node with it. Startup errors (bad config, home not initialised, home in
 * use, bad state, missing key, wrong PIN, unreadable TLS files, …) are thrown with an
 * operator-facing message before any validator is dialed; main prints it and exits 1.
 *
 * An unreachable etcd is not a startup error in cluster mode: the node starts as a follower that
 * signs nothing (every signing request is answered "try again"), reports not ready on /readyz,
 * and joins the election as soon as etcd answers. Hosts boot in any order, and a node that exited
 * because its etcd member was still starting would need a supervisor to bring it back.
 */
import { Command, Option } from 'commander';
import { loadConfig } from '../../config/load.ts';
import { createLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../logger.ts';
import { ClusterNode } from '../runtime/cluster-node.ts';
import { CRASH_ENV, CRASH_FLAG, crashProbability } from '../runtime/crash-hook.ts';
import { ShutdownSignals } from '../runtime/signals.ts';
import { SingleNode } from '../runtime/single-node.ts';

interface StartOptions {
  config: string;
  logFormat: LogFormat;
  logLevel: LogLevel;
  testCrashAfterReserve?: boolean;
}

/**
 * After a clean shutdown the process should end by itself; if some handle still holds the event
 * loop open after this long, exit anyway rather than hang a supervisor's stop.
 */
const EXIT_GRACE_MS = 2000;

async function runStart(o: StartOptions): Promise<void> {
  const crashAfterReserve = crashProbability(o.testCrashAfterReserve === true, process.env);
  const log = createLogger({ format: o.logFormat, level: o.logLevel });
  if (crashAfterReserve === undefined && process.env[CRASH_ENV]) {
    log.warn(`${CRASH_ENV} is set but ignored: the test-only fault hook is not armed`);
  }
  const config = await loadConfig(o.config);
  // Watched from before startup, so that a signal during startup stops the node once it is up
  // (and a second one exits at once) instead of killing it halfway through.
  const signals = new ShutdownSignals(log);
  try {
    if (config.cluster !== undefined && crashAfterReserve !== undefined) {
      throw new Error(`${CRASH_FLAG} is a single-node test hook; this config has [cluster]`);
    }
    const node =
      config.cluster === undefined
        ? await SingleNode.start(
            config,
            crashAfterReserve === undefined ? { logger: log } : { logger: log, crashAfterReserve },
          )
        : await ClusterNode.start(config, { logger: log });
    await signals.first;
    const clean = await node.stop();
    log.info({ clean }, 'stopped');
    process.exitCode = clean ? 0 : 1;
    setTimeout(() => {
      log.warn('handles still open after shutdown; exiting');
      process.exit();
    }, EXIT_GRACE_MS).unref();
  } finally {
    signals.dispose();
  }
}

/** Adds `cometkms start`. */
export function registerStart(program: Command): void {
  program.addCommand(
    new Command('start')
      .description('run a CometKMS node: dial the configured validators and sign for them')
      .requiredOption('--config <file>', 'config.toml of this node')
      .addOption(new Option('--log-format <format>', 'log output').choices(LOG_FORMATS).default('json'))
      .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
      // Test-only fault hook; hidden, and inert without NODE_ENV=test and its variable (crash-hook.ts).
      .addOption(new Option(CRASH_FLAG).hideHelp())
      .action((o: StartOptions) => runStart(o)),
  );
}
