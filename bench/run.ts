/**
 * The benchmark suite: `npm run bench -- [flags]` (run `npm run bench -- --help` for them).
 *
 * Per backend: forward images/s of MobileNetV2 α=1.0 and VGG16 at 224 px, training-step images/s
 * of MobileNetV2 α=1.0 at 224 px and VGG16 at 112 px (sizes and batches chosen up front so each
 * step fits its time), and a staged fine-tune timed with the Learner's activation cache and
 * without it; once: decoding images/s (sharp, independent of the backend). On request
 * (`--only accuracy`): validation accuracy of real fineTune runs over several seeds. Prints a table
 * to stdout (progress goes to stderr) and writes every figure, what exactly was measured and the
 * machine to a JSON file.
 *
 * Each backend measurement runs in a process of its own, under a time limit (see bench/jobs.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { BACKEND_ORDER, probeBackends, type BackendName } from '../src/engine/backend.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import {
  parseRecipe,
  RECIPE_FLAGS,
  resolvedRecipe,
  sharedWeightsFor,
  summariseConfig,
  type AccuracyConfig,
  type AccuracyRun,
  type Recipe,
} from './accuracy.js';
import { benchCache, formatCacheBench } from './cache.js';
import { countsJobSpecs, type CountsResult } from './counts.js';
import { benchDecode } from './decode.js';
import { killActiveJob, repoRoot, runJob } from './jobs.js';
import type { StepBudget } from './measure.js';
import { modelLabel, stepDescription, type ModelConfig, type SpeedKind, type SpeedResult } from './model-speed.js';
import { formatTable, machineInfo, tableRows, versions, type BackendReport, type BenchReport } from './report.js';
import { benchKeras, findTensorflowPython, formatKerasBench } from './keras.js';
import { benchPredictEngines, formatPredictEngines, type PredictEngineRun } from './predict-engines.js';
import { resolveStagedData, type StagedOptions, type StagedResult } from './staged.js';

const MEASUREMENTS = ['decode', 'forward', 'train', 'staged', 'accuracy', 'counts', 'predict-engines', 'cache', 'keras'] as const;
type Measurement = (typeof MEASUREMENTS)[number];
/** What runs with no --only: accuracy takes minutes per configuration, so it is asked for by name. */
const DEFAULT_MEASUREMENTS: Measurement[] = ['decode', 'forward', 'train', 'staged'];

/**
 * Seconds each measuring process may take before it is killed (see --time-limit): about 7× what the
 * longest of its kind takes on 2 idle cores (VGG16's forward measurement, ~60 s; α=1.0 accuracy, ~2.5
 * min), which leaves room for a busy machine (4× slower at load 10 on 2 cores) and none for a runaway.
 */
const TIME_LIMIT = { speed: 420, staged: 420, accuracy: 900, counts: 1200, cache: 1200 } as const;
/** VGG16's training step is measured at this size by default: at 224 px, batch 32, one step takes over 12 minutes on 2 CPU cores. */
const VGG16_TRAIN_SIZE = 112;
const DEFAULT_BATCH = { forward: 32, train: { mobilenetv2: 16, vgg16: 8 } } as const;

interface Flags {
  backends?: string[];
  only: string[];
  quick: boolean;
  out?: string;
  batch?: number;
  vgg16TrainSize?: number;
  minSeconds?: number;
  maxSteps?: number;
  timeLimit?: number;
  stagedData?: string;
  stagedSize?: number;
  stagedWeights: string;
  headEpochs: number;
  fineTuneEpochs: number;
  alphas?: number[];
  seeds?: number[];
  recipe: string[];
  accuracyData?: string;
  keepRuns?: string;
  countsSizes?: number[];
  predictRuns?: string[];
  predictImages?: string[];
  predictRounds: number;
  kerasRounds: number;
  kerasLr?: number;
}

