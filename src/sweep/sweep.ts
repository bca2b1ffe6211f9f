/**
 * Running a planned sweep: one run after another in this process, each an ordinary run folder
 * under the sweep folder. A complete run is skipped and an interrupted one resumed from its
 * checkpoint, so running the same sweep again carries on where it stopped. At the end, sweep.csv
 * (one row per run) and sweep.png (validation accuracy with its 95 % interval against each value).
 *
 * Why one process, not a child per run: fineTune already stops cleanly on a signal and writes every
 * file atomically, and its checkpoint makes a killed run resumable; a child per run would add a
 * second start-up (tfjs, WASM, weights) per run and nothing in safety.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FinetuneError, InterruptedError, UsageError } from '../errors.js';
import { fineTune, type FineTuneOptions } from '../finetune.js';
import { writeFileAtomic } from '../io/atomic.js';
import { toCsv } from '../io/csv.js';
import { RUN_FILES } from '../io/run-outputs.js';
import { parseCsv } from '../predict/formats.js';
import { abbreviate } from '../report/format.js';
import { renderSweep, type SweepPanel } from '../report/sweep-plot.js';
import { REPORT_FILES } from '../report/index.js';
import { flagName, isRunConfig, numberOrUndefined, type RunConfig } from '../runs/config.js';
import { silentReporter, type Reporter } from '../reporter.js';
import { formatValue, runIdentity, type PlannedRun, type SweepPlan } from './plan.js';

export const SWEEP_FILES = { csv: 'sweep.csv', png: 'sweep.png' } as const;

/** What is in a run's folder before the sweep reaches it. */
export type RunState = 'new' | 'complete' | 'resume' | 'restart';

export interface SweepRunResult {
  run: PlannedRun;
  folder: string;
  /** What the folder held when the sweep reached it. */
  state: RunState;
  /** 'done' (ran now), 'skipped' (complete before), or 'failed'. */
  status: 'done' | 'skipped' | 'failed';
  error?: string;
  valAccuracy?: number;
  valCI95?: [number, number];
  valSamples?: number;
  valLoss?: number;
  testAccuracy?: number;
  /** Wall time of the run, from its finetune.json (the whole run, resumed ones included). */
  seconds?: number;
  /** CPU time of this process while it ran the run now (all threads); absent for skipped runs. */
  cpuSeconds?: number;
  /** 1-minute load average when the run ended (other work on the machine slows a run down). */
  load1?: number;
}

export interface RunSweepOptions {
  plan: SweepPlan;
  out: string;
  reporter?: Reporter;
  /** Progress lines of the sweep itself ("run 2/7: --image-size=224"). */
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Base options every run gets besides its own (e.g. export formats). */
  extra?: Partial<FineTuneOptions>;
}

