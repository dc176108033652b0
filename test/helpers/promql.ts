/**
 * Just enough PromQL and Prometheus text-format reading to check that dashboards and alert rules
 * only name metrics and labels a node really exports. Not a PromQL parser: it strips strings,
 * label matchers, range selectors and label lists, and takes the identifiers that are left and
 * are not called like a function or a keyword as metric names.
 */

/** PromQL keywords and operators that look like identifiers (`group_right` may stand bare). */
const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'inf',
  'nan',
  'group_left',
  'group_right',
]);

/** Clauses whose parenthesised list holds label names, not expressions. */
const LABEL_LISTS = /\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g;

/** Double-quoted strings (label values, Grafana variables inside them). */
const STRINGS = /"(?:[^"\\]|\\.)*"/g;

/** The metric names an expression selects. */
export function promqlMetricNames(expr: string): string[] {
  const bare = expr
    .replace(STRINGS, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(LABEL_LISTS, ' ');
  const names = new Set<string>();
  // Not preceded by a word character, a dot or `$` (a number's exponent, a Grafana variable).
  for (const m of bare.matchAll(/(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, name, call] = m;
    if (call !== undefined || KEYWORDS.has(name!.toLowerCase())) continue;
    names.add(name!);
  }
  return [...names];
}

/** Label names used in `name{label="..."}` selectors, by metric name. */
export function promqlSelectorLabels(expr: string): Array<{ metric: string; label: string }> {
  const out: Array<{ metric: string; label: string }> = [];
  const noStrings = expr.replace(STRINGS, '""');
  for (const m of noStrings.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
    for (const l of m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) {
      out.push({ metric: m[1]!, label: l[1]! });
    }
  }
  return out;
}

/** Label names of `by (...)`, `on (...)`, `group_left (...)` and the like. */
export function promqlGroupingLabels(expr: string): string[] {
  const out = new Set<string>();
  for (const m of expr.replace(STRINGS, '""').matchAll(LABEL_LISTS)) {
    for (const l of m[1]!.split(',')) if (l.trim() !== '') out.add(l.trim());
  }
  return [...out];
}

/** The sample names of a Prometheus text exposition, each with the label names seen on it. */
export function exposedSeries(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    let labels = out.get(m[1]!);
    if (labels === undefined) {
      labels = new Set();
      out.set(m[1]!, labels);
    }
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(l[1]!);
  }
  return out;
}