const list = (value: string) => value.split(',').map((s) => s.trim()).filter(Boolean);
const wholeNumber = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('use a whole number ≥ 1');
  return n;
};
const wholeOrZero = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('use a whole number ≥ 0');
  return n;
};
const seconds = (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('use a number of seconds ≥ 0');
  return n;
};
const positiveSeconds = (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('use a number of seconds > 0');
  return n;
};
const positiveRate = (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('use a rate > 0, e.g. 1e-3');
  return n;
};
const numberList = (check: (n: number) => boolean, what: string) => (value: string) => {
  const numbers = list(value).map(Number);
  if (numbers.length === 0 || !numbers.every(check)) throw new InvalidArgumentError(`use a comma-separated list of ${what}`);
  return numbers;
};
const collect = (value: string, previous: string[]) => [...previous, value];

function parseFlags(argv: string[]): Flags {
  const program = new Command('npm run bench --')
    .description('Decode, forward, training-step and staged fine-tune speed per tfjs backend; fine-tuning accuracy on request.')
    .option('--backends <list>', `comma-separated, from ${BACKEND_ORDER.join(', ')} (default: every available one but cpu)`, list)
    .option('--only <list>', `comma-separated, from ${MEASUREMENTS.join(', ')} (default: all but accuracy)`, list, [...DEFAULT_MEASUREMENTS])
    .option('--quick', 'tiny sizes and few steps: a smoke test, not figures to compare', false)
    .option('--out <file>', 'JSON output (default bench/results/<host>-<backends>-<date>.json)')
    .option(
      '--batch <n>',
      `every forward/training batch (default: forward ${DEFAULT_BATCH.forward}, MobileNetV2 training ${DEFAULT_BATCH.train.mobilenetv2}, VGG16 training ${DEFAULT_BATCH.train.vgg16}; quick 4); halved while it runs out of memory`,
      wholeNumber,
    )
    .option('--vgg16-train-size <px>', `image size of the VGG16 training step (default ${VGG16_TRAIN_SIZE}: 224 px takes minutes a step on a CPU; quick 32)`, wholeNumber)
    .option('--min-seconds <s>', 'time each forward/training measurement at least this long (default 10; quick 0)', seconds)
    .option('--max-steps <n>', '…or at most this many steps after the warm-up step (default 5; quick 1)', wholeNumber)
    .option(
      '--time-limit <s>',
      `kill a measuring process after this long and report it as stopped (default ${TIME_LIMIT.speed} s per speed or staged measurement, ${TIME_LIMIT.accuracy} s per accuracy run)`,
      positiveSeconds,
    )
    .option('--staged-data <what>', 'hymenoptera (../shared; default), shapes (fixtures/shapes; quick default) or a data folder')
    .option('--staged-size <px>', 'staged fine-tune image size (default 160; quick 64)', wholeNumber)
    .option('--staged-weights <w>', "shared (../shared Teachable Machine MobileNetV2 0.35 when present), none, or a weights path", 'shared')
    .option('--head-epochs <n>', 'staged stage 1 epochs', wholeNumber, 10)
    .option('--fine-tune-epochs <n>', 'staged stage 2 epochs', wholeOrZero, 5)
    .option('--alphas <list>', 'accuracy and cache: MobileNetV2 widths, e.g. 0.35,1 (default 0.35)', numberList((n) => n > 0, 'widths, e.g. 0.35,1'))
    .option('--seeds <list>', 'accuracy: one fineTune run per seed (default 1,2,3; quick 1,2)', numberList((n) => Number.isInteger(n) && n >= 0, 'whole numbers ≥ 0'))
    .option(
      '--recipe <options>',
      `accuracy: fineTune options on top of its defaults, as flag=value pairs, e.g. augment-copies=4 or image-size=160,augment=none; repeat to compare recipes (from ${RECIPE_FLAGS.join(', ')})`,
      collect,
      [],
    )
    .option('--accuracy-data <what>', 'accuracy: hymenoptera (../shared; default), flowers[:N] (N per class of ../shared flowers_kaggle_128, default 200; 20 % validation, seeded), shapes (fixtures/shapes; quick default) or a data folder')
    .option(
      '--counts-sizes <list>',
      'counts (webgpu only): image sizes to count a training step at (default 224 on a GPU, 128,160 on a CPU adapter; quick 32)',
      numberList((n) => Number.isInteger(n) && n >= 32, 'sizes ≥ 32'),
    )
    .option('--keep-runs <dir>', "accuracy: keep each run's output folder under <dir> (default: removed), e.g. for `finetune runs <dir>`")
    .option('--predict-runs <list>', 'predict-engines: run folders to label with (default: MobileNetV2 α=0.35 and 1.0 at 224 px from ../shared weights)', list)
    .option('--predict-images <list>', 'predict-engines: image folders (default: hymenoptera val/ and 100 per class of flowers)', list)
    .option('--predict-rounds <n>', 'predict-engines: `finetune predict` runs per engine, alternating', wholeNumber, 3)
    .option('--keras-lr <rate>', "keras: the Keras recipe's stage 1 Adam rate (default the guide's 1e-4; stage 2 at a tenth)", positiveRate)
    .option('--keras-rounds <n>', 'keras: rounds of (Keras recipe, finetune, finetune --fine-tune-epochs 0, finetune --augment-copies 4, finetune --stage1 adam --augment-copies 4 --epochs 30) per alpha, alternating', wholeNumber, 1)
    .addHelpText(
      'after',
      '\nThe pure-JavaScript cpu backend runs only when named in --backends, and then with a small workload (the --quick sizes, no VGG16 training step).' +
        '\nAccuracy (--only accuracy) runs fineTune on hymenoptera once per alpha × recipe × seed, with the ../shared ImageNet weights for α 0.35 and 1;' +
        '\nabout 1 minute a run at α=0.35 and 2.5 at α=1 on 2 CPU cores.' +
        '\nPredict engines (--only predict-engines) times whole `finetune predict` processes with --engine tfjs and --engine onnx on the same images.' +
        '\nKeras (--only keras) runs the Keras guide\'s transfer-learning recipe (bench/keras-recipe.py; Python from $FINETUNE_BENCH_PYTHON,' +
        '\n/tmp/tfenv/bin/python or python3, skipped when none imports TensorFlow) beside finetune on hymenoptera, --alphas (default 1,0.35).',
    );
  // A usage error exits with status 2, as finetune's own commands do (commander's default is 1).
  program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
  program.parse(argv, { from: 'user' });
  const flags = program.opts<Flags>();
  for (const m of flags.only) {
    if (!(MEASUREMENTS as readonly string[]).includes(m)) program.error(`--only ${m}: use ${MEASUREMENTS.join(', ')}`);
  }
  for (const b of flags.backends ?? []) {
    if (!(BACKEND_ORDER as readonly string[]).includes(b)) program.error(`--backends ${b}: use ${BACKEND_ORDER.join(', ')}`);
  }
  for (const r of flags.recipe) {
    try {
      parseRecipe(r);
    } catch (e) {
      program.error(`--recipe ${(e as Error).message}`);
    }
  }
  return flags;
}

