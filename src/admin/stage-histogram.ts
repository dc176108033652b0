/**
 * `cometkms_sign_stage_duration_seconds{stage}`: where a signing request's time goes (the stages
 * of src/stages.ts). It sits on the hot path, several observations per request, so it is kept
 * out of prom-client's generic histogram (which builds a label object, validates it and hashes
 * it into a string on every observation): one flat array of bucket counts, indexed by stage and
 * bucket, and a small collector that renders them in the Prometheus text format at scrape time.
 * Every stage's series exists from the start, at 0 (the rule of metrics.ts).
 */
import type { Registry } from 'prom-client';
import { SIGN_STAGES, type SignStage, type StageObserver } from '../stages.ts';

export const STAGE_METRIC = 'cometkms_sign_stage_duration_seconds';

/**
 * Bucket bounds in seconds: fine from 10 µs (a decode) to 5 ms, where a healthy signature's
 * stages lie, then coarse up to 1 s (a stuck disk or etcd). `npm run bench` interpolates its
 * stage medians within these.
 */
export const STAGE_BUCKETS_S = [
  0.00001, 0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001,
  0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
];

const STAGE_INDEX = Object.fromEntries(SIGN_STAGES.map((s, i) => [s, i])) as Record<SignStage, number>;
/** per stage: one count per bucket, then one for +Inf */
const ROW = STAGE_BUCKETS_S.length + 1;

/** A metric value as prom-client's registry renders it. */
interface Value {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/** The per-stage histogram; `observe` is the {@link StageObserver} the layers report to. */
export class StageHistogram implements StageObserver {
  readonly name = STAGE_METRIC;
  readonly help =
    'Time a signing request spends in each stage of its path (read, decode, queue, decide, reserve, hsm, verify, seal, record, report, encode, write, forward)';
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** non-cumulative bucket counts, ROW per stage */
  readonly #counts = new Float64Array(SIGN_STAGES.length * ROW);
  readonly #sums = new Float64Array(SIGN_STAGES.length);

  /** Records one stage duration given in milliseconds. */
  observe(stage: SignStage, ms: number): void {
    const i = STAGE_INDEX[stage];
    if (i === undefined || !(ms >= 0)) return;
    const s = ms / 1000;
    let b = 0;
    while (b < STAGE_BUCKETS_S.length && s > (STAGE_BUCKETS_S[b] as number)) b++;
    (this.#counts[i * ROW + b] as number)++;
    this.#sums[i] = (this.#sums[i] as number) + s;
  }

  /** Adds this histogram to `registry` (it renders like any prom-client histogram). */
  register(registry: Registry): void {
    // The registry reads only name, help, type, aggregator, get() and reset() of a metric; its
    // type names prom-client's own classes, hence the cast.
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The rendered series (prom-client's metric interface). */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Value[] }> {
    const values: Value[] = [];
    SIGN_STAGES.forEach((stage, i) => {
      let cumulative = 0;
      for (let b = 0; b < ROW; b++) {
        cumulative += this.#counts[i * ROW + b] as number;
        const le = b < STAGE_BUCKETS_S.length ? (STAGE_BUCKETS_S[b] as number) : '+Inf';
        values.push({ metricName: `${STAGE_METRIC}_bucket`, labels: { le, stage }, value: cumulative });
      }
      values.push({ metricName: `${STAGE_METRIC}_sum`, labels: { stage }, value: this.#sums[i] as number });
      values.push({ metricName: `${STAGE_METRIC}_count`, labels: { stage }, value: cumulative });
    });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.#counts.fill(0);
    this.#sums.fill(0);
  }
}
