/**
 * Accuracy of real fine-tunes: `fineTune()` — the library call behind `finetune <data>` — run once
 * per (alpha, recipe, seed), each in a process of its own, on a real dataset (hymenoptera by
 * default) with pretrained weights. Per run: validation accuracy and loss of the kept (best) model,
 * and the seconds `fineTune` took (decoding, training, writing the outputs: what the command
 * takes, less Node's start-up). Per configuration: mean ± sd over the seeds.
 *
 * A recipe is a set of fineTune options on top of its defaults, written like the CLI flags:
 * `augment-copies=4` or `image-size=160,augment=none`.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { BackendName } from '../src/engine/backend.js';
import { fineTune, resolveOptions, type FineTuneOptions } from '../src/finetune.js';
import type { Reporter } from '../src/reporter.js';
import { round } from './measure.js';

/** fineTune options a recipe may set, with the type of their values. */
const RECIPE_KEYS = {
  imageSize: 'number',
  weights: 'string',
  valSplit: 'number',
  resize: 'string',
  preprocess: 'string',
  augment: 'string',
  augmentCopies: 'number',
  epochs: 'number',
  lr: 'number',
  batchSize: 'number',
  dropout: 'number',
  unfreeze: 'number',
  unfreezeFrom: 'string',
  fineTuneEpochs: 'number',
  fineTuneLr: 'number',
  trainBatchNorm: 'boolean',
  patience: 'number',
  cacheMb: 'number',
  classWeight: 'string',
  mixup: 'number',
  cutmix: 'number',
  ema: 'number',
  layerLrDecay: 'number',
  stage1: 'string',
  probeL2: 'number',
} as const;
type RecipeKey = keyof typeof RECIPE_KEYS;
export type RecipeOptions = Partial<Pick<FineTuneOptions, RecipeKey>>;

export interface Recipe {
  /** As given (normalised to flag names), or 'defaults'. */
  label: string;
  options: RecipeOptions;
}

const camel = (flag: string) => flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** The flag names a recipe may use, for messages. */
export const RECIPE_FLAGS = Object.keys(RECIPE_KEYS).map(kebab);

/**
 * `key=value,key=value` (flag names, with or without `--`; camelCase works too) → fineTune options.
 * Throws a one-line message naming the bad part.
 */
export function parseRecipe(text: string): Recipe {
  const options: Record<string, unknown> = {};
  const parts = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const part of parts) {
    const eq = part.indexOf('=');
    const key = camel(eq < 0 ? part : part.slice(0, eq));
    const raw = eq < 0 ? 'true' : part.slice(eq + 1).trim();
    const type = (RECIPE_KEYS as Record<string, string>)[key];
    if (!type) throw new Error(`'${part}': the recipe options are ${RECIPE_FLAGS.join(', ')}`);
    if (type === 'number') {
      const n = Number(raw);
      if (raw === '' || !Number.isFinite(n)) throw new Error(`'${part}': ${kebab(key)} takes a number`);
      options[key] = n;
    } else if (type === 'boolean') {
      if (raw !== 'true' && raw !== 'false') throw new Error(`'${part}': ${kebab(key)} takes true or false`);
      options[key] = raw === 'true';
    } else {
      options[key] = raw;
    }
  }
  const label = Object.entries(options).map(([k, v]) => `${kebab(k)}=${String(v)}`).join(',');
  return { label: label || 'defaults', options: options as RecipeOptions };
}

/** ImageNet weights in ../shared for the MobileNetV2 widths it has (undefined for others). */
export function sharedWeightsFor(alpha: number, sharedDir: string): string | undefined {
  const candidates: Record<string, string> = {
    '0.35': 'weights/teachable-machine-mobilenet_v2_0.35_224',
    '1': 'weights/mobilenet_v2_1.0_224_from_int8/mobilenet_v2_1.0_224_no_top.from-int8.h5',
  };
  const relative = candidates[String(alpha)];
  const file = relative && path.join(sharedDir, relative);
  return file && existsSync(file) ? file : undefined;
}

/** One fineTune run, as the job process receives it. */
export interface AccuracyRunSpec {
  dataRoot: string;
  alpha: number;
  seed: number;
  /** Already resolved: a path, 'imagenet' or 'none' (a recipe's `weights` wins). */
  weights: string;
  recipe: Recipe;
  /** Keep the run's output folder here (default: a temporary folder, removed). */
  out?: string;
}

export interface AccuracyRun {
  seed: number;
  valAccuracy: number;
  /** Correctly classified validation images, of `valImages`. */
  correct: number;
  valImages: number;
  valLoss: number;
  rocAuc?: number;
  /** The kept epoch (lowest validation loss). */
  bestEpoch: { stage: number; epoch: number } | null;
  /** Epochs trained per stage (early stopping can end a stage sooner). */
  epochsRun: number[];
  stageSeconds: number[];
  /** fineTune's own time: decoding, weights, both stages, outputs. */
  seconds: number;
  /** CPU time of the process meanwhile (every thread): steadier than `seconds` on a shared machine. */
  cpuSeconds: number;
  /** The machine's 1-minute load average before and after: above the core count, others competed for the CPU. */
  loadAverage: [number, number];
  backend: string;
  out?: string;
}