/** One forward or training measurement to make. */
interface SpeedPlan {
  config: ModelConfig;
  kind: SpeedKind;
  batch: number;
  /** Why this size or batch, when it is not the obvious one. */
  note?: string;
}

interface AccuracyPlan {
  data: string;
  alphas: number[];
  seeds: number[];
  recipes: Recipe[];
  keepRuns?: string;
}

interface Workload {
  speed: SpeedPlan[];
  budget: StepBudget;
  staged: StagedOptions;
  accuracy: AccuracyPlan;
}

/** The size and batch of every forward and training measurement, chosen up front so each fits its time. */
function speedPlans(flags: Flags, quick: boolean): SpeedPlan[] {
  const size = quick ? 32 : 224;
  const mobilenet: ModelConfig = quick ? { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 32 } : { backbone: 'mobilenetv2', alpha: 1, imageSize: 224 };
  const vggTrainSize = flags.vgg16TrainSize ?? (quick ? 32 : VGG16_TRAIN_SIZE);
  const batch = (fallback: number) => flags.batch ?? (quick ? 4 : fallback);
  const plans: SpeedPlan[] = [
    { config: mobilenet, kind: 'forward', batch: batch(DEFAULT_BATCH.forward) },
    {
      config: mobilenet,
      kind: 'train',
      batch: batch(DEFAULT_BATCH.train.mobilenetv2),
      ...(!quick && flags.batch === undefined ? { note: `batch ${DEFAULT_BATCH.train.mobilenetv2}: 32 exhausts WebAssembly's 4 GiB memory` } : {}),
    },
    { config: { backbone: 'vgg16', imageSize: size }, kind: 'forward', batch: batch(DEFAULT_BATCH.forward) },
    {
      config: { backbone: 'vgg16', imageSize: vggTrainSize },
      kind: 'train',
      batch: batch(DEFAULT_BATCH.train.vgg16),
      ...(vggTrainSize !== size ? { note: `${vggTrainSize} px, not ${size}: a 224 px step takes minutes on a CPU (--vgg16-train-size)` } : {}),
    },
  ];
  return plans;
}