/** Runs the plan in order; returns one result per run. A failed run is recorded and the sweep goes on; an interrupt ends it. */
export async function runSweep(options: RunSweepOptions): Promise<SweepRunResult[]> {
  const { plan } = options;
  const out = path.resolve(options.out);
  const log = options.log ?? (() => {});
  // Every folder is looked at before the first run starts: one that cannot be used fails the sweep now.
  // In plan order, so the error names the first such folder, every time.
  const states: RunState[] = [];
  for (const run of plan.runs) states.push(await runState(path.join(out, run.name), run));
  await fs.mkdir(out, { recursive: true });
  const results: SweepRunResult[] = [];
  for (const [i, run] of plan.runs.entries()) {
    const folder = path.join(out, run.name);
    const state = states[i]!;
    const label = `run ${i + 1}/${plan.runs.length}: ${describeRun(run)}`;
    if (state === 'complete') {
      log(`${label}: complete, skipped`);
      results.push({ ...(await readResults(folder)), run, folder, state, status: 'skipped' });
      continue;
    }
    // A Ctrl-C that came as the previous run finished: start nothing new.
    if (options.signal?.aborted) throw new InterruptedError(`interrupted before ${label}. Run the same finetune sweep command again to carry on.`);
    log(`${label}${state === 'resume' ? ' (resuming the interrupted run)' : ''} → ${folder}`);
    const cpuBefore = process.cpuUsage();
    try {
      await fineTune({
        ...run.options,
        ...options.extra,
        out: folder,
        overwrite: state === 'restart',
        resume: state === 'resume',
        reporter: options.reporter ?? silentReporter,
        signal: options.signal,
      });
    } catch (error) {
      if (error instanceof InterruptedError) {
        throw new InterruptedError(
          `interrupted during ${label}. Run the same finetune sweep command again: complete runs are skipped and this one resumes from its last saved epoch.`,
        );
      }
      const message = error instanceof Error ? error.message.split('\n')[0]! : String(error);
      log(`${label} failed: ${abbreviate(message, 300)}`);
      results.push({ run, folder, state, status: 'failed', error: message });
      continue;
    }
    const cpu = process.cpuUsage(cpuBefore);
    results.push({
      ...(await readResults(folder)),
      run,
      folder,
      state,
      status: 'done',
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      load1: os.loadavg()[0],
    });
    await writeSweepCsv(out, plan, results);
  }
  return results;
}

/** "base (no change)", "--image-size=160", or "--image-size=160 --lr=0.01". */
export function describeRun(run: PlannedRun): string {
  return run.changes.length === 0 ? 'base (no change)' : run.changes.map((c) => `--${c.flag}=${formatValue(c.value)}`).join(' ');
}

/** Files a run writes besides finetune.json and its checkpoint: a folder holding only these is a run that never got going. */
const RUN_ENTRIES = new Set<string>([...Object.values(RUN_FILES), ...Object.values(REPORT_FILES), 'export']);

/**
 * What `folder` holds for `run`: nothing ('new'), the finished run ('complete'), a run that can be
 * resumed ('resume': its checkpoint), or a run stopped before its first epoch ended ('restart').
 * A UsageError when it holds something else: a run with other options, or files that are no run's.
 */
export async function runState(folder: string, run: PlannedRun): Promise<RunState> {
  let entries: string[];
  try {
    entries = await fs.readdir(folder);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'new';
    throw error;
  }
  if (entries.length === 0) return 'new';
  const config = await readJson(path.join(folder, RUN_FILES.config));
  const hasCheckpoint = await exists(path.join(folder, RUN_FILES.checkpoint, 'state.json'));
  if (isRunConfig(config)) {
    const differences = optionDifferences(config, run);
    if (differences.length > 0) {
      throw new UsageError(
        `${folder} holds a run with other options (${differences.join('; ')}): remove that folder, or give the sweep another --out.`,
      );
    }
    if (hasCheckpoint) return 'resume';
    return config.results !== undefined ? 'complete' : 'restart';
  }
  if (hasCheckpoint) return 'resume';
  const foreign = entries.filter((e) => !RUN_ENTRIES.has(e) && !e.startsWith('.'));
  if (config !== undefined || foreign.length > 0) {
    throw new UsageError(`${folder} holds files that are not a finetune run's (${(foreign[0] ?? RUN_FILES.config)}): move them, or give the sweep another --out.`);
  }
  return 'restart';
}

/**
 * The options that differ between a folder's finetune.json and the planned run, as "--lr was 0.01,
 * now 0.001". Where the run computes (--backend) and how much it caches (--cache-mb) do not count,
 * as for --resume; nor does a key one side lacks only because the versions differ.
 */