/** Runs `fineTune` once (in the job process) and returns its validation figures. */
export async function accuracyRun(spec: AccuracyRunSpec, backend: BackendName, log: (line: string) => void = () => {}): Promise<AccuracyRun> {
  const out = spec.out ?? path.join(mkdtempSync(path.join(tmpdir(), 'finetune-bench-acc-')), 'run');
  const reporter: Reporter = {
    info: (m) => log(m),
    warn: (m) => log(`warning: ${m}`),
    task: () => ({ update() {}, finish: (summary) => summary && log(summary) }),
  };
  const cpuBefore = process.cpuUsage();
  const loadBefore = os.loadavg()[0]!;
  try {
    const result = await fineTune({
      data: spec.dataRoot,
      out,
      overwrite: true,
      backbone: 'mobilenetv2',
      alpha: spec.alpha,
      weights: spec.weights,
      ...spec.recipe.options,
      seed: spec.seed,
      backend,
      // Every run as a first run: nothing from the persistent cache (another seed's decoded images,
      // a recipe's shared stage 1), so its seconds are what the recipe costs.
      cache: false,
      reporter,
    });
    const cpu = process.cpuUsage(cpuBefore);
    const m = result.metrics;
    if (!m) throw new Error(`${spec.dataRoot} gave no validation images: accuracy needs a valid/ folder or --val-split`);
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8')) as {
      results?: { bestEpoch?: { stage: number; epoch: number } | null; stageSeconds?: number[] };
    };
    const epochsRun = [1, 2].map((stage) => result.history.filter((h) => h.stage === stage).length).filter((n) => n > 0);
    return {
      seed: spec.seed,
      valAccuracy: round(m.accuracy, 4),
      correct: Math.round(m.accuracy * m.samples),
      valImages: m.samples,
      valLoss: round(m.loss, 4),
      ...(m.rocAuc !== undefined ? { rocAuc: round(m.rocAuc, 4) } : {}),
      bestEpoch: config.results?.bestEpoch ?? null,
      epochsRun,
      stageSeconds: (config.results?.stageSeconds ?? []).map((s) => round(s, 2)),
      seconds: round(result.seconds, 2),
      cpuSeconds: round((cpu.user + cpu.system) / 1e6, 2),
      loadAverage: [round(loadBefore, 2), round(os.loadavg()[0]!, 2)],
      backend: result.engine.detail,
      ...(spec.out ? { out } : {}),
    };
  } finally {
    if (!spec.out) rmSync(path.dirname(out), { recursive: true, force: true });
  }
}

export interface Spread {
  mean: number;
  /** Sample standard deviation (n − 1); 0 for one run. */
  sd: number;
  min: number;
  max: number;
}

export function spread(values: number[]): Spread {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean: round(mean, 4), sd: round(sd, 4), min: Math.min(...values), max: Math.max(...values) };
}

/** One (alpha, recipe) configuration over its seeds. */
export interface AccuracyConfig {
  model: string;
  alpha: number;
  dataset: { name: string; root: string; note?: string };
  weights: string;
  recipe: Recipe;
  /** fineTune's options after defaults (seed aside), so the figures say exactly what ran. */
  options: Record<string, unknown>;
  seeds: number[];
  runs: AccuracyRun[];
  /** Seeds whose run failed, with why. */
  failures: { seed: number; error: string }[];
  /** Over the successful runs; absent when none succeeded. */
  valAccuracy?: Spread;
  valLoss?: Spread;
  seconds?: Spread;
}

/** Fills in the spreads from the runs. */
export function summariseConfig(config: AccuracyConfig): AccuracyConfig {
  if (config.runs.length === 0) return config;
  return {
    ...config,
    valAccuracy: spread(config.runs.map((r) => r.valAccuracy)),
    valLoss: spread(config.runs.map((r) => r.valLoss)),
    seconds: spread(config.runs.map((r) => r.seconds)),
  };
}

/**
 * fineTune's resolved options for a configuration (throws fineTune's own usage error for a bad
 * recipe value), without the fields that vary per run or say nothing about the recipe.
 */
export function resolvedRecipe(dataRoot: string, alpha: number, weights: string, recipe: Recipe): Record<string, unknown> {
  const resolved: Record<string, unknown> = { ...resolveOptions({ data: dataRoot, backbone: 'mobilenetv2', alpha, weights, ...recipe.options }) };
  for (const key of ['data', 'out', 'overwrite', 'seed', 'backend']) delete resolved[key];
  return resolved;
}
