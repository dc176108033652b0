/** One measured value of a benchmark, as recorded in bench/results. */
export interface BenchResult {
  name: string;
  unit: string;
  value: number;
  note?: string;
}