function optionDifferences(config: RunConfig, run: PlannedRun): string[] {
  const saved = { ...(config.training ?? {}) };
  const now: Record<string, unknown> = { ...run.resolved };
  for (const key of ['data', 'out', 'overwrite', 'backend', 'cacheMb']) {
    delete saved[key];
    delete now[key];
  }
  const keys = [...new Set([...Object.keys(saved), ...Object.keys(now)])];
  const differing = keys.filter((k) => runIdentity({ [k]: saved[k] }) !== runIdentity({ [k]: now[k] }));
  const root = config.data?.root;
  const lines = differing.map((k) => `--${flagName(k)} was ${JSON.stringify(saved[k])}, now ${JSON.stringify(now[k])}`);
  if (root !== undefined && path.resolve(root) !== path.resolve(run.resolved.data)) lines.push(`data was ${root}, now ${path.resolve(run.resolved.data)}`);
  return lines;
}

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return null; // unreadable: not a run's
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

/** A finished run's figures, from its metrics.json and finetune.json. */
async function readResults(folder: string): Promise<Partial<SweepRunResult>> {
  const config = (await readJson(path.join(folder, RUN_FILES.config))) as RunConfig | undefined;
  const metrics = (await readJson(path.join(folder, RUN_FILES.metrics))) as
    | { accuracy?: unknown; accuracyCI95?: unknown; loss?: unknown; samples?: unknown; test?: { accuracy?: unknown } }
    | undefined;
  const ci = metrics?.accuracyCI95;
  const result: Partial<SweepRunResult> = {
    // A --folds run has no held-out validation set of its own: finetune.json gives the folds' means.
    valAccuracy: numberOrUndefined(metrics?.accuracy) ?? numberOrUndefined(config?.results?.valAccuracy),
    valCI95: Array.isArray(ci) && ci.length === 2 && ci.every((x) => typeof x === 'number') ? (ci as [number, number]) : undefined,
    valSamples: numberOrUndefined(metrics?.samples),
    valLoss: numberOrUndefined(metrics?.loss) ?? numberOrUndefined(config?.results?.valLoss),
    testAccuracy: numberOrUndefined(metrics?.test?.accuracy) ?? numberOrUndefined(config?.results?.testAccuracy),
    seconds: numberOrUndefined(config?.results?.seconds),
  };
  for (const key of Object.keys(result) as (keyof SweepRunResult)[]) if (result[key] === undefined) delete result[key];
  return result;
}

export const SWEEP_CSV_HEADER_END = [
  'val_accuracy',
  'val_ci95_low',
  'val_ci95_high',
  'val_loss',
  'test_accuracy',
  'seconds',
  'cpu_seconds',
  'load1',
  'status',
] as const;

/**
 * sweep.csv: one row per run in sweep order: its folder, which flags it changed ('base' for the
 * baseline), each varied flag's value in that run, then its results. Unknown figures are empty.
 */
export function sweepCsv(plan: SweepPlan, results: readonly SweepRunResult[]): string {
  const num = (x: number | undefined, digits = 6) => (x === undefined ? '' : Number(x.toPrecision(digits)));
  const header = ['run', 'varied', ...plan.vary.map((v) => v.flag), ...SWEEP_CSV_HEADER_END];
  const rows = results.map((r) => [
    r.run.name,
    r.run.changes.length === 0 ? 'base' : r.run.changes.map((c) => c.flag).join(' '),
    ...plan.vary.map((v) => formatValue(r.run.values[v.flag])),
    num(r.valAccuracy),
    num(r.valCI95?.[0]),
    num(r.valCI95?.[1]),
    num(r.valLoss),
    num(r.testAccuracy),
    num(r.seconds, 4),
    num(r.cpuSeconds, 4),
    num(r.load1, 3),
    r.status === 'failed' ? `failed: ${r.error ?? ''}` : r.status,
  ]);
  return toCsv(header, rows);
}

/**
 * The panels of sweep.png: one per varied flag. One-factor: the baseline and that flag's runs, one
 * series. --grid: every run at its value of the flag, one series per combination of the other flags.
 */