const QUICK_RECIPE = 'image-size=64,epochs=2,fine-tune-epochs=1';

function accuracyPlan(flags: Flags, quick: boolean): AccuracyPlan {
  const texts = flags.recipe.length > 0 ? flags.recipe : [''];
  return {
    data: flags.accuracyData ?? (quick ? 'shapes' : 'hymenoptera'),
    alphas: flags.alphas ?? [0.35],
    seeds: flags.seeds ?? (quick ? [1, 2] : [1, 2, 3]),
    // Quick: small images and few epochs first, so a recipe given still wins.
    recipes: texts.map((t) => parseRecipe(quick ? `${QUICK_RECIPE},${t}` : t)),
    ...(flags.keepRuns ? { keepRuns: path.resolve(flags.keepRuns) } : {}),
  };
}

function workload(flags: Flags, quick: boolean, sharedDir: string): Workload {
  return {
    speed: speedPlans(flags, quick),
    budget: {
      warmupSteps: 1,
      minSeconds: flags.minSeconds ?? (quick ? 0 : 10),
      maxSteps: flags.maxSteps ?? (quick ? 1 : 5),
    },
    staged: {
      data: flags.stagedData ?? (quick ? 'shapes' : 'hymenoptera'),
      sharedDir,
      repoRoot,
      alpha: 0.35,
      imageSize: flags.stagedSize ?? (quick ? 64 : 160),
      batchSize: quick ? 16 : 32,
      headEpochs: flags.headEpochs,
      fineTuneEpochs: flags.fineTuneEpochs,
      unfreeze: 2,
      lr: 1e-3,
      fineTuneLr: 1e-4,
      seed: 42,
      weights: flags.stagedWeights,
      warmup: true,
    },
    accuracy: accuracyPlan(flags, quick),
  };
}

/**
 * The plain-JavaScript backend: the quick sizes, a 32 px staged fine-tune, and no VGG16 training
 * step (over 5 minutes per step of 4 images even at 32 px on a 2-core machine).
 */
function cpuWorkload(flags: Flags, sharedDir: string): Workload {
  const w = workload(flags, true, sharedDir);
  return {
    ...w,
    speed: w.speed.filter((p) => !(p.kind === 'train' && p.config.backbone === 'vgg16')),
    staged: { ...w.staged, imageSize: flags.stagedSize ?? 32 },
    accuracy: { ...w.accuracy, recipes: w.accuracy.recipes.map((r) => parseRecipe(`${r.label === 'defaults' ? '' : r.label},image-size=32`)) },
  };
}

const log = (line: string) => console.error(line);

