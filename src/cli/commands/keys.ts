import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import { type Command, Option } from 'commander';
import { bytesEqual } from '../../cometbft/bytes.ts';
import {
  consensusAddressBech32,
  consensusPubKeyBech32,
  cosmosPubKeyJson,
  pubKeyToJson,
  toHex,
  toHexUpper,
  validatorAddress,
} from '../../cometbft/keys.ts';
import { parsePrivValidatorKey } from '../../cometbft/privval-files.ts';
import type { KeyType, PubKey } from '../../cometbft/types.ts';
import { loadConfig } from '../../config/load.ts';
import { HsmError } from '../../pkcs11/errors.ts';
import { type Hsm, type HsmOptions, openHsm } from '../../pkcs11/hsm.ts';
import { readPin } from '../../pkcs11/pin.ts';
import { loadProfile } from '../../pkcs11/profiles.ts';
import { UsageError } from '../errors.ts';

/** Options every `keys` subcommand takes to find the token. */
interface TokenOptions {
  config?: string;
  module?: string;
  tokenLabel?: string;
  pinFile?: string;
  profile?: string;
}

const KEY_TYPES: KeyType[] = ['ed25519', 'secp256k1'];

/** Adds the token-selection options (either --config or --module/--token-label) to `cmd`. */
function tokenOptions(cmd: Command): Command {
  return cmd
    .option(
      '--config <file>',
      'CometKMS config file; its [hsm] section names module, profile, token and PIN file',
    )
    .option('--module <path>', 'PKCS#11 module (.so), instead of --config')
    .option('--token-label <label>', 'token label, instead of --config')
    .option('--pin-file <file>', 'file holding the user PIN (default: env COMETKMS_HSM_PIN)')
    .option('--profile <name>', 'HSM profile in hsm/ (e.g. softhsm2)');
}

/** The HSM to open and where its PIN is, from --config or from the explicit options. */
async function resolveToken(opts: TokenOptions): Promise<{ hsm: HsmOptions; pinFile?: string }> {
  if (opts.config !== undefined) {
    if (
      opts.module !== undefined ||
      opts.tokenLabel !== undefined ||
      opts.pinFile !== undefined ||
      opts.profile !== undefined
    ) {
      throw new UsageError('use either --config or --module/--token-label/--pin-file/--profile, not both');
    }
    const { hsm } = await loadConfig(opts.config);
    return {
      hsm: { module: hsm.module, tokenLabel: hsm.token_label, profile: await loadProfile(hsm.profile) },
      pinFile: hsm.pin_file,
    };
  }
  if (opts.module === undefined || opts.tokenLabel === undefined) {
    throw new UsageError('name the token with --config FILE, or with --module PATH and --token-label LABEL');
  }
  const hsm: HsmOptions = { module: opts.module, tokenLabel: opts.tokenLabel };
  if (opts.profile !== undefined) hsm.profile = await loadProfile(opts.profile);
  return { hsm, pinFile: opts.pinFile };
}

/** Opens the token, runs `fn`, and always closes it (finalising the module). */
async function withHsm<T>(hsmOptions: HsmOptions, fn: (hsm: Hsm) => Promise<T>): Promise<T> {
  const hsm = await openHsm(hsmOptions);
  try {
    return await fn(hsm);
  } finally {
    await hsm.close();
  }
}

/** Everything an operator needs to register the key with a chain. */
export function describeKey(label: string, pubKey: PubKey, bech32Prefix: string) {
  return {
    label,
    type: pubKey.type,
    pub_key: pubKeyToJson(pubKey),
    cosmos_pub_key: cosmosPubKeyJson(pubKey),
    pub_key_hex: toHex(pubKey.bytes),
    address: toHexUpper(validatorAddress(pubKey)),
    valcons: consensusAddressBech32(pubKey, bech32Prefix),
    valconspub: consensusPubKeyBech32(pubKey, `${bech32Prefix}pub`),
  };
}