export function sweepPanels(plan: SweepPlan, results: readonly SweepRunResult[]): SweepPanel[] {
  return plan.vary.map((v) => {
    const relevant = plan.grid ? results : results.filter((r) => r.run.changes.length === 0 || r.run.changes.every((c) => c.flag === v.flag));
    const others = plan.vary.filter((o) => o.flag !== v.flag);
    const seriesKey = (r: SweepRunResult) => (plan.grid ? others.map((o) => `${o.flag}=${formatValue(r.run.values[o.flag])}`).join(' ') : '');
    const keys = [...new Set(relevant.map(seriesKey))];
    return {
      flag: v.flag,
      // The base value first when it is not among the values given; otherwise in the order given.
      values: [...new Set([...relevant.map((r) => r.run.values[v.flag]).filter((x) => !v.values.includes(x)), ...v.values])],
      baseValue: plan.grid ? undefined : results.find((r) => r.run.changes.length === 0)?.run.values[v.flag],
      series: keys.map((key) => ({
        label: key,
        points: relevant
          .filter((r) => seriesKey(r) === key)
          .map((r) => ({ value: r.run.values[v.flag], accuracy: r.valAccuracy, ci: r.valCI95 })),
      })),
    };
  });
}

/** Writes sweep.csv and sweep.png into the sweep folder (atomically); returns their paths. */
export async function writeSweepOutputs(out: string, plan: SweepPlan, results: readonly SweepRunResult[]): Promise<string[]> {
  const csv = await writeSweepCsv(out, plan, results);
  const png = path.join(out, SWEEP_FILES.png);
  await writeFileAtomic(png, await renderSweep(sweepPanels(plan, results)));
  return [csv, png];
}

/** Writes sweep.csv (atomically): also after each run, so a sweep stopped part-way keeps what its runs measured. */
async function writeSweepCsv(out: string, plan: SweepPlan, results: readonly SweepRunResult[]): Promise<string> {
  const csv = path.join(out, SWEEP_FILES.csv);
  await writeFileAtomic(csv, sweepCsv(plan, await withEarlierCpu(csv, results)));
  return csv;
}

/**
 * A skipped run keeps the CPU time and load the sweep.csv before recorded for it (the invocation
 * that trained it measured them), so running a finished sweep again does not lose them.
 */
async function withEarlierCpu(csv: string, results: readonly SweepRunResult[]): Promise<SweepRunResult[]> {
  let rows: string[][];
  try {
    rows = parseCsv(await fs.readFile(csv, 'utf8'));
  } catch {
    return [...results];
  }
  const header = rows[0] ?? [];
  const [runColumn, cpuColumn, loadColumn] = ['run', 'cpu_seconds', 'load1'].map((name) => header.indexOf(name));
  if (runColumn! < 0 || cpuColumn! < 0) return [...results];
  const earlier = new Map(rows.slice(1).map((row) => [row[runColumn!], row]));
  return results.map((r) => {
    const row = earlier.get(r.run.name);
    if (r.status !== 'skipped' || r.cpuSeconds !== undefined || !row) return r;
    const cpu = row[cpuColumn!] === '' ? undefined : Number(row[cpuColumn!]);
    const load = loadColumn! < 0 || row[loadColumn!] === '' ? undefined : Number(row[loadColumn!]);
    return { ...r, ...(Number.isFinite(cpu) ? { cpuSeconds: cpu } : {}), ...(Number.isFinite(load) ? { load1: load } : {}) };
  });
}

/** For messages: the FinetuneError a sweep ends with when some runs failed. */
export function failedRunsError(results: readonly SweepRunResult[]): FinetuneError | undefined {
  const failed = results.filter((r) => r.status === 'failed');
  if (failed.length === 0) return undefined;
  const reasons = failed.map((r) => `${r.run.name} (${abbreviate(r.error ?? '', 160)})`).join('; ');
  return new FinetuneError(`${failed.length} of ${results.length} sweep runs failed: ${reasons}. Their rows in sweep.csv say why in full.`);
}
