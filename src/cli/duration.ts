/**
 * Command-line durations (`500ms`, `1s`, `2m`, `1h`, also `1.5s`), the format every cometkms
 * command uses for `--block-time`, `--duration` and timeouts.
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration into whole milliseconds. A unit is required: a bare `5` is ambiguous and
 * rejected. Throws an Error with an operator-facing message on anything malformed.
 */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}": use a number and a unit, e.g. 500ms, 1s, 2m`);
  const ms = Math.round(Number(m[1]) * (UNIT_MS[m[2] as string] as number));
  if (!Number.isSafeInteger(ms)) throw new Error(`invalid duration "${text}": too large`);
  return ms;
}
