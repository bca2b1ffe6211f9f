/**
 * Time-bounded repetition: one warm-up step (not counted), then steps until at least `minSeconds`
 * have passed or `maxSteps` were timed, whichever comes first (at least one timed step).
 */

export interface StepBudget {
  /** Untimed steps first (kernel set-up, first allocations, optimizer slots). */
  warmupSteps: number;
  /** Stop timing once this much time has been measured… */
  minSeconds: number;
  /** …or this many steps were timed. */
  maxSteps: number;
}

/** What a time-bounded measurement measured. */
export interface StepTiming {
  warmupSteps: number;
  /** Seconds the warm-up took (not in the figure). */
  warmupSeconds: number;
  /** Timed steps. */
  steps: number;
  /** Wall-clock seconds of the timed steps. */
  seconds: number;
  msPerStep: { median: number; min: number; max: number };
}

/** Median of a non-empty list. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Runs `step` (which must not return before its work is done, e.g. after reading a result back) under `budget`. */
export async function timeSteps(step: () => Promise<void> | void, budget: StepBudget): Promise<StepTiming> {
  const warmupStart = performance.now();
  for (let i = 0; i < budget.warmupSteps; i++) await step();
  const warmupSeconds = (performance.now() - warmupStart) / 1000;
  const times: number[] = [];
  const start = performance.now();
  do {
    const t = performance.now();
    await step();
    times.push(performance.now() - t);
  } while (times.length < budget.maxSteps && (performance.now() - start) / 1000 < budget.minSeconds);
  return summarise(budget.warmupSteps, warmupSeconds, times);
}

/** A StepTiming from per-step milliseconds. */
export function summarise(warmupSteps: number, warmupSeconds: number, times: number[]): StepTiming {
  return {
    warmupSteps,
    warmupSeconds: round(warmupSeconds, 3),
    steps: times.length,
    seconds: round(times.reduce((a, b) => a + b, 0) / 1000, 3),
    msPerStep: { median: round(median(times), 1), min: round(Math.min(...times), 1), max: round(Math.max(...times), 1) },
  };
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** A readable one-line reason from anything thrown. */
export function errorLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
}

/** Whether an error is an allocation failure (WASM heap, GPU memory, …). */
export function isOutOfMemory(e: unknown): boolean {
  return /out of memory|OOM|Cannot allocate|allocation failed|Array buffer allocation|WebAssembly\.Memory|memory access out of bounds|Aborted\(\)/i.test(
    e instanceof Error ? e.message : String(e),
  );
}
