/**
 * A staged fine-tune (head on the frozen backbone, then the top blocks unfrozen), timed twice in one
 * process on the same decoded data from the same initial weights: with the Learner's activation
 * cache (its default `cacheBytes`: the frozen bottom's outputs are computed once and kept) and
 * without it (`cacheBytes: 0`: the frozen bottom runs on every batch of every epoch). Fixed epoch
 * counts (no early stopping or learning-rate schedule, so both runs do the same work), no
 * augmentation (the cache only applies without it).
 *
 * Timed: from creating the Learner to the end of stage 2 plus a final evaluation on the validation
 * set — everything `fineTune` does between decoding and saving, feature computation included.
 * Not timed: decoding, building the model, loading weights.
 */
import { existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { getBackbone } from '../src/backbones/registry.js';
import { loadBackboneWeights } from '../src/backbones/weights.js';
import type { ImageSet } from '../src/data/batches.js';
import { loadImageData, type ImageData } from '../src/data/image-data.js';
import { discoverLayout } from '../src/data/layout.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { balancedClassWeights } from '../src/train/callbacks.js';
import { attachHead } from '../src/train/head.js';
import { Learner } from '../src/train/learner.js';
import { round } from './measure.js';

export interface StagedOptions {
  /** 'hymenoptera' (../shared, falls back to the shapes fixture when absent), 'shapes' (fixtures/shapes), or a data folder. */
  data: string;
  sharedDir: string;
  repoRoot: string;
  alpha: number;
  imageSize: number;
  batchSize: number;
  headEpochs: number;
  fineTuneEpochs: number;
  /** Top backbone blocks trained in stage 2. */
  unfreeze: number;
  lr: number;
  fineTuneLr: number;
  seed: number;
  /** 'shared' (Teachable Machine MobileNetV2 0.35 in ../shared when present, else random), 'none', or a weights path. */
  weights: string;
  /** A short untimed run on a few batches first (kernel set-up; shader compilation on GPUs). */
  warmup: boolean;
}

export interface StagedRun {
  /** The Learner option used: its default, or 0 (no cache). */
  cacheBytes: 'default' | 0;
  seconds: number;
  stageSeconds: number[];
  /** Seconds of each epoch, stage 1 then stage 2 (training + validation). */
  epochSeconds: number[];
  valAccuracy: number;
  valLoss: number;
}

export interface StagedResult {
  dataset: { name: string; root: string; note?: string; classes: string[]; train: number; valid: number; decodeSeconds: number };
  model: string;
  weights: string;
  imageSize: number;
  alpha: number;
  batchSize: number;
  augment: 'none';
  epochs: { head: number; fineTune: number; unfreezeBlocks: number };
  lr: { head: number; fineTune: number };
  seed: number;
  warmup: boolean;
  /** Run first. */
  cached: StagedRun;
  /** Run second, from the same initial weights. */
  uncached: StagedRun;
  /** uncached seconds / cached seconds: the speed-up the cache gives. */
  ratio: number;
  /** Largest absolute difference between any weight of the two final models (same seed: ≈ 0). */
  maxWeightDiff: number;
  what: string;
}

const TM_WEIGHTS = 'weights/teachable-machine-mobilenet_v2_0.35_224';

/**
 * Which folder a `data` option means, and what to say about it: 'shapes', 'hymenoptera',
 * 'flowers[:N]' (the first N files by name of each class of ../shared's flowers_kaggle_128, default
 * 200, linked into a folder under the system's temporary folder; no valid/, so --val-split holds
 * out 20 %, drawn by the seed), or a data folder.
 */
export function resolveStagedData(data: string, sharedDir: string, repoRoot: string): { name: string; root: string; note?: string } {
  const shapes = { name: 'shapes', root: path.join(repoRoot, 'fixtures/shapes') };
  if (data === 'shapes') return shapes;
  if (data === 'hymenoptera') {
    const root = path.join(sharedDir, 'datasets/hymenoptera_data');
    if (existsSync(root)) return { name: 'hymenoptera', root };
    return { ...shapes, note: `${root} is absent: the shapes fixture stands in` };
  }
  const flowers = /^flowers(?::(\d+))?$/.exec(data);
  if (flowers) {
    const perClass = Number(flowers[1] ?? 200);
    const source = path.join(sharedDir, 'datasets/flowers_kaggle_128');
    if (!existsSync(source)) throw new Error(`${source} is absent (set FINETUNE_SHARED_DIR)`);
    const root = path.join(tmpdir(), `finetune-bench-flowers-${perClass}`);
    linkFlowersSubset(sharedDir, perClass, root);
    return { name: `flowers (${perClass} per class)`, root };
  }
  return { name: path.basename(path.resolve(data)), root: path.resolve(data) };
}

/** Links the first `perClass` files by name of each class of ../shared's flowers_kaggle_128 into `into` (class folders; links already there are kept). */
export function linkFlowersSubset(sharedDir: string, perClass: number, into: string): void {
  const source = path.join(sharedDir, 'datasets/flowers_kaggle_128');
  for (const c of readdirSync(source, { withFileTypes: true }).filter((d) => d.isDirectory())) {
    mkdirSync(path.join(into, c.name), { recursive: true });
    for (const f of readdirSync(path.join(source, c.name)).sort().slice(0, perClass)) {
      const link = path.join(into, c.name, f);
      if (!existsSync(link)) symlinkSync(path.join(source, c.name, f), link);
    }
  }
}

function resolveWeights(weights: string, sharedDir: string, alpha: number): string | undefined {
  if (weights === 'none') return undefined;
  if (weights === 'shared') {
    const dir = path.join(sharedDir, TM_WEIGHTS);
    return alpha === 0.35 && existsSync(path.join(dir, 'model.json')) ? dir : undefined;
  }
  return path.resolve(weights);
}

/** The first `n` images of a set, copied into memory. */
function head(set: ImageSet, n: number): ImageSet {
  const k = Math.min(n, set.images.length);
  return {
    images: new MemoryPixelStore(Array.from({ length: k }, (_, i) => set.images.get(i))),
    labels: set.labels.slice(0, k),
    paths: set.paths.slice(0, k),
  };
}

async function maxAbsDiff(a: tf.LayersModel, b: tf.LayersModel): Promise<number> {
  const wa = a.getWeights();
  const wb = b.getWeights();
  let max = 0;
  for (const [i, w] of wa.entries()) {
    // data(), not dataSync(): WebGPU cannot read back synchronously in Node (no OffscreenCanvas).
    const [x, y] = await Promise.all([w.data(), wb[i]!.data()]);
    for (let j = 0; j < x.length; j++) max = Math.max(max, Math.abs(x[j]! - y[j]!));
  }
  return max;
}

export async function benchStaged(options: StagedOptions, log: (line: string) => void = () => {}): Promise<StagedResult> {
  const spec = getBackbone('mobilenetv2');
  const backboneOptions = { alpha: options.alpha, imageSize: options.imageSize };
  const dataset = resolveStagedData(options.data, options.sharedDir, options.repoRoot);
  const weightsFile = resolveWeights(options.weights, options.sharedDir, options.alpha);

  let t = performance.now();
  const layout = await discoverLayout(dataset.root, { valSplit: 0.2, seed: options.seed });
  const data: ImageData = await loadImageData(layout, { size: options.imageSize, resize: 'stretch' });
  const decodeSeconds = (performance.now() - t) / 1000;
  log(`staged: ${dataset.name}, ${data.train.images.length} train + ${data.valid.images.length} valid images at ${options.imageSize} px`);

  const learnerData = { train: data.train, valid: data.valid };
  const classWeights = balancedClassWeights(data.train.labels, data.classes.length);
  const build = async (): Promise<tf.LayersModel> => {
    const backbone = spec.build(backboneOptions);
    if (weightsFile) await loadBackboneWeights(backbone, weightsFile);
    return attachHead(backbone, { numClasses: data.classes.length, dropout: 0.2, seed: options.seed });
  };
  const first = await build();
  const second = await build();
  // Random initialisers are not seeded: copy, so both runs start from the same weights. Layer by
  // layer: a model's getWeights() lists trainable weights first, its setWeights() goes by layer.
  const initial = first.layers.map((layer) => layer.getWeights().map((w) => w.clone()));
  const reset = (model: tf.LayersModel) => model.layers.forEach((layer, i) => layer.setWeights(initial[i]!));
  reset(second);

  const makeLearner = (model: tf.LayersModel, d: typeof learnerData, cache: 'default' | 0) =>
    new Learner(model, spec.blocks(backboneOptions), d, spec.preprocessing, {
      batchSize: options.batchSize,
      augment: 'none',
      seed: options.seed,
      dropout: 0.2,
      classWeights,
      ...(cache === 0 ? { cacheBytes: 0 } : {}),
    });

  try {
    if (options.warmup) {
      t = performance.now();
      const small = { train: head(data.train, 2 * options.batchSize), valid: head(data.valid, options.batchSize) };
      for (const cache of ['default', 0] as const) {
        const learner = makeLearner(second, small, cache);
        await learner.fit(1, options.lr, 1);
        learner.unfreeze({ blocks: options.unfreeze });
        await learner.fit(1, options.fineTuneLr, 2);
        learner.dispose();
      }
      reset(second);
      log(`  warm-up ${round((performance.now() - t) / 1000, 1)} s`);
    }

    const run = async (model: tf.LayersModel, cache: 'default' | 0): Promise<StagedRun> => {
      const started = performance.now();
      const learner = makeLearner(model, learnerData, cache);
      // As fineTune does: stage 1 caches what lies below stage 2's layers.
      if (options.fineTuneEpochs > 0) learner.retainActivationsFor({ blocks: options.unfreeze });
      const stageSeconds: number[] = [];
      let s = performance.now();
      await learner.fit(options.headEpochs, options.lr, 1);
      stageSeconds.push((performance.now() - s) / 1000);
      if (options.fineTuneEpochs > 0) {
        s = performance.now();
        learner.unfreeze({ blocks: options.unfreeze });
        await learner.fit(options.fineTuneEpochs, options.fineTuneLr, 2);
        stageSeconds.push((performance.now() - s) / 1000);
      }
      const evaluation = await learner.evaluate(data.valid);
      const seconds = (performance.now() - started) / 1000;
      const result: StagedRun = {
        cacheBytes: cache,
        seconds: round(seconds, 3),
        stageSeconds: stageSeconds.map((x) => round(x, 3)),
        epochSeconds: learner.history.map((h) => round(h.seconds, 3)),
        valAccuracy: round(evaluation.accuracy, 4),
        valLoss: round(evaluation.loss, 4),
      };
      learner.dispose();
      log(`  ${cache === 0 ? 'without cache' : 'with cache'}: ${result.seconds} s, val accuracy ${result.valAccuracy}`);
      return result;
    };

    const cached = await run(first, 'default');
    const uncached = await run(second, 0);
    const maxWeightDiff = await maxAbsDiff(first, second);
    log(`  speed-up from caching ${round(uncached.seconds / cached.seconds, 2)}×, max weight difference ${maxWeightDiff}`);
    return {
      dataset: {
        ...dataset,
        classes: data.classes,
        train: data.train.images.length,
        valid: data.valid.images.length,
        decodeSeconds: round(decodeSeconds, 3),
      },
      model: `MobileNetV2 α=${options.alpha} ${options.imageSize} px`,
      weights: weightsFile ?? 'random',
      imageSize: options.imageSize,
      alpha: options.alpha,
      batchSize: options.batchSize,
      augment: 'none',
      epochs: { head: options.headEpochs, fineTune: options.fineTuneEpochs, unfreezeBlocks: options.unfreeze },
      lr: { head: options.lr, fineTune: options.fineTuneLr },
      seed: options.seed,
      warmup: options.warmup,
      cached,
      uncached,
      ratio: round(uncached.seconds / cached.seconds, 3),
      maxWeightDiff,
      what:
        'Learner created → stage 1 (head on the frozen backbone) → unfreeze top blocks → stage 2 → evaluate(valid); ' +
        'fixed epochs, no callbacks, augment none; data decoded beforehand (not timed); run with the default activation cache first, then with cacheBytes 0',
    };
  } finally {
    tf.dispose(initial.flat());
    first.dispose();
    second.dispose();
    data.dispose();
  }
}