/** One forward or training measurement, halving the batch while it runs out of memory. */
async function speed(backend: BackendName, plan: SpeedPlan, w: Workload, timeLimit: number, report: BackendReport): Promise<SpeedResult> {
  const { config, kind } = plan;
  const result: SpeedResult = {
    measurement: kind,
    model: modelLabel(config),
    backbone: config.backbone,
    ...(config.backbone === 'mobilenetv2' ? { alpha: config.alpha ?? 1 } : {}),
    imageSize: config.imageSize,
    batch: plan.batch,
    requestedBatch: plan.batch,
    weights: 'random',
    what: stepDescription(kind),
    timeLimitSeconds: timeLimit,
    notes: plan.note ? [plan.note] : [],
  };
  for (let batch = plan.batch; ; batch = Math.floor(batch / 2)) {
    result.batch = batch;
    const out = await runJob<{ timing: SpeedResult['timing']; imagesPerSecond: number }>(
      { kind: 'speed', backend, config, measurement: kind, batch, budget: w.budget },
      timeLimit,
    );
    if (out.engine) {
      report.detail ??= out.engine.detail;
      report.probes ??= out.engine.probes;
    }
    if (out.result) {
      result.timing = out.result.timing;
      result.imagesPerSecond = out.result.imagesPerSecond;
      return result;
    }
    if (out.outOfMemory && batch > 1) {
      result.notes.push(`batch ${batch} ran out of memory (${out.error}); halved`);
      log(`  [${backend}] batch ${batch} ran out of memory: trying ${Math.floor(batch / 2)}`);
      continue;
    }
    result.error = out.error ?? 'no result';
    return result;
  }
}

/** Every (alpha, recipe) configuration over its seeds, one fineTune run per process. */
async function accuracy(backend: BackendName, plan: AccuracyPlan, sharedDir: string, timeLimit: number, report: BackendReport): Promise<AccuracyConfig[]> {
  const dataset = resolveStagedData(plan.data, sharedDir, repoRoot);
  const configs: AccuracyConfig[] = [];
  for (const alpha of plan.alphas) {
    for (const recipe of plan.recipes) {
      const weights = recipe.options.weights ?? sharedWeightsFor(alpha, sharedDir) ?? (plan.data === 'shapes' ? 'none' : 'imagenet');
      const options = resolvedRecipe(dataset.root, alpha, weights, recipe);
      const config: AccuracyConfig = {
        model: modelLabel({ backbone: 'mobilenetv2', alpha, imageSize: Number(options.imageSize) }),
        alpha,
        dataset,
        weights,
        recipe,
        options,
        seeds: plan.seeds,
        runs: [],
        failures: [],
      };
      for (const seed of plan.seeds) {
        log(`  [${backend}] accuracy: ${config.model}, ${dataset.name}, ${recipe.label}, seed ${seed}…`);
        const out = await runJob<AccuracyRun>(
          {
            kind: 'accuracy',
            backend,
            run: {
              dataRoot: dataset.root,
              alpha,
              seed,
              weights,
              recipe,
              ...(plan.keepRuns ? { out: path.join(plan.keepRuns, runFolderName(backend, alpha, recipe, seed)) } : {}),
            },
          },
          timeLimit,
        );
        if (out.engine) {
          report.detail ??= out.engine.detail;
          report.probes ??= out.engine.probes;
        }
        if (out.result) {
          config.runs.push(out.result);
          log(`  [${backend}]   val accuracy ${out.result.valAccuracy} (${out.result.correct}/${out.result.valImages}), loss ${out.result.valLoss}, ${out.result.seconds} s`);
        } else {
          config.failures.push({ seed, error: out.error ?? 'no result' });
        }
      }
      configs.push(summariseConfig(config));
    }
  }
  return configs;
}

