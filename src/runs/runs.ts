/**
 * Finding, sorting and comparing training runs: every folder holding a finetune.json is a run.
 * Improving a model means many runs that change one thing each; this is how they are compared.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FinetuneError } from '../errors.js';
import { isRunConfig, numberOrUndefined, type RunConfig } from './config.js';

export { formatDiff, formatRunsTable, type RunsTableOptions } from './format.js';

/** What `finetune runs` knows about one run. */
export interface RunSummary {
  /** The folder relative to the searched folder, with '/' ('.' for the folder itself). */
  name: string;
  /** Absolute path of the run folder. */
  path: string;
  config: RunConfig;
  /** e.g. "mobilenetv2 0.35" or "vgg16". */
  backbone: string;
  /** False while training or after an interrupted run: finetune.json has no results yet. */
  complete: boolean;
  valAccuracy?: number;
  valLoss?: number;
  /** With --folds: valAccuracy is the mean over this many folds, ± valAccuracySd. */
  folds?: number;
  valAccuracySd?: number;
  /** Accuracy on the labelled test set (test/<class>/), when the run had one. */
  testAccuracy?: number;
  /** metrics.json's balanced accuracy, when the run has one. */
  balancedAccuracy?: number;
  rocAuc?: number;
  /** metrics.json's per-class F1, when the run has one. */
  f1?: Record<string, number>;
  /** Wall time of the whole run. */
  seconds?: number;
  stageSeconds?: number[];
  created?: string;
}

export interface FindRunsOptions {
  /** How many folder levels below `dir` to look (default 3; 0: only `dir` itself). */
  depth?: number;
  /** Told about a finetune.json that cannot be read or is not a finetune run. */
  onSkip?: (file: string, reason: string) => void;
}

/** The keys runs can be sorted by, as the CLI spells them. */
export const SORT_KEYS = ['val_accuracy', 'val_loss', 'time', 'name', 'created'] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export type SortDirection = 'asc' | 'desc';

/** Folders never searched: they hold dependencies or a run's own outputs, not runs. */
const SKIP_DIRS = new Set(['node_modules', 'model']);

/**
 * Every run under `dir` (dir itself included), in path order. A run folder is not searched further:
 * it holds its own outputs, not other runs. Hidden folders, node_modules and symbolic links are skipped.
 */
export async function findRuns(dir: string, options: FindRunsOptions = {}): Promise<RunSummary[]> {
  const root = path.resolve(dir);
  const depth = options.depth ?? 3;
  try {
    if (!(await fs.stat(root)).isDirectory()) throw new FinetuneError(`${dir} is not a folder.`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new FinetuneError(`${dir} does not exist.`);
    throw error;
  }
  const runs: RunSummary[] = [];
  const visit = async (folder: string, level: number): Promise<void> => {
    const entries = await fs.readdir(folder, { withFileTypes: true }).catch(() => []);
    if (entries.some((e) => e.isFile() && e.name === 'finetune.json')) {
      const run = await loadRun(folder, root, options.onSkip);
      if (run) {
        runs.push(run);
        return;
      }
    }
    if (level >= depth) return;
    const subfolders = entries
      .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !SKIP_DIRS.has(e.name))
      .map((e) => e.name)
      .sort();
    for (const name of subfolders) await visit(path.join(folder, name), level + 1);
  };
  await visit(root, 0);
  return runs.sort((a, b) => compareNames(a.name, b.name));
}

/**
 * Reads the run in `folder` (its finetune.json, and metrics.json when present). Undefined, after
 * telling `onSkip`, when finetune.json is unreadable or not a finetune run's.
 * @param root names are given relative to this folder
 */
