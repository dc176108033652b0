/** One measured value of a benchmark, as recorded in bench/results. */
export interface BenchResult {
  name: string;
  unit: string;
  value: number;
  note?: string;
  /**
   * The target this figure is held to (issue goals, docs/ARCHITECTURE.md §10): met while
   * `value <= max`. Rows with a goal also go into the goals table of bench/results/latest.md and
   * the README, with their floor when the note names one.
   */
  goal?: { max: number };
}

/** One suite's rows from its latest run (bench/results/latest.json). */
export interface SuiteRun {
  /** ISO time the suite ran */
  recorded: string;
  /** the machine it ran on (cores, CPU, memory, Node) */
  machine: string;
  results: BenchResult[];
}