/** fineTune's own check of every alpha × recipe, before anything runs (a bad value should not wait for the other measurements). */
function accuracyUsageProblem(plan: AccuracyPlan, sharedDir: string): string | undefined {
  const dataset = resolveStagedData(plan.data, sharedDir, repoRoot);
  if (!existsSync(dataset.root)) return `--accuracy-data ${plan.data}: ${dataset.root} does not exist`;
  for (const alpha of plan.alphas) {
    for (const recipe of plan.recipes) {
      try {
        resolvedRecipe(dataset.root, alpha, 'imagenet', recipe); // the weights are resolved later; any pretrained value checks the same
      } catch (e) {
        return `--alphas ${alpha} --recipe ${recipe.label}: ${(e as Error).message}`;
      }
    }
  }
  return undefined;
}

function runFolderName(backend: string, alpha: number, recipe: Recipe, seed: number): string {
  const recipePart = recipe.label.replace(/[^A-Za-z0-9.=-]+/g, '_');
  return `${backend}-a${alpha}-${recipePart}-seed${seed}`;
}

function defaultOut(host: string, backends: string[], started: Date): string {
  const stamp = started.toISOString().slice(0, 19).replace(/:/g, '-');
  const safeHost = host.replace(/[^A-Za-z0-9._-]/g, '_');
  return path.join(repoRoot, 'bench/results', `${safeHost}-${backends.join('+') || 'none'}-${stamp}.json`);
}

