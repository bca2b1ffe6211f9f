import * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import type { ImageSet } from '../data/batches.js';
import { complement, stratifiedFolds, subsetOf } from '../data/folds.js';
import { Rng } from '../data/rng.js';
import { DEFAULTS } from '../defaults.js';
import { ActivationCache } from './activation-cache.js';
import { balancedClassWeights, EarlyStopping } from './callbacks.js';
import { softmaxCrossEntropy } from './loss.js';
import { classificationMetrics, type ClassificationMetrics } from './metrics.js';
import { Trainer, type TrainerOptions } from './trainer.js';
import type { Callback, EpochLogs, UnfreezeSpec } from './types.js';

/** The scalar metrics reported per fold, with their mean and standard deviation. */
export const FOLD_METRICS = ['accuracy', 'loss', 'balancedAccuracy', 'rocAucMacro'] as const;
export type FoldMetric = (typeof FOLD_METRICS)[number];

export interface FoldResult {
  fold: number;
  trainImages: number;
  validImages: number;
  /** The fold model's metrics on its held-out rows (the best epoch's weights, as a normal run keeps). */
  metrics: ClassificationMetrics;
  /** Epochs each stage ran up to its best epoch: stage 1's best, and stage 2's (0 when stage 2 never beat stage 1). */
  bestEpochs: [number, number];
  seconds: number;
}

export interface CrossValidation {
  k: number;
  folds: FoldResult[];
  /** Mean of each metric over the folds. */
  mean: Partial<Record<FoldMetric, number>>;
  /** Sample standard deviation (n − 1) of each metric over the folds. */
  sd: Partial<Record<FoldMetric, number>>;
  /** Mean best epoch per stage over the folds, rounded: what the final model trains for. */
  epochs: { stage1: number; stage2: number };
  /** Images that went through the frozen layers to fill the shared cache (each once, when the cache held them). */
  imagesComputed: number;
}

export interface CrossValidateOptions {
  k: number;
  seed: number;
  epochs: number;
  lr: number;
  /** Stage 1 solved as a linear probe instead of `epochs` of Adam (see FitOptions.solve). */
  solve?: { l2: number };
  /** Stage 2, when it runs. */
  stage2?: { what: UnfreezeSpec; epochs: number; lr: number };
  patience: number;
  /** Balanced class weights per fold (from the fold's own training rows), as --class-weight auto. */
  classWeights: boolean;
  labelSmoothing?: number;
  /** Trainer options every fold shares (batch size, augmentation, dropout, …; not callbacks, loss or cache). */
  trainer: Omit<TrainerOptions, 'callbacks' | 'loss' | 'classWeights' | 'activationCache' | 'checkpoint'>;
  /** The learning-rate schedule callback of a fold (made fresh for each). */
  schedule: () => Callback;
  /** More callbacks for fold `fold` (progress display). */
  callbacks?: (fold: number) => Callback[];
  signal?: AbortSignal;
  log?: (message: string) => void;
}

/**
 * k-fold cross-validation of the staged recipe over one labelled set: stratified folds (seeded);
 * each fold trains from the same starting weights (the model's weights when called) on the other
 * k − 1 folds, with early stopping on its held-out fold, and is scored there. The activation cache
 * is shared: every image's frozen output (or the output below stage 2's blocks) is computed once
 * and each fold gathers its rows, so stage-1 folds cost only the head's training. The model's
 * weights are put back as they were at the end; `cache` is left holding the set's activations for
 * a final fit on all of it.
 */