export async function loadRun(
  folder: string,
  root: string = folder,
  onSkip?: (file: string, reason: string) => void,
): Promise<RunSummary | undefined> {
  const file = path.join(folder, 'finetune.json');
  let config: unknown;
  try {
    config = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (error) {
    onSkip?.(file, error instanceof SyntaxError ? `not valid JSON (${error.message})` : (error as Error).message);
    return undefined;
  }
  if (!isRunConfig(config)) {
    onSkip?.(file, "not a finetune run (no 'format': 'finetune-model/…')");
    return undefined;
  }
  const metrics = await readMetrics(path.join(folder, 'metrics.json'));
  const results = config.results;
  const rel = path.relative(path.resolve(root), path.resolve(folder)).split(path.sep).join('/');
  const run: RunSummary = {
    name: rel === '' ? '.' : rel,
    path: path.resolve(folder),
    config,
    backbone: backboneLabel(config),
    complete: results !== undefined,
    valAccuracy: numberOrUndefined(results?.valAccuracy) ?? metrics?.accuracy,
    valLoss: numberOrUndefined(results?.valLoss) ?? metrics?.loss,
    folds: numberOrUndefined(results?.folds?.k),
    valAccuracySd: numberOrUndefined(results?.folds?.sd?.accuracy),
    testAccuracy: numberOrUndefined(results?.testAccuracy),
    balancedAccuracy: metrics?.balancedAccuracy,
    rocAuc: metrics?.rocAuc,
    f1: metrics?.f1,
    seconds: numberOrUndefined(results?.seconds),
    stageSeconds: results?.stageSeconds,
    created: config.created,
  };
  // Leave out what is unknown, so JSON output and object comparisons stay clean.
  for (const key of Object.keys(run) as (keyof RunSummary)[]) if (run[key] === undefined) delete (run as Partial<RunSummary>)[key];
  return run;
}

interface MetricsFile {
  accuracy?: number;
  loss?: number;
  balancedAccuracy?: number;
  rocAuc?: number;
  f1?: Record<string, number>;
}

/** The few numbers of metrics.json the comparison uses; undefined when absent or unreadable. */
async function readMetrics(file: string): Promise<MetricsFile | undefined> {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const perClass = raw.perClass as Record<string, { f1?: unknown }> | undefined;
  const f1 =
    perClass && typeof perClass === 'object'
      ? Object.fromEntries(
          Object.entries(perClass)
            .map(([name, c]) => [name, numberOrUndefined(c?.f1)] as const)
            .filter((e): e is [string, number] => e[1] !== undefined),
        )
      : undefined;
  return {
    accuracy: numberOrUndefined(raw.accuracy),
    loss: numberOrUndefined(raw.loss),
    balancedAccuracy: numberOrUndefined(raw.balancedAccuracy),
    rocAuc: numberOrUndefined(raw.rocAuc),
    f1,
  };
}

function backboneLabel(config: RunConfig): string {
  const name = config.backbone?.name ?? (config.training?.backbone as string | undefined) ?? '?';
  const alpha = config.backbone?.alpha;
  return alpha === undefined ? name : `${name} ${alpha}`;
}

/** Compares values as option values: by their JSON text (undefined is its own value). */
function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The `training` options whose values are not the same in every run, in finetune.json order. */
export function differingOptions(runs: readonly RunSummary[]): string[] {
  const keys: string[] = [];
  for (const run of runs) for (const key of Object.keys(run.config.training ?? {})) if (!keys.includes(key)) keys.push(key);
  return keys.filter((key) => runs.some((run) => !sameValue(run.config.training?.[key], runs[0]!.config.training?.[key])));
}

/** The default direction of each sort key: best or first first. */
export function defaultDirection(key: SortKey): SortDirection {
  return key === 'val_accuracy' ? 'desc' : 'asc';
}

/**
 * A sorted copy. Runs without the value (no validation set, still training) come last in either
 * direction; ties keep name order.
 */
export function sortRuns(runs: readonly RunSummary[], key: SortKey, direction: SortDirection = defaultDirection(key)): RunSummary[] {
  const sign = direction === 'asc' ? 1 : -1;
  const value = (run: RunSummary): number | string | undefined => {
    switch (key) {
      case 'val_accuracy':
        return run.valAccuracy;
      case 'val_loss':
        return run.valLoss;
      case 'time':
        return run.seconds;
      case 'created':
        return run.created;
      case 'name':
        return run.name;
    }
  };
  return [...runs].sort((a, b) => {
    const va = value(a);
    const vb = value(b);
    if (va === undefined || vb === undefined) {
      if (va !== vb) return va === undefined ? 1 : -1;
      return compareNames(a.name, b.name);
    }
    const order = typeof va === 'string' ? (key === 'name' ? compareNames(va, vb as string) : va.localeCompare(vb as string)) : va - (vb as number);
    return order !== 0 ? sign * order : compareNames(a.name, b.name);
  });
}

/** Names in natural order: run-2 before run-10. */
function compareNames(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** One option that differs between two runs. */
export interface OptionChange {
  key: string;
  a: unknown;
  b: unknown;
}

/** One metric of two runs; delta is b − a when both have it. */
export interface MetricChange {
  key: string;
  a?: number;
  b?: number;
  delta?: number;
}

export interface RunDiff {
  /**
   * Differing `training` options by name, then what else changes the result: the data
   * (`data.fingerprint`, `data.root`), the backend actually used (`engine.backend`) and versions.
   */
  options: OptionChange[];
  /** val_accuracy, val_loss, balanced_accuracy, roc_auc, time, then `f1:<class>` for shared classes. */
  metrics: MetricChange[];
}

/** What differs between run a and run b, and how the metrics moved from a to b. */
export function diffRuns(a: RunSummary, b: RunSummary): RunDiff {
  const options: OptionChange[] = differingOptions([a, b]).map((key) => ({
    key,
    a: a.config.training?.[key],
    b: b.config.training?.[key],
  }));
  const context: [string, (c: RunConfig) => unknown][] = [
    ['data.fingerprint', (c) => c.data?.fingerprint],
    ['data.root', (c) => c.data?.root],
    ['engine.backend', (c) => c.engine?.backend],
  ];
  const versionNames = [...new Set([...Object.keys(a.config.versions ?? {}), ...Object.keys(b.config.versions ?? {})])];
  for (const name of versionNames) context.push([`versions.${name}`, (c) => c.versions?.[name]]);
  for (const [key, get] of context) {
    if (!sameValue(get(a.config), get(b.config))) options.push({ key, a: get(a.config), b: get(b.config) });
  }

  const metrics: MetricChange[] = [];
  const add = (key: string, va: number | undefined, vb: number | undefined) => {
    if (va === undefined && vb === undefined) return;
    const change: MetricChange = { key };
    if (va !== undefined) change.a = va;
    if (vb !== undefined) change.b = vb;
    if (va !== undefined && vb !== undefined) change.delta = vb - va;
    metrics.push(change);
  };
  add('val_accuracy', a.valAccuracy, b.valAccuracy);
  add('val_loss', a.valLoss, b.valLoss);
  add('balanced_accuracy', a.balancedAccuracy, b.balancedAccuracy);
  add('roc_auc', a.rocAuc, b.rocAuc);
  add('time', a.seconds, b.seconds);
  for (const name of Object.keys(a.f1 ?? {})) if (b.f1?.[name] !== undefined) add(`f1:${name}`, a.f1![name], b.f1[name]);
  return { options, metrics };
}