export async function main(argv: string[]): Promise<number> {
  const started = new Date();
  const flags = parseFlags(argv);
  const only = new Set(flags.only as Measurement[]);
  const timeLimit = (kind: keyof typeof TIME_LIMIT) => flags.timeLimit ?? TIME_LIMIT[kind];
  // As in the tests: FINETUNE_SHARED_DIR points elsewhere (e.g. /nonexistent, to see what runs without it).
  const sharedDir = path.resolve(process.env.FINETUNE_SHARED_DIR ?? path.join(repoRoot, '../shared'));
  const standard = workload(flags, flags.quick, sharedDir);
  if (only.has('accuracy')) {
    const problem = accuracyUsageProblem(standard.accuracy, sharedDir);
    if (problem) {
      console.error(`error: ${problem}`);
      return 2;
    }
  }

  const probes = await probeBackends();
  const backends: BackendName[] = flags.backends
    ? (flags.backends as BackendName[])
    : probes.filter((p) => p.available && p.name !== 'cpu').map((p) => p.name);
  log(`backends: ${backends.join(', ')}  (${probes.map((p) => `${p.name}: ${p.available ? 'yes' : 'no'} — ${p.detail}`).join('; ')})`);

  const report: BenchReport = {
    format: 'finetune-bench/1',
    created: started.toISOString(),
    argv,
    quick: flags.quick,
    machine: machineInfo(),
    versions: versions(),
    probes,
    settings: {
      only: [...only],
      speed: standard.speed.map((p) => ({ model: modelLabel(p.config), measurement: p.kind, imageSize: p.config.imageSize, batch: p.batch, note: p.note })),
      budget: standard.budget,
      timeLimitSeconds: { speed: timeLimit('speed'), staged: timeLimit('staged'), accuracy: timeLimit('accuracy') },
      staged: { ...standard.staged, sharedDir: undefined, repoRoot: undefined },
      ...(only.has('accuracy') ? { accuracy: standard.accuracy } : {}),
    },
    backends: [],
    seconds: 0,
  };

  // Measurements reported as a flat list (counts), beside the per-backend ones.
  const results: CountsResult[] = [];
  const countsErrors: string[] = [];
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-bench-'));
  try {
    if (only.has('decode')) {
      report.decode = await benchDecode(
        {
          sharedDir,
          size: flags.quick ? 64 : 224,
          ...(flags.quick ? { maxFiles: 48 } : {}),
          minSeconds: flags.quick ? 0 : 5,
          maxPasses: flags.quick ? 1 : 3,
          tmpDir: tmp,
        },
        log,
      );
    }

    if (only.has('predict-engines')) {
      report.predictEngines = await benchPredictEngines(
        { sharedDir, tmpDir: tmp, runs: flags.predictRuns, images: flags.predictImages, rounds: flags.predictRounds },
        log,
      );
    }

    if (only.has('keras')) {
      const found = findTensorflowPython();
      const hymenoptera = path.join(sharedDir, 'datasets/hymenoptera_data');
      const alphas = (flags.alphas as number[] | undefined) ?? [1, 0.35];
      const missing = alphas.filter((a) => sharedWeightsFor(a, sharedDir) === undefined);
      const skipped = !found.python
        ? found.reason
        : !existsSync(hymenoptera)
          ? `${hymenoptera} does not exist (set FINETUNE_SHARED_DIR)`
          : missing.length
            ? `no ../shared weights for α ${missing.join(', ')} (0.35 and 1 have them)`
            : undefined;
      if (skipped) {
        log(`keras: skipped: ${skipped}`);
        report.keras = { skipped };
      } else {
        try {
          report.keras = {
            python: found.python,
            runs: await benchKeras({
              dataRoot: hymenoptera,
              alphas,
              rounds: flags.kerasRounds,
              weightsFor: (a) => sharedWeightsFor(a, sharedDir)!,
              python: found.python!,
              kerasLr: flags.kerasLr,
              timeLimitSeconds: flags.timeLimit ?? 1800,
              log,
            }),
          };
        } catch (error) {
          report.keras = { error: (error as Error).message };
        }
      }
    }

    // Only predict-engines or keras: no per-backend measurement to make.
    const perBackend = [...only].some((m) => m !== 'decode' && m !== 'predict-engines' && m !== 'keras');
    for (const backend of perBackend ? backends : []) {
      const b: BackendReport = { name: backend, notes: [], forward: [], train: [] };
      report.backends.push(b);
      const w = backend === 'cpu' ? cpuWorkload(flags, sharedDir) : standard;
      if (backend === 'cpu') {
        b.notes.push(
          'cpu (plain JavaScript) is far too slow for the full workload: measured with the --quick sizes, ' +
            `the staged fine-tune at ${w.staged.imageSize} px, and no VGG16 training step`,
        );
      }
      for (const plan of w.speed) {
        if (only.has(plan.kind)) b[plan.kind].push(await speed(backend, plan, w, timeLimit('speed'), b));
      }
      if (only.has('staged')) {
        const out = await runJob<StagedResult>({ kind: 'staged', backend, options: w.staged }, timeLimit('staged'));
        if (out.engine) {
          b.detail ??= out.engine.detail;
          b.probes ??= out.engine.probes;
        }
        if (out.result) b.staged = out.result;
        else b.stagedError = out.error ?? 'no result';
      }
      if (only.has('accuracy')) b.accuracy = await accuracy(backend, w.accuracy, sharedDir, timeLimit('accuracy'), b);
      if (only.has('cache')) {
        // Hymenoptera with the shared weights of each --alphas width (default 0.35), --augment-copies 4,
        // fineTune's defaults otherwise; --quick (or without ../shared): fixtures/shapes at 64 px, 2 + 1 epochs.
        const hymenoptera = path.join(sharedDir, 'datasets/hymenoptera_data');
        try {
          b.cache = [];
          for (const alpha of (flags.alphas as number[] | undefined) ?? [0.35]) {
            const weights = sharedWeightsFor(alpha, sharedDir);
            const full = !flags.quick && existsSync(hymenoptera) && weights !== undefined;
            b.cache.push(
              await benchCache(
                {
                  backend,
                  data: full ? hymenoptera : path.join(repoRoot, 'fixtures/shapes'),
                  weights: weights ?? 'none',
                  alpha,
                  augmentCopies: 4,
                  ...(full ? {} : { imageSize: 64, epochs: 2, fineTuneEpochs: 1 }),
                  timeLimitSeconds: timeLimit('cache'),
                },
                log,
              ),
            );
          }
        } catch (error) {
          b.cacheError = (error as Error).message;
        }
      }
      if (only.has('counts') && backend !== 'webgpu') b.notes.push('counts: GPU dispatches are counted on webgpu only');
      if (only.has('counts') && backend === 'webgpu') {
        for (const spec of countsJobSpecs(flags.quick, flags.countsSizes)) {
          const out = await runJob<CountsResult[]>({ kind: 'counts', backend, counts: spec }, timeLimit('counts'));
          b.detail ??= out.engine?.detail;
          if (out.result) results.push(...out.result);
          else countsErrors.push(`${spec.stage} ${spec.variant}: ${out.error ?? 'no result'}`);
        }
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  report.seconds = Math.round((Date.now() - started.getTime()) / 100) / 10;
  const out = path.resolve(flags.out ?? defaultOut(report.machine.hostname, backends, started));
  mkdirSync(path.dirname(out), { recursive: true });
  const written = only.has('counts') ? { ...report, results, ...(countsErrors.length ? { countsErrors } : {}) } : report;
  await writeFileAtomic(out, JSON.stringify(written, null, 2) + '\n');

  const m = report.machine;
  console.log(
    `\n${m.cpuModel} × ${m.cpuCount}, ${(m.totalMemoryBytes / 1024 ** 3).toFixed(0)} GiB, Node ${m.node}, tfjs ${report.versions.tfjs}, load average ${m.loadAverage[0]} at the start` +
      (report.quick ? '  (--quick: smoke-test sizes)' : ''),
  );
  for (const b of report.backends) console.log(`${b.name}: ${b.detail ?? 'not started'}${b.notes.length ? ` — ${b.notes.join('; ')}` : ''}`);
  if (report.backends.length > 0 || report.decode) console.log(`\n${formatTable(tableRows(report))}\n`);
  if (report.predictEngines) console.log(`\nfinetune predict, whole process, --engine tfjs against --engine onnx:\n${formatPredictEngines(report.predictEngines)}\n`);
  if (report.keras?.runs) console.log(`\nKeras guide's recipe against finetune, whole processes, alternating (CPU s: user + system, every thread):\n${formatKerasBench(report.keras.runs)}\n`);
  if (report.keras?.skipped) console.log(`keras: skipped: ${report.keras.skipped}`);
  if (report.keras?.error) console.log(`keras failed: ${report.keras.error}`);
  for (const r of results) {
    console.log(
      `counts ${r.model}, batch ${r.batch}, ${r.stage} (${r.trains}), ${r.variant}: ${r.dispatchesPerStep} dispatches ` +
        `(${r.dispatchesPerLayer} per layer of ${r.stepLayers}; ${r.layers} layers), ${r.readsPerStep} reads, ${r.allocationsPerStep} buffer allocations per step`,
    );
  }
  for (const e of countsErrors) console.log(`counts failed: ${e}`);
  for (const b of report.backends) {
    for (const r of b.cache ?? []) console.log(formatCacheBench(b.name, r) + '\n');
    if (b.cacheError) console.log(`cache (${b.name}) failed: ${b.cacheError}\n`);
  }
  if (results.length > 0) console.log(`counts notes: ${[...new Set(results.flatMap((r) => r.notes))].join('; ')}\n`);
  console.log(`written: ${path.relative(process.cwd(), out) || out} (${report.seconds} s in all)`);
  if (!only.has('accuracy')) {
    console.log('accuracy (not in the default run; minutes per configuration): npm run bench -- --only accuracy [--alphas 0.35,1] [--seeds 1,2,3] [--recipe augment-copies=4]');
  }

  const failed =
    report.backends.some(
      (b) => b.stagedError || b.cacheError || [...b.forward, ...b.train].some((r) => r.error) || (b.accuracy ?? []).some((c) => c.failures.length > 0),
    ) ||
    (report.backends.length === 0 && !report.decode && !report.predictEngines && !report.keras) ||
    report.keras?.error !== undefined ||
    countsErrors.length > 0;
  return failed ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killActiveJob();
    process.exit(130);
  });
}
process.exitCode = await main(process.argv.slice(2));