function printKey(label: string, pubKey: PubKey, bech32Prefix: string, json: boolean): void {
  const d = describeKey(label, pubKey, bech32Prefix);
  if (json) {
    process.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
    return;
  }
  const rows: [string, string][] = [
    ['label', d.label],
    ['type', d.type],
    ['pub_key', JSON.stringify(d.pub_key)],
    ['cosmos_pub_key', JSON.stringify(d.cosmos_pub_key)],
    ['pub_key_hex', d.pub_key_hex],
    ['address', d.address],
    ['valcons', d.valcons],
    ['valconspub', d.valconspub],
  ];
  for (const [k, v] of rows) process.stdout.write(`${`${k}:`.padEnd(16)}${v}\n`);
}

function prefixOption(): Option {
  return new Option('--bech32-prefix <prefix>', 'bech32 prefix of the consensus address').default(
    'cosmosvalcons',
  );
}

/** `cometkms keys generate|import|list|show|delete`: provisioning of validator keys in the HSM. */
export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('create, inspect and delete validator keys in the HSM');

  tokenOptions(
    keys
      .command('generate')
      .description('generate a non-extractable key pair inside the token')
      .requiredOption('--label <label>', 'label of the new key (must not exist yet)')
      .addOption(new Option('--type <type>', 'key type').choices(KEY_TYPES).makeOptionMandatory())
      .addOption(prefixOption())
      .option('--json', 'print JSON'),
  ).action(
    async (opts: TokenOptions & { label: string; type: KeyType; bech32Prefix: string; json?: boolean }) => {
      const { hsm, pinFile } = await resolveToken(opts);
      const pin = await readPin(pinFile);
      const pubKey = await withHsm(hsm, (h) => h.generateKey(opts.label, opts.type, pin));
      printKey(opts.label, pubKey, opts.bech32Prefix, opts.json === true);
    },
  );

  tokenOptions(
    keys
      .command('import')
      .description('import the key of a priv_validator_key.json into the token (migration)')
      .requiredOption('--from <file>', 'priv_validator_key.json to import')
      .requiredOption('--label <label>', 'label of the imported key (must not exist yet)')
      .addOption(prefixOption())
      .option('--json', 'print JSON'),
  ).action(
    async (opts: TokenOptions & { from: string; label: string; bech32Prefix: string; json?: boolean }) => {
      const { hsm, pinFile } = await resolveToken(opts);
      const pin = await readPin(pinFile);
      let text: string;
      try {
        text = await readFile(opts.from, 'utf8');
      } catch (err) {
        throw new Error(`cannot read ${opts.from}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      // Checks the seed length and that the seed derives the stated pub_key and address.
      const parsed = parsePrivValidatorKey(text);
      try {
        const pubKey = await withHsm(hsm, (h) =>
          h.importKey(opts.label, parsed.pubKey.type, parsed.privateKey, pin),
        );
        if (!bytesEqual(pubKey.bytes, parsed.pubKey.bytes)) {
          throw new HsmError(
            `the token reports a different public key for "${opts.label}" than ${opts.from} holds`,
          );
        }
        printKey(opts.label, pubKey, opts.bech32Prefix, opts.json === true);
      } finally {
        parsed.privateKey.fill(0);
      }
      process.stderr.write(
        `WARNING: the key now lives in the HSM. Destroy ${opts.from} securely (e.g. \`shred -u ${opts.from}\`) together with every copy and backup of it: a copy of a validator key outside the HSM can double-sign.\n`,
      );
    },
  );

  tokenOptions(
    keys
      .command('list')
      .description('list the ed25519 and secp256k1 keys on the token (no PIN needed)')
      .option('--json', 'print JSON'),
  ).action(async (opts: TokenOptions & { json?: boolean }) => {
    const { hsm } = await resolveToken(opts);
    const list = await withHsm(hsm, async (h) => h.listKeys());
    if (opts.json) {
      const rows = list.map((k) => ({
        label: k.label,
        type: k.type,
        id: k.id,
        address: toHexUpper(validatorAddress(k.pubKey)),
      }));
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return;
    }
    if (list.length === 0) {
      process.stdout.write('no keys\n');
      return;
    }
    const width = Math.max(5, ...list.map((k) => k.label.length));
    process.stdout.write(`${'LABEL'.padEnd(width)}  ${'TYPE'.padEnd(9)}  ${'ADDRESS'.padEnd(40)}  ID\n`);
    for (const k of list) {
      process.stdout.write(
        `${k.label.padEnd(width)}  ${k.type.padEnd(9)}  ${toHexUpper(validatorAddress(k.pubKey))}  ${k.id}\n`,
      );
    }
  });

  tokenOptions(
    keys
      .command('show')
      .description('print the public key, address and bech32 forms of a key (no PIN needed)')
      .requiredOption('--label <label>', 'label of the key')
      .addOption(prefixOption())
      .option('--json', 'print JSON'),
  ).action(async (opts: TokenOptions & { label: string; bech32Prefix: string; json?: boolean }) => {
    const { hsm } = await resolveToken(opts);
    const matches = await withHsm(hsm, async (h) => h.listKeys().filter((k) => k.label === opts.label));
    const [key, ...rest] = matches;
    if (key === undefined)
      throw new HsmError(`no ed25519 or secp256k1 key labelled "${opts.label}" on token "${hsm.tokenLabel}"`);
    if (rest.length > 0)
      throw new HsmError(`${matches.length} keys are labelled "${opts.label}"; labels must be unique`);
    printKey(key.label, key.pubKey, opts.bech32Prefix, opts.json === true);
  });

  tokenOptions(
    keys
      .command('delete')
      .description(
        'destroy a key pair in the token for good (asks for the label again on a terminal; --yes in scripts)',
      )
      .requiredOption('--label <label>', 'label of the key to delete')
      .option('--yes', 'do not ask (required when stdin is not a terminal)'),
  ).action(async (opts: TokenOptions & { label: string; yes?: boolean }) => {
    if (opts.yes !== true && process.stdin.isTTY !== true) {
      throw new UsageError(
        'keys delete asks for confirmation on a terminal; without one (a script, a pipe), pass --yes',
      );
    }
    const { hsm, pinFile } = await resolveToken(opts);
    const pin = await readPin(pinFile);
    await withHsm(hsm, async (h) => {
      const shown = h.listKeys().filter((k) => k.label === opts.label);
      if (opts.yes !== true) await confirmDeletion(opts.label, hsm.tokenLabel, shown);
      const deleted = await h.deleteKey(opts.label, pin);
      const address = deleted.pubKey === undefined ? 'unknown' : toHexUpper(validatorAddress(deleted.pubKey));
      process.stdout.write(
        `deleted key "${opts.label}" (${deleted.type ?? 'unknown type'}, address ${address}) from token "${hsm.tokenLabel}"\n`,
      );
    });
  });
}

/**
 * Shows what is about to be destroyed and asks for its label again; anything else aborts. A
 * deleted validator key is gone unless the HSM's own backup holds it (README, "Back up keys").
 */
async function confirmDeletion(
  label: string,
  tokenLabel: string,
  keys: ReadonlyArray<{ type: KeyType; pubKey: PubKey }>,
): Promise<void> {
  const err = process.stderr;
  for (const k of keys) {
    err.write(
      `key "${label}" on token "${tokenLabel}": ${k.type}, address ${toHexUpper(validatorAddress(k.pubKey))}\n`,
    );
  }
  err.write(
    "Deleting it cannot be undone: a validator key that is not in the HSM's backup is lost for good.\n",
  );
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`Type the label (${label}) to delete it: `);
    if (answer.trim() !== label) throw new Error('not deleted: the label typed did not match');
  } finally {
    rl.close();
  }
}