export async function crossValidate(
  model: tf.LayersModel,
  blocks: string[][],
  set: ImageSet,
  classes: string[],
  preprocessing: Preprocessing,
  cache: ActivationCache,
  options: CrossValidateOptions,
): Promise<CrossValidation> {
  const foldRows = stratifiedFolds(set.labels, options.k, options.seed);
  // model.weights lists trainable weights first, so its order changes with unfreezing: keep this list.
  const variables = model.weights.slice();
  const initial = variables.map((w) => tf.keep(w.read().clone()));
  const folds: FoldResult[] = [];
  try {
    for (const [f, validRows] of foldRows.entries()) {
      const started = performance.now();
      const train = subsetOf(set, complement(set.labels.length, validRows));
      const valid = subsetOf(set, validRows);
      variables.forEach((w, i) => w.write(initial[i]!));
      const earlyStopping = new EarlyStopping({ patience: options.patience, monitor: 'valLoss' });
      const weights = options.classWeights ? balancedClassWeights(train.labels, classes.length) : undefined;
      const trainer = new Trainer(model, blocks, { train, valid }, preprocessing, {
        ...options.trainer,
        loss: softmaxCrossEntropy({ classWeights: weights, labelSmoothing: options.labelSmoothing ?? 0 }),
        callbacks: [earlyStopping, options.schedule(), ...(options.callbacks?.(f + 1) ?? [])],
        activationCache: cache,
      });
      try {
        options.log?.(`fold ${f + 1}/${options.k}: training on ${train.images.length} images, validating on ${valid.images.length}`);
        if (options.stage2) trainer.retainActivationsFor(options.stage2.what);
        await trainer.fit(options.epochs, options.lr, 1, { signal: options.signal, ...(options.solve ? { solve: options.solve } : {}) });
        if (options.stage2) {
          trainer.unfreeze(options.stage2.what);
          await trainer.fit(options.stage2.epochs, options.stage2.lr, 2, { signal: options.signal });
        }
        const metrics = classificationMetrics(await trainer.predictProbabilities(valid), valid.labels, classes);
        folds.push({
          fold: f + 1,
          trainImages: train.images.length,
          validImages: valid.images.length,
          metrics,
          bestEpochs: bestEpochsPerStage(trainer.history, earlyStopping.bestEpoch),
          seconds: (performance.now() - started) / 1000,
        });
        options.log?.(`fold ${f + 1}/${options.k}: val accuracy ${metrics.accuracy.toFixed(3)}, loss ${metrics.loss.toFixed(4)}`);
      } finally {
        earlyStopping.disposeWeights();
        trainer.dispose();
        cache.forget(train);
        cache.forget(valid);
      }
    }
  } finally {
    variables.forEach((w, i) => w.write(initial[i]!));
    tf.dispose(initial);
  }
  const summary = summarizeFolds(folds);
  const meanOf = (pick: (f: FoldResult) => number) => Math.round(folds.reduce((s, f) => s + pick(f), 0) / folds.length);
  return {
    k: options.k,
    folds,
    ...summary,
    epochs: { stage1: Math.max(1, meanOf((f) => f.bestEpochs[0])), stage2: options.stage2 ? meanOf((f) => f.bestEpochs[1]) : 0 },
    imagesComputed: cache.imagesComputed,
  };
}

/**
 * Stage 1's best epoch (lowest validation loss: the weights stage 2 starts from), and stage 2's when
 * the run's best epoch is in stage 2 (0 when fine-tuning never beat stage 1: the model kept is stage 1's).
 */
export function bestEpochsPerStage(history: EpochLogs[], best: { stage: number; epoch: number } | undefined): [number, number] {
  const stage1 = history.filter((r) => r.stage === 1);
  let first = stage1[0];
  for (const row of stage1) if ((row.valLoss ?? row.loss) < (first!.valLoss ?? first!.loss)) first = row;
  return [first?.epoch ?? 0, best?.stage === 2 ? best.epoch : 0];
}

/** Mean and sample standard deviation (n − 1; 0 for one fold) of each metric the folds have. */
export function summarizeFolds(folds: Pick<FoldResult, 'metrics'>[]): Pick<CrossValidation, 'mean' | 'sd'> {
  const mean: CrossValidation['mean'] = {};
  const sd: CrossValidation['sd'] = {};
  for (const name of FOLD_METRICS) {
    const values = folds.map((f) => f.metrics[name]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
    if (values.length === 0 || values.length < folds.length) continue;
    const m = values.reduce((a, b) => a + b, 0) / values.length;
    mean[name] = m;
    sd[name] = values.length > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - m) ** 2, 0) / (values.length - 1)) : 0;
  }
  return { mean, sd };
}

/** An activation cache for cross-validation and the final fit, as a Trainer of `model` with these options would make. */
export function sharedActivationCache(
  model: tf.LayersModel,
  preprocessing: Preprocessing,
  options: Pick<TrainerOptions, 'batchSize' | 'cacheBytes' | 'augment' | 'seed' | 'diskCache'>,
): ActivationCache {
  return new ActivationCache(model, {
    imageSize: model.inputs[0]!.shape[1]!,
    preprocessing,
    batchSize: options.batchSize ?? DEFAULTS.batchSize,
    budgetBytes: options.cacheBytes ?? DEFAULTS.cacheMb * 1024 ** 2,
    augment: options.augment ?? DEFAULTS.augment,
    rng: new Rng(options.seed ?? DEFAULTS.seed),
    ...(options.diskCache ? { disk: options.diskCache } : {}),
  });
}

/** "0.912 ± 0.018 over 5 folds" */
export function formatFoldAccuracy(cv: Pick<CrossValidation, 'k' | 'mean' | 'sd'>): string {
  return `${cv.mean.accuracy!.toFixed(3)} ± ${cv.sd.accuracy!.toFixed(3)} over ${cv.k} folds`;
}
