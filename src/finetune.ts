import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { resolveWeightsFile } from './backbones/imagenet.js';
import { channelMean, withDatasetMean, type Preprocessing } from './backbones/preprocess.js';
import { getBackbone, validateBackboneOptions } from './backbones/registry.js';
import type { BackboneSpec } from './backbones/types.js';
import { loadBackboneWeights, seedRandomWeights } from './backbones/weights.js';
import { loadImageData, type ImageData } from './data/image-data.js';
import { storeImages } from './data/pixel-store.js';
import { discoverLayout } from './data/layout.js';
import { AUGMENT_LEVELS, RESIZE_MODES, type AugmentLevel, type DatasetLayout, type ResizeMode } from './data/types.js';
import { exactCrossSplitDuplicates } from './check/exact.js';
import { defaultDiskCacheMb, DiskCache } from './cache/disk-cache.js';
import { restoreStageResult, stageOneKey, storeStageResult } from './cache/stage-result.js';
import { DEFAULTS } from './defaults.js';
import { initEngine, type BackendRequest, type EngineInfo } from './engine/backend.js';
import { FinetuneError, InterruptedError, UsageError } from './errors.js';
import { isEmptyOrMissing } from './io/atomic.js';
import { saveClassifierModel } from './io/classifier-model.js';
import { MODEL_FORMAT } from './predict/classifier.js';
import { exportFormat, exportRun } from './export/index.js';
import {
  RUN_FILES,
  relativeName,
  writeHistoryCsv,
  writeJson,
  writePredictionsCsv,
  writeSkippedCsv,
} from './io/run-outputs.js';
import { silentReporter, type Reporter } from './reporter.js';
import { topLossItems, writeRunReport } from './report/index.js';
import { balancedClassWeights, EarlyStopping, HistoryLogger, ModelCheckpoint, ReduceLROnPlateau } from './train/callbacks.js';
import { attachHead } from './train/head.js';
import { loadCheckpoint, type LoadedCheckpoint } from './train/checkpoint.js';
import { unfreezeLayers } from './train/trainable.js';
import { softmaxCrossEntropy } from './train/loss.js';
import { LearningRateSchedule, type ScheduleName } from './train/schedules.js';
import { Trainer, type FitOptions } from './train/trainer.js';
import { layersDigest } from './train/activation-cache.js';
import { STAGE1_METHODS, type Callback, type EpochLogs, type Stage1Method, type UnfreezeSpec } from './train/types.js';
import { classificationMetrics, type ClassificationMetrics } from './train/metrics.js';
import { crossValidate, formatFoldAccuracy, sharedActivationCache, type CrossValidation } from './train/cross-validate.js';
import { concatSets, stratifiedFolds } from './data/folds.js';

/** Everything `finetune <data>` can be told; every field but `data` has a default. */
export interface FineTuneOptions {
  /** Data folder: train/<class>/…, optional valid|validation|val/<class>/…, optional test/. */
  data: string;
  /** Output folder (default ./finetune-out). */
  out?: string;
  /** Replace the outputs of an earlier run in `out`. */
  overwrite?: boolean;
  backbone?: string;
  /** MobileNetV2 width multiplier. */
  alpha?: number;
  imageSize?: number;
  /** 'imagenet' (cache, ~/.keras/models, or download), 'none' (random), or a path to .h5 / tfjs model weights. */
  weights?: string;
  /** Fraction of train held out for validation when there is no valid/ folder. */
  valSplit?: number;
  /** How a non-square image is fitted to the input (see DecodeOptions.resize). Default 'crop'. */
  resize?: ResizeMode;
  /** The backbone's own preprocessing, or the training set's per-channel mean subtracted instead. */
  preprocess?: 'backbone' | 'dataset-mean';
  augment?: AugmentLevel;
  /**
   * With augmentation on: compute the frozen layers' output once for this many augmented copies of
   * each training image (each epoch draws one), instead of every epoch (0).
   */
  augmentCopies?: number;
  /**
   * How stage 1 trains the head on the frozen backbone: 'adam' (`epochs` epochs at `lr`), or 'lbfgs'
   * (a linear probe: L2-regularised logistic regression on the frozen features, solved to
   * convergence; stage 2 then fine-tunes from it, LP-FT). Default 'lbfgs', but 'adam' when `epochs`
   * is given or with `weights: 'none'` (every layer trains then).
   */
  stage1?: Stage1Method;
  /** With stage1 'lbfgs': the L2 penalty l2 · ‖W‖² on the head's kernel (default 0.01). */
  probeL2?: number;
  /** Stage 1 (frozen backbone) epochs of Adam (or of every layer, from random weights); given, stage 1 is 'adam'. Default 10. */
  epochs?: number;
  lr?: number;
  batchSize?: number;
  dropout?: number;
  /** Stage 2: how many top backbone blocks to unfreeze. */
  unfreeze?: number;
  /** Stage 2: unfreeze every layer from this one up (overrides `unfreeze`). */
  unfreezeFrom?: string;
  /** Stage 2 epochs; 0 skips stage 2. */
  fineTuneEpochs?: number;
  /** Stage 2 learning rate (default lr / 10). */
  fineTuneLr?: number;
  /** BatchNormalization in training mode while fine-tuning (default: inference mode). */
  trainBatchNorm?: boolean;
  /** Memory for decoded images in MiB; past it they are kept in a temporary file (default 4096). */
  cacheMb?: number;
  /**
   * The persistent cache between runs in `$FINETUNE_HOME/cache` (decoded images, frozen-layer
   * outputs): false bypasses it (neither read nor written). Default true.
   */
  cache?: boolean;
  /** Size cap of that cache in MiB; least recently used entries go past it (default FINETUNE_DISK_CACHE_MB, else 4096). */
  diskCacheMb?: number;
  /** Early-stopping patience in epochs (per stage). */
  patience?: number;
  classWeight?: 'auto' | 'none';
  /** Label smoothing ε for the cross-entropy (0: none). */
  labelSmoothing?: number;
  /**
   * How the learning rate moves within each stage: 'plateau' (cut ×0.2 when validation loss
   * stalls), 'cosine' (half-cosine decay, after `warmupEpochs`), 'one-cycle' (warm-up then cosine).
   */
  lrSchedule?: ScheduleName;
  /** Epochs of linear warm-up at the start of each stage, with lrSchedule 'cosine'. */
  warmupEpochs?: number;
  /**
   * k-fold cross-validation over train + valid (stratified, seeded; 0: off): metrics.json reports
   * each fold's metrics and their mean ± sd, and the model written is trained on all of train + valid
   * for the folds' mean best epoch count per stage.
   */
  folds?: number;
  /**
   * Mixup α (0: off): λ ~ Beta(α, α) per batch; mixes the frozen layers' output for the batch (manifold
   * mixup at the frozen boundary, so cached activations still serve) and the targets.
   */
  mixup?: number;
  /** CutMix α (0: off): pastes a box of another training image, targets mixed by area; the frozen layers then run every batch. */
  cutmix?: number;
  /**
   * Decay of an exponential moving average of the trained weights (0: none); validation, early
   * stopping and the saved model use the average (see src/train/ema.ts).
   */
  ema?: number;
  /** Stage 2: each backbone block below the top trainable one trains at this times the rate of the one above (1: one rate). */
  layerLrDecay?: number;
  seed?: number;
  backend?: BackendRequest;
  /**
   * Continue the interrupted run in `out` from its last completed epoch. The options and the data
   * must be those of the interrupted run; otherwise it is refused, saying what differs.
   */
  resume?: boolean;
  /** Aborting it stops training after the current batch (the CLI connects Ctrl-C to it). */
  signal?: AbortSignal;
  /** Where progress goes (default: nowhere). */
  reporter?: Reporter;
  /** Extra callbacks for the training loop. */
  callbacks?: Callback[];
  /** Formats to export the finished model to (`finetune export` names: tfjs, keras, tm, onnx, web), into `<out>/export/`. */
  export?: string[];
  /**
   * Test hook: training batches of more images than this fail as if out of memory (the Trainer then
   * halves the batch). Also read from FINETUNE_TEST_FAIL_BATCHES_ABOVE, for tests of the CLI.
   */
  failBatchesAbove?: number;
}

/** The options after defaults, as recorded in finetune.json. */
export type ResolvedOptions = Required<
  Omit<FineTuneOptions, 'reporter' | 'callbacks' | 'unfreezeFrom' | 'resume' | 'signal' | 'failBatchesAbove' | 'export' | 'cache' | 'diskCacheMb'>
> & {
  unfreezeFrom?: string;
};

export interface FineTuneResult {
  out: string;
  classes: string[];
  engine: EngineInfo;
  history: EpochLogs[];
  /** Validation metrics of the final (best) model; undefined without a validation set. */
  metrics?: ClassificationMetrics;
  /** Metrics of the final model on the labelled test set (test/<class>/); undefined without one. */
  testMetrics?: ClassificationMetrics;
  /** With `folds`: each fold's held-out metrics and their mean ± sd (`metrics` is then undefined). */
  crossValidation?: CrossValidation;
  /** Predictions for the test images. */
  predictions: { file: string; label: string; confidence: number; probabilities: number[] }[];
  skipped: number;
  /** The files and folders written into `out`. */
  files: string[];
  seconds: number;
}

export { DEFAULTS };

/**
 * The whole job in one call: find and decode the images, build the backbone with its pretrained
 * weights, train a new head on the frozen backbone (stage 1), fine-tune the top blocks at a lower
 * learning rate (stage 2), then write the model, metrics and predictions into `out`.
 *
 * Each step is exported on its own (discoverLayout, loadImageData, the backbone registry,
 * loadBackboneWeights, attachHead, Learner, the callbacks) for people who want to change one.
 */
export async function fineTune(options: FineTuneOptions): Promise<FineTuneResult> {
  const started = performance.now();
  const reporter = options.reporter ?? silentReporter;
  const spec = getBackbone(options.backbone ?? DEFAULTS.backbone);
  const opts = resolveOptions(options, spec);
  const exports = (options.export ?? []).map(exportFormat); // an unknown format fails now, not after training
  const diskCache = openDiskCache(options);
  const dataRoot = path.resolve(opts.data);
  const out = path.resolve(opts.out);
  const files = (name: string) => path.join(out, name);
  if (options.resume && opts.folds > 0) {
    throw new UsageError(`--resume cannot continue a --folds ${opts.folds} run (its folds keep no checkpoint): start it again with --overwrite.`);
  }
  await prepareOutputFolder(out, dataRoot, opts.overwrite || options.resume === true);
  const checkpoint = options.resume ? await openCheckpoint(files(RUN_FILES.checkpoint), opts) : undefined;

  const engine = await initEngine(opts.backend);
  reporter.info(`backend: ${engine.detail}`);

  const layout = await discoverLayout(dataRoot, { valSplit: opts.valSplit, seed: opts.seed });
  for (const warning of layout.warnings ?? []) reporter.warn(warning);
  const dataWarnings = await checkSplits(layout, opts, reporter);
  if (opts.folds > 0) stratifiedFolds([...layout.train, ...layout.valid].map((f) => f.label), opts.folds, opts.seed); // k > a class's images fails now
  // Weights before decoding: a missing or mismatched weights file should fail in seconds, not after.
  const fromScratch = opts.weights === 'none';
  // From random weights every BN layer trains, and a few hundred steps must be enough for its
  // moving averages to settle: Keras's 0.999 would leave them near their initial values.
  const backbone = spec.build({ alpha: opts.alpha, imageSize: opts.imageSize, batchNormMomentum: fromScratch ? 0.9 : undefined });
  const blocks = spec.blocks({ alpha: opts.alpha, imageSize: opts.imageSize });
  const stage2: UnfreezeSpec | undefined =
    opts.fineTuneEpochs > 0 && !fromScratch ? (opts.unfreezeFrom !== undefined ? { fromLayer: opts.unfreezeFrom } : { blocks: opts.unfreeze }) : undefined;
  if (stage2) unfreezeLayers(backbone, blocks, stage2); // a split that cannot work fails now, not after stage 1
  const weightsSource = await loadWeights(backbone, spec, opts, reporter);
  const toDecode = layout.train.length + layout.valid.length + layout.test.length + (layout.testLabelled?.length ?? 0);
  const decodeTask = reporter.task('decoding', toDecode, 'images');
  const data = await loadImageData(layout, {
    size: opts.imageSize,
    resize: opts.resize,
    // One budget for every cache (--cache-mb): the frozen activations the stages will keep come
    // first, as they save the most time; decoded images get the rest and spill to a file past it.
    cacheBytes: Math.max(0, opts.cacheMb * 1024 ** 2 - plannedActivationBytes(backbone, stage2 && unfreezeLayers(backbone, blocks, stage2), layout, opts)),
    onProgress: (done) => decodeTask.update(done),
    ...(diskCache ? { diskCache } : {}),
  });
  if (diskCache) reporter.info(`decoded images: ${data.fromCache} of ${toDecode} from the cache (${diskCache.dir})`);
  if (data.spilled > 0) {
    reporter.info(`${data.spilled} decoded images did not fit in --cache-mb ${opts.cacheMb} and are read from a temporary file`);
  }
  decodeTask.finish(
    `decoded ${data.train.images.length} train, ${data.valid.images.length} validation (${layout.validSource}), ` +
      `${data.test.images.length} test images to label${data.testLabelled.images.length > 0 ? `, ${data.testLabelled.images.length} labelled test images` : ''}; ${data.skipped.length} skipped`,
  );
  const fingerprint = dataFingerprint(dataRoot, data);
  try {
    checkUsable(data);
    if (checkpoint && checkpoint.state.run.fingerprint !== fingerprint) {
      throw new FinetuneError(
        `cannot resume: the data in ${dataRoot} is not what the interrupted run used (files were added, removed, renamed or ` +
          'became unreadable). Start a new run with --overwrite or another --out.',
      );
    }
  } catch (error) {
    data.dispose();
    throw error;
  }
  for (const s of data.skipped.slice(0, 5)) reporter.warn(`skipped ${relativeName(dataRoot, s.path)}: ${s.reason}`);
  if (data.skipped.length > 5) reporter.warn(`… and ${data.skipped.length - 5} more skipped files (see skipped.csv)`);

  const model = attachHead(backbone, { numClasses: data.classes.length, dropout: opts.dropout, seed: opts.seed });
  const preprocessing: Preprocessing =
    opts.preprocess === 'dataset-mean' ? withDatasetMean(spec.preprocessing, channelMean(storeImages(data.train.images))) : spec.preprocessing;
  // --folds: the folds and the final model use train + valid as one labelled set (no validation set is left).
  const pooled = opts.folds > 0 ? concatSets(data.train, data.valid) : undefined;
  const trainSet = pooled ?? data.train;
  const classWeights = opts.classWeight === 'auto' ? balancedClassWeights(trainSet.labels, data.classes.length) : undefined;
  const modelInfo = { classes: data.classes, imageSize: opts.imageSize, resize: opts.resize, preprocessing };

  await fs.mkdir(out, { recursive: true });
  const config = runConfig({ opts, spec, data, layoutInfo: layout, preprocessing, engine, weightsSource, dataRoot, fingerprint, dataWarnings });
  const hasValid = !pooled && data.valid.images.length > 0;
  const monitor = hasValid ? 'valLoss' : 'loss';
  const earlyStopping = new EarlyStopping({ patience: opts.patience, monitor });
  const callbacks: Callback[] = [
    earlyStopping,
    opts.lrSchedule === 'plateau'
      ? new ReduceLROnPlateau({ patience: Math.max(1, Math.ceil(opts.patience / 2)), monitor })
      : new LearningRateSchedule(opts.lrSchedule, { warmupEpochs: opts.warmupEpochs }),
    new ModelCheckpoint(async (_ctx, logs) => {
      await saveClassifierModel(model, files(RUN_FILES.model), modelInfo);
      await writeJson(files(RUN_FILES.config), { ...config, checkpoint: { stage: logs.stage, epoch: logs.epoch } });
    }, { monitor }),
    new HistoryLogger((history) => writeHistoryCsv(files(RUN_FILES.history), history)),
    progressCallback(reporter),
    ...(options.callbacks ?? []),
  ];
  const trainerOptions = {
    batchSize: opts.batchSize,
    augment: opts.augment,
    augmentCopies: opts.augmentCopies,
    log: (message: string) => reporter.info(message),
    seed: opts.seed,
    // Random weights carry no features worth freezing: train every layer, BatchNorm included.
    trainBatchNorm: opts.trainBatchNorm || fromScratch,
    dropout: opts.dropout,
    mixup: opts.mixup,
    cutmix: opts.cutmix,
    ema: opts.ema,
    layerLrDecay: opts.layerLrDecay,
    // One budget for every cache: what the decoded images hold in memory is not left for activations.
    cacheBytes: Math.max(0, opts.cacheMb * 1024 ** 2 - data.memoryBytes),
  };
  // Cross-validation's folds and the final fit share one cache: each image's frozen output is computed once.
  const sharedCache = pooled ? sharedActivationCache(model, preprocessing, { ...trainerOptions, ...(diskCache ? { diskCache } : {}) }) : undefined;
  const runInfo = { options: runIdentity(opts), fingerprint };
  const failBatchesAbove = options.failBatchesAbove ?? envNumber('FINETUNE_TEST_FAIL_BATCHES_ABOVE');
  const trainer = new Trainer(model, blocks, pooled ? { train: pooled } : data, preprocessing, {
    ...trainerOptions,
    loss: softmaxCrossEntropy({ classWeights, labelSmoothing: opts.labelSmoothing }),
    callbacks,
    ...(sharedCache ? { activationCache: sharedCache } : {}),
    ...(pooled ? {} : { checkpoint: { dir: files(RUN_FILES.checkpoint), run: runInfo } }),
    ...(failBatchesAbove !== undefined ? { failBatchesAbove } : {}),
    ...(diskCache ? { diskCache } : {}),
  });
  if (checkpoint) {
    trainer.resumeFrom(checkpoint);
    const { stage, epoch, stageComplete } = checkpoint.state;
    reporter.info(`resuming after stage ${stage}, epoch ${epoch}${stageComplete ? ' (stage complete)' : ''}`);
  }
  // Stage 1 as an earlier run computed it, when everything it depends on is the same (see
  // cache/stage-result.ts): the run goes on from there as a resumed one would. Not for runs whose
  // stage 1 is all they train, or whose loop has callbacks the key cannot know.
  const stageOneCacheKey =
    diskCache && !checkpoint && !pooled && !fromScratch && stage2 && opts.fineTuneEpochs > 0 && opts.epochs > 0 &&
    !options.callbacks?.length && failBatchesAbove === undefined
      ? await stageOneKey({
          options: runInfo.options,
          stage2,
          classes: data.classes,
          train: { digests: trainer.cache.imageDigests(data.train), labels: data.train.labels },
          valid: { digests: trainer.cache.imageDigests(data.valid), labels: data.valid.labels },
          model: await layersDigest(model, model.layers.length - 1),
          preprocessing,
          engine: engine.detail,
          tfjs: tf.version.tfjs,
        })
      : undefined;
  const stageOneFromCache =
    stageOneCacheKey !== undefined && (await restoreStageResult(diskCache!, stageOneCacheKey, files(RUN_FILES.checkpoint), runInfo));
  if (stageOneFromCache) {
    trainer.resumeFrom((await loadCheckpoint(files(RUN_FILES.checkpoint)))!);
    const best = earlyStopping.bestEpoch && trainer.history.find((r) => r.stage === earlyStopping.bestEpoch!.stage && r.epoch === earlyStopping.bestEpoch!.epoch);
    reporter.info(
      `stage 1: from the cache (${diskCache!.dir}): an earlier run trained the same head on the same images, weights and options ` +
        `(${trainer.history.length} epoch${trainer.history.length === 1 ? '' : 's'}${best ? `; best epoch ${best.epoch}: val_loss ${(best.valLoss ?? best.loss).toFixed(4)} val_acc ${(best.valAccuracy ?? best.accuracy).toFixed(4)}` : ''})`,
    );
  }

  let crossValidation: CrossValidation | undefined;
  const stageOne = stageOneFit(opts);
  let stage1Epochs = opts.epochs;
  let stage2Epochs = stage2 ? opts.fineTuneEpochs : 0;
  try {
    if (pooled && sharedCache) {
      reporter.info(
        `cross-validation: ${opts.folds} stratified folds over the ${pooled.images.length} train + validation images; ` +
          (opts.augment === 'none' || opts.augmentCopies > 0
            ? `each image's frozen-layer output is computed once and shared by the folds`
            : `held-out images' frozen-layer output is computed once and shared by the folds; augmented training images go through the frozen layers every epoch (--augment-copies K or --augment none avoid that)`),
      );
      crossValidation = await crossValidate(model, blocks, pooled, data.classes, preprocessing, sharedCache, {
        k: opts.folds,
        seed: opts.seed,
        epochs: opts.epochs,
        lr: opts.lr,
        ...stageOne,
        ...(stage2 ? { stage2: { what: stage2, epochs: opts.fineTuneEpochs, lr: opts.fineTuneLr } } : {}),
        patience: opts.patience,
        classWeights: opts.classWeight === 'auto',
        labelSmoothing: opts.labelSmoothing,
        trainer: trainerOptions,
        schedule: () =>
          opts.lrSchedule === 'plateau'
            ? new ReduceLROnPlateau({ patience: Math.max(1, Math.ceil(opts.patience / 2)), monitor: 'valLoss' })
            : new LearningRateSchedule(opts.lrSchedule, { warmupEpochs: opts.warmupEpochs }),
        callbacks: () => [progressCallback(reporter)],
        signal: options.signal,
        log: (message) => reporter.info(message),
      });
      stage1Epochs = crossValidation.epochs.stage1;
      stage2Epochs = crossValidation.epochs.stage2;
      reporter.info(
        `cross-validation: val accuracy ${formatFoldAccuracy(crossValidation)} (${crossValidation.imagesComputed} images through the frozen layers); ` +
          `the model written trains on all ${pooled.images.length} images for ${stage1Epochs} + ${stage2Epochs} epochs, the folds' mean best epochs`,
      );
    }
    if (fromScratch) {
      trainer.unfreeze({ blocks: Number.MAX_SAFE_INTEGER });
      reporter.info(`training every layer of ${spec.name} from random weights for up to ${opts.epochs} epochs (lr ${opts.lr}); no stage 2`);
    } else if (!stageOneFromCache) {
      reporter.info(
        stageOne.solve
          ? `stage 1: solving the head on the frozen ${spec.name}'s features (L2-regularised logistic regression, λ ${opts.probeL2}, L-BFGS)`
          : `stage 1: training the head on the frozen ${spec.name} for up to ${opts.epochs} epochs (lr ${opts.lr})`,
      );
    }
    // Stage 1 caches what lies below stage 2's layers, so unfreezing needn't run the backbone again.
    if (stage2) trainer.retainActivationsFor(stage2);
    await trainer.fit(stage1Epochs, opts.lr, 1, { signal: options.signal, ...stageOne });
    if (stageOneCacheKey && !stageOneFromCache) await storeStageResult(diskCache!, stageOneCacheKey, files(RUN_FILES.checkpoint));

    if (stage2 && stage2Epochs > 0) {
      const unfrozen = trainer.unfreeze(stage2);
      reporter.info(
        `stage 2: fine-tuning ${unfrozen.length} backbone layers (${unfrozen[0]} … ${unfrozen.at(-1)}) ` +
          `for up to ${stage2Epochs} epochs (lr ${opts.fineTuneLr})`,
      );
      await trainer.fit(stage2Epochs, opts.fineTuneLr, 2, { signal: options.signal });
    }

    // The model now holds the best epoch's weights (EarlyStopping restores them at each stage end).
    let metrics: ClassificationMetrics | undefined;
    let validProbabilities: Float32Array | undefined;
    if (hasValid) {
      // The best epoch's validation pass already computed them (with the weights the model holds again).
      const best = earlyStopping.bestEpoch;
      validProbabilities = (best && trainer.validationProbabilitiesAt(best)) || (await trainer.predictProbabilities(data.valid));
      metrics = classificationMetrics(validProbabilities, data.valid.labels, data.classes);
    }
    const predictions = await predictTest(trainer, data, dataRoot, reporter);
    // The labelled test set is looked at once, here: nothing above (early stopping, the learning
    // rate, the epoch kept) saw it, so its accuracy is not optimistic the way validation's is.
    const testMetrics =
      data.testLabelled.images.length > 0
        ? classificationMetrics(await trainer.predictProbabilities(data.testLabelled), data.testLabelled.labels, data.classes)
        : undefined;
    const best = earlyStopping.bestEpoch;
    const finalConfig = {
      ...config,
      results: {
        bestEpoch: best ?? null,
        valAccuracy: metrics?.accuracy ?? crossValidation?.mean.accuracy ?? null,
        valLoss: metrics?.loss ?? crossValidation?.mean.loss ?? null,
        ...(crossValidation ? { folds: foldsJson(crossValidation, false) } : {}),
        ...(testMetrics ? { testAccuracy: testMetrics.accuracy, testLoss: testMetrics.loss } : {}),
        stageSeconds: trainer.stageSeconds,
        ...(stageOneFromCache ? { stage1FromCache: true } : {}),
        seconds: (performance.now() - started) / 1000,
      },
    };
    await saveClassifierModel(model, files(RUN_FILES.model), modelInfo);
    await writeJson(files(RUN_FILES.config), finalConfig);
    await writeHistoryCsv(files(RUN_FILES.history), trainer.history);
    const hasMetrics = metrics !== undefined || testMetrics !== undefined || crossValidation !== undefined;
    if (hasMetrics) {
      await writeJson(files(RUN_FILES.metrics), {
        classes: data.classes,
        ...metrics,
        ...(crossValidation ? { folds: foldsJson(crossValidation, true) } : {}),
        ...(testMetrics ? { test: testMetrics } : {}),
      });
    }
    await writeSkippedCsv(files(RUN_FILES.skipped), data.skipped, dataRoot);
    // The pictures are a view of the run, not the run: one that cannot be drawn (e.g. a
    // confusion matrix of thousands of classes is too large for the SVG renderer) must not fail it.
    const reportFiles = await writeRunReport(out, {
      config: finalConfig,
      history: trainer.history,
      ...(metrics ? { metrics: { ...metrics, classes: data.classes } } : {}),
      skipped: data.skipped,
      ...(diskCache ? { cache: diskCache } : {}),
      ...(validProbabilities
        ? { topLosses: topLossItems(data.valid.paths, data.valid.labels, validProbabilities, data.classes) }
        : {}),
    }).catch((error: unknown) => {
      reporter.warn(`could not draw the report pictures: ${(error as Error).message.split('\n')[0]}`);
      return [] as string[];
    });
    if (predictions.length > 0) {
      await writePredictionsCsv(
        files(RUN_FILES.predictions),
        predictions.map((p) => ({ file: p.file, probabilities: p.probabilities })),
        data.classes,
      );
    }
    // A rerun with --overwrite must not leave an earlier run's files that this run did not write,
    // and a finished run needs no checkpoint: the model is complete.
    if (!hasMetrics) await fs.rm(files(RUN_FILES.metrics), { force: true });
    if (predictions.length === 0) await fs.rm(files(RUN_FILES.predictions), { force: true });
    await fs.rm(files(RUN_FILES.checkpoint), { recursive: true, force: true });
    const exported =
      exports.length > 0 ? await exportRun({ run: out, formats: exports, overwrite: true, log: (m) => reporter.info(m) }) : undefined;

    return {
      out,
      files: [
        `${RUN_FILES.model}/`,
        RUN_FILES.config,
        RUN_FILES.history,
        ...(hasMetrics ? [RUN_FILES.metrics] : []),
        RUN_FILES.skipped,
        ...(predictions.length > 0 ? [RUN_FILES.predictions] : []),
        ...reportFiles,
        ...(exported ? exported.written.map((w) => path.relative(out, w.out)) : []),
      ],
      classes: data.classes,
      engine,
      history: trainer.history,
      metrics,
      ...(testMetrics ? { testMetrics } : {}),
      ...(crossValidation ? { crossValidation } : {}),
      predictions,
      skipped: data.skipped.length,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (error) {
    if (error instanceof InterruptedError) {
      const last = trainer.lastCheckpoint;
      throw new InterruptedError(
        `${error.message} ` +
          (last
            ? `The run is saved as of stage ${last.stage}, epoch ${last.epoch}; resume it with the same command plus --resume ${out}`
            : 'No epoch had completed, so there is nothing to resume: start the run again.'),
      );
    }
    throw explainOutOfMemory(error, opts);
  } finally {
    // Down to the size cap, least recently used first (this run's entries are the most recent).
    await diskCache?.evict().catch(() => undefined);
    data.dispose();
    earlyStopping.disposeWeights();
    trainer.dispose();
    sharedCache?.dispose();
    model.dispose();
  }
}

/**
 * metrics.json's (and finetune.json's) `folds`: k, the mean and sd of each metric, the epochs the
 * final model trained for, and (`perFold`) each fold's size, best epochs and metrics.
 */
function foldsJson(cv: CrossValidation, perFold: boolean) {
  return {
    k: cv.k,
    mean: cv.mean,
    sd: cv.sd,
    finalEpochs: cv.epochs,
    model: 'trained on all of train + valid for the folds\' mean best epochs per stage',
    ...(perFold
      ? {
          perFold: cv.folds.map((f) => ({
            fold: f.fold,
            trainImages: f.trainImages,
            validImages: f.validImages,
            bestEpochs: f.bestEpochs,
            seconds: f.seconds,
            ...f.metrics,
          })),
        }
      : {}),
  };
}

/**
 * Two checks of the data that cost only reading the files, warned about in one line each (details
 * in finetune.json): byte-identical images in two splits (validation or test accuracy then counts
 * images the model trained on), and a class imbalance above 3 (what the seed advice calls the
 * point for class weights). `finetune check` looks further (near duplicates, suspect labels).
 */
async function checkSplits(layout: DatasetLayout, opts: ResolvedOptions, reporter: Reporter): Promise<{ crossSplitDuplicates: { files: string[]; splits: string[] }[]; imbalance?: number }> {
  const rel = (file: string) => relativeName(layout.root, file);
  const crossSplitDuplicates = (await exactCrossSplitDuplicates(layout)).map((g) => ({ files: g.files.map(rel), splits: g.splits }));
  if (crossSplitDuplicates.length > 0) {
    const first = crossSplitDuplicates[0]!.files;
    reporter.warn(
      `${crossSplitDuplicates.length} image${crossSplitDuplicates.length > 1 ? 's are' : ' is'} byte-identical in two splits (e.g. ${first.join(' = ')}): ` +
        'validation/test accuracy counts images the model trained on. The list is in finetune.json (data.warnings); `finetune check` finds near-copies too.',
    );
  }
  const counts = layout.classes.map((_, c) => layout.train.filter((f) => f.label === c).length);
  const smallest = Math.min(...counts.filter((n) => n > 0));
  const imbalance = counts.length > 1 && smallest > 0 ? Math.max(...counts) / smallest : undefined;
  if (imbalance !== undefined && imbalance > 3) {
    const largest = layout.classes[counts.indexOf(Math.max(...counts))];
    const least = layout.classes[counts.indexOf(smallest)];
    reporter.warn(
      `the classes are imbalanced: ${largest} has ${(imbalance).toFixed(1)}× the training images of ${least}. ` +
        (opts.classWeight === 'auto' ? '--class-weight auto (on) balances the loss; watch per-class recall in metrics.json.' : 'Consider --class-weight auto (it balances the loss).'),
    );
  }
  return { crossSplitDuplicates, ...(imbalance !== undefined ? { imbalance } : {}) };
}

/** The persistent cache this run uses, or undefined with `cache: false`; a bad size cap is a usage error. */
function openDiskCache(options: FineTuneOptions): DiskCache | undefined {
  if (options.cache === false) return undefined;
  let mb: number;
  try {
    mb = options.diskCacheMb ?? defaultDiskCacheMb();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (!Number.isFinite(mb) || mb < 0) throw new UsageError(`--disk-cache-mb ${mb} is not valid: use a number of MiB ≥ 0 (0 keeps nothing)`);
  return new DiskCache({ maxBytes: mb * 1024 ** 2 });
}

/** What `Trainer.fit` is told for stage 1 by `--stage1` and `--probe-l2`: solve the head, or nothing (Adam epochs). */
export function stageOneFit(opts: Pick<ResolvedOptions, 'stage1' | 'probeL2'>): Pick<FitOptions, 'solve'> {
  return opts.stage1 === 'lbfgs' ? { solve: { l2: opts.probeL2 } } : {};
}

/** Applies defaults and checks every value, so a bad flag fails before any work (exit status 2). */
export function resolveOptions(options: FineTuneOptions, spec: BackboneSpec = getBackbone(options.backbone ?? DEFAULTS.backbone)): ResolvedOptions {
  const { alpha, imageSize } = validateBackboneOptions(spec, { alpha: options.alpha, imageSize: options.imageSize });
  const lr = options.lr ?? DEFAULTS.lr;
  const resolved: ResolvedOptions = {
    data: options.data,
    out: options.out ?? DEFAULTS.out,
    overwrite: options.overwrite ?? DEFAULTS.overwrite,
    backbone: spec.name,
    alpha,
    imageSize,
    weights: options.weights ?? DEFAULTS.weights,
    valSplit: options.valSplit ?? DEFAULTS.valSplit,
    resize: options.resize ?? DEFAULTS.resize,
    preprocess: options.preprocess ?? DEFAULTS.preprocess,
    augment: options.augment ?? DEFAULTS.augment,
    augmentCopies: options.augmentCopies ?? DEFAULTS.augmentCopies,
    // From random weights there is no frozen backbone to solve a head on: every layer trains, with
    // Adam. Epochs asked for are Adam's: they get them.
    stage1: options.stage1 ?? ((options.weights ?? DEFAULTS.weights) === 'none' || options.epochs !== undefined ? 'adam' : DEFAULTS.stage1),
    probeL2: options.probeL2 ?? DEFAULTS.probeL2,
    epochs: options.epochs ?? DEFAULTS.epochs,
    lr,
    batchSize: options.batchSize ?? DEFAULTS.batchSize,
    dropout: options.dropout ?? DEFAULTS.dropout,
    unfreeze: options.unfreeze ?? DEFAULTS.unfreeze,
    fineTuneEpochs: options.fineTuneEpochs ?? DEFAULTS.fineTuneEpochs,
    fineTuneLr: options.fineTuneLr ?? lr / 10,
    trainBatchNorm: options.trainBatchNorm ?? DEFAULTS.trainBatchNorm,
    patience: options.patience ?? DEFAULTS.patience,
    cacheMb: options.cacheMb ?? DEFAULTS.cacheMb,
    classWeight: options.classWeight ?? DEFAULTS.classWeight,
    labelSmoothing: options.labelSmoothing ?? DEFAULTS.labelSmoothing,
    lrSchedule: options.lrSchedule ?? DEFAULTS.lrSchedule,
    warmupEpochs: options.warmupEpochs ?? DEFAULTS.warmupEpochs,
    folds: options.folds ?? DEFAULTS.folds,
    mixup: options.mixup ?? DEFAULTS.mixup,
    cutmix: options.cutmix ?? DEFAULTS.cutmix,
    ema: options.ema ?? DEFAULTS.ema,
    layerLrDecay: options.layerLrDecay ?? DEFAULTS.layerLrDecay,
    seed: options.seed ?? DEFAULTS.seed,
    backend: options.backend ?? DEFAULTS.backend,
  };
  if (options.unfreezeFrom !== undefined) resolved.unfreezeFrom = options.unfreezeFrom;
  const check = (ok: boolean, flag: string, allowed: string, value: unknown) => {
    if (!ok) throw new UsageError(`${flag} ${String(value)} is not valid: ${allowed}`);
  };
  const oneOf = (flag: string, value: string, allowed: readonly string[]) =>
    check(allowed.includes(value), flag, `use one of ${allowed.join(', ')}`, value);
  const wholeAtLeast = (flag: string, value: number, min: number) =>
    check(Number.isInteger(value) && value >= min, flag, `use a whole number ≥ ${min}`, value);
  const positive = (flag: string, value: number) => check(Number.isFinite(value) && value > 0, flag, 'use a number > 0', value);
  check(resolved.valSplit >= 0 && resolved.valSplit < 1, '--val-split', 'use a fraction in [0, 1), e.g. 0.2', resolved.valSplit);
  oneOf('--resize', resolved.resize, RESIZE_MODES);
  oneOf('--preprocess', resolved.preprocess, ['backbone', 'dataset-mean']);
  oneOf('--augment', resolved.augment, AUGMENT_LEVELS);
  oneOf('--class-weight', resolved.classWeight, ['auto', 'none']);
  oneOf('--lr-schedule', resolved.lrSchedule, ['plateau', 'cosine', 'one-cycle']);
  check(resolved.labelSmoothing >= 0 && resolved.labelSmoothing < 1, '--label-smoothing', 'use a value in [0, 1), e.g. 0.1', resolved.labelSmoothing);
  check(Number.isFinite(resolved.warmupEpochs) && resolved.warmupEpochs >= 0, '--warmup-epochs', 'use a number of epochs ≥ 0', resolved.warmupEpochs);
  if (resolved.warmupEpochs > 0 && resolved.lrSchedule !== 'cosine') {
    throw new UsageError(`--warmup-epochs ${resolved.warmupEpochs} applies to --lr-schedule cosine (one-cycle has its own warm-up, plateau none).`);
  }
  check(Number.isFinite(resolved.ema) && resolved.ema >= 0 && resolved.ema < 1, '--ema', 'use a decay in [0, 1), e.g. 0.99 (0: off)', resolved.ema);
  check(Number.isFinite(resolved.layerLrDecay) && resolved.layerLrDecay > 0 && resolved.layerLrDecay <= 1, '--layer-lr-decay', 'use a factor in (0, 1], e.g. 0.5 (1: one rate)', resolved.layerLrDecay);
  oneOf('--backend', resolved.backend, ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']);
  wholeAtLeast('--augment-copies', resolved.augmentCopies, 0);
  if (resolved.augmentCopies > 0 && resolved.augment === 'none') {
    throw new UsageError(
      `--augment-copies ${resolved.augmentCopies} needs augmentation: with --augment none every copy would be the same image. ` +
        'Drop --augment-copies (unaugmented outputs are cached anyway), or choose --augment light or strong.',
    );
  }
  wholeAtLeast('--epochs', resolved.epochs, 1);
  oneOf('--stage1', resolved.stage1, STAGE1_METHODS);
  check(Number.isFinite(resolved.probeL2) && resolved.probeL2 > 0, '--probe-l2', 'use a penalty > 0, e.g. 0.01', resolved.probeL2);
  if (resolved.stage1 === 'lbfgs' && resolved.weights === 'none') {
    throw new UsageError('--stage1 lbfgs solves a head on pretrained features, but --weights none trains every layer from random weights: drop one of them.');
  }
  if (resolved.stage1 === 'lbfgs' && options.epochs !== undefined) {
    throw new UsageError(`--epochs ${options.epochs} sets how long Adam trains the head, but --stage1 lbfgs solves it: drop one of them.`);
  }
  check(Number.isFinite(resolved.mixup) && resolved.mixup >= 0, '--mixup', 'use an α ≥ 0 (0.2 is common; 0: off)', resolved.mixup);
  check(Number.isFinite(resolved.cutmix) && resolved.cutmix >= 0, '--cutmix', 'use an α ≥ 0 (1 is common; 0: off)', resolved.cutmix);
  if (resolved.cutmix > 0 && resolved.augmentCopies > 0) {
    throw new UsageError(`--cutmix ${resolved.cutmix} pastes pixels every batch, so --augment-copies ${resolved.augmentCopies} (cached copies) cannot serve it: drop one of them.`);
  }
  check(Number.isInteger(resolved.folds) && resolved.folds !== 1 && resolved.folds >= 0, '--folds', 'use a whole number ≥ 2 (5 is common), or 0 for no cross-validation', resolved.folds);
  if (resolved.folds > 0 && resolved.weights === 'none') {
    throw new UsageError(`--folds ${resolved.folds} needs pretrained weights (its folds share the frozen backbone's output): drop --weights none or --folds.`);
  }
  wholeAtLeast('--fine-tune-epochs', resolved.fineTuneEpochs, 0);
  wholeAtLeast('--batch-size', resolved.batchSize, 1);
  wholeAtLeast('--unfreeze', resolved.unfreeze, 1);
  wholeAtLeast('--patience', resolved.patience, 1);
  wholeAtLeast('--seed', resolved.seed, 0);
  positive('--lr', resolved.lr);
  positive('--fine-tune-lr', resolved.fineTuneLr);
  check(resolved.dropout >= 0 && resolved.dropout < 1, '--dropout', 'use a rate in [0, 1)', resolved.dropout);
  check(Number.isFinite(resolved.cacheMb) && resolved.cacheMb >= 0, '--cache-mb', 'use a number of MiB ≥ 0', resolved.cacheMb);
  return resolved;
}

async function prepareOutputFolder(out: string, dataRoot: string, overwrite: boolean): Promise<void> {
  const inside = path.relative(dataRoot, out);
  if (inside === '' || (!inside.startsWith('..') && !path.isAbsolute(inside))) {
    throw new UsageError(`--out ${out} is inside the data folder: finetune never writes into your data. Choose another --out.`);
  }
  if (!overwrite && !(await isEmptyOrMissing(out))) {
    throw new UsageError(`the output folder ${out} is not empty: pass --overwrite to replace its run, or choose another --out.`);
  }
}

function checkUsable(data: ImageData): void {
  const counts = data.classes.map((_, c) => data.train.labels.filter((l) => l === c).length);
  const empty = data.classes.filter((_, c) => counts[c] === 0);
  if (empty.length > 0) {
    throw new FinetuneError(
      `no usable training images for class ${empty.map((c) => `'${c}'`).join(', ')} after skipping unreadable files (see the skipped list above).`,
    );
  }
}

async function loadWeights(backbone: tf.LayersModel, spec: BackboneSpec, opts: ResolvedOptions, reporter: Reporter): Promise<string> {
  if (opts.weights === 'none') {
    reporter.warn('--weights none: training from random weights; expect far lower accuracy than with pretrained weights.');
    seedRandomWeights(backbone, opts.seed);
    return 'none';
  }
  const file = await resolveWeightsFile(spec, opts, reporter);
  const report = await loadBackboneWeights(backbone, file);
  reporter.info(
    `weights: ${report.matched} tensors from ${file}` + (report.ignored.length > 0 ? ` (${report.ignored.length} not used: a head or top)` : ''),
  );
  return file;
}

function progressCallback(reporter: Reporter): Callback {
  let task: ReturnType<Reporter['task']> | undefined;
  // Batch logs have no loss yet until the learner's first read-back of the epoch.
  const fmt = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '-' : x.toFixed(4));
  return {
    onEpochBegin(ctx) {
      const batches = Math.ceil(ctx.trainer.data.train.images.length / ctx.trainer.batchSize);
      task = reporter.task(`stage ${ctx.stage} epoch ${ctx.epoch}/${ctx.epochs}`, batches, 'batches');
    },
    onBatchEnd(_ctx, logs) {
      task?.update(logs.batch, `loss ${fmt(logs.loss)} acc ${fmt(logs.accuracy)}`);
    },
    onEpochEnd(_ctx, logs) {
      task?.finish(
        `stage ${logs.stage} epoch ${logs.epoch}: loss ${fmt(logs.loss)} acc ${fmt(logs.accuracy)} ` +
          `val_loss ${fmt(logs.valLoss)} val_acc ${fmt(logs.valAccuracy)} lr ${logs.lr.toExponential(1)} ${logs.seconds.toFixed(1)}s`,
      );
    },
    onStageEnd(ctx) {
      if (ctx.stopTraining) reporter.info(`stage ${ctx.stage}: stopped early after epoch ${ctx.epoch} (no improvement)`);
    },
  };
}

async function predictTest(trainer: Trainer, data: ImageData, dataRoot: string, reporter: Reporter): Promise<FineTuneResult['predictions']> {
  if (data.test.images.length === 0) return [];
  const task = reporter.task('predicting test images', data.test.images.length, 'images');
  const k = data.classes.length;
  const probabilities = await trainer.predictProbabilities(data.test);
  task.finish(`predicted ${data.test.images.length} test images`);
  return data.test.paths.map((file, i) => {
    const row = Array.from(probabilities.subarray(i * k, (i + 1) * k));
    let best = 0;
    for (let j = 1; j < k; j++) if (row[j]! > row[best]!) best = j;
    return { file: relativeName(dataRoot, file), label: data.classes[best]!, confidence: row[best]!, probabilities: row };
  });
}

const require = createRequire(import.meta.url);

function envNumber(name: string): number | undefined {
  const value = process.env[name];
  return value === undefined || value === '' ? undefined : Number(value);
}

/**
 * What the activation cache will hold at most: for every image it caches (training images when
 * their frozen outputs don't change or come in `--augment-copies` copies, and validation images),
 * the output of the layer below stage 2's and the pooled features of stage 1.
 */
function plannedActivationBytes(
  backbone: tf.LayersModel,
  stage2Layers: string[] | undefined,
  layout: { train: unknown[]; valid: unknown[] },
  opts: ResolvedOptions,
): number {
  const floats = (layer: tf.layers.Layer) => (layer.outputShape as number[]).slice(1).reduce((a, b) => a * b, 1);
  let perImage = (backbone.layers.at(-1)!.outputShape as number[]).at(-1)!; // stage 1's pooled features
  if (stage2Layers && stage2Layers.length > 0) {
    const lowest = backbone.layers.findIndex((l) => l.name === stage2Layers[0]);
    perImage += floats(backbone.layers[Math.max(0, lowest - 1)]!);
  }
  const trainCopies = opts.augment === 'none' ? 1 : opts.augmentCopies;
  return 4 * perImage * (layout.train.length * trainCopies + layout.valid.length);
}

/** An allocation failure becomes advice: the batch (and the image size) decide the memory a step needs. */
function explainOutOfMemory(error: unknown, opts: ResolvedOptions): unknown {
  const message = error instanceof Error ? error.message : String(error);
  if (!/out of memory|OOM|Cannot allocate|allocation failed|Array buffer allocation|WebAssembly\.Memory|memory access out of bounds/i.test(message)) {
    return error;
  }
  return new FinetuneError(
    `ran out of memory (${message.split('\n')[0]}). Try a smaller --batch-size (now ${opts.batchSize})` +
      `${opts.batchSize > 8 ? `, e.g. ${Math.max(1, Math.floor(opts.batchSize / 2))}` : ''}, fewer --unfreeze blocks, or a smaller --image-size.`,
    { cause: error },
  );
}

/** The options that decide what a run computes (not where it writes, how it caches, or which backend computes it). */
function runIdentity(opts: ResolvedOptions): Record<string, unknown> {
  const { data: _data, out: _out, overwrite: _overwrite, backend: _backend, cacheMb: _cacheMb, ...identity } = opts;
  return identity;
}

/** The checkpoint of the run in `dir`, checked against the options given now. */
async function openCheckpoint(dir: string, opts: ResolvedOptions): Promise<LoadedCheckpoint> {
  const checkpoint = await loadCheckpoint(dir);
  if (!checkpoint) {
    throw new FinetuneError(
      `nothing to resume in ${path.dirname(dir)}: it has no checkpoint (the run finished, or stopped before its first epoch ended).`,
    );
  }
  const saved = (checkpoint.state.run.options ?? {}) as Record<string, unknown>;
  const now = runIdentity(opts);
  const differing = [...new Set([...Object.keys(saved), ...Object.keys(now)])].filter(
    (key) => JSON.stringify(saved[key]) !== JSON.stringify(now[key]),
  );
  if (differing.length > 0) {
    const flag = (key: string) => '--' + key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
    throw new UsageError(
      `cannot resume with other options than the interrupted run: ` +
        differing.map((k) => `${flag(k)} was ${JSON.stringify(saved[k])}, now ${JSON.stringify(now[k])}`).join('; ') +
        '. Give the same options, or start a new run.',
    );
  }
  return checkpoint;
}

/**
 * A short hash of which files went into which split with which label: two runs with the same
 * fingerprint saw the same data (file contents are not read: renames and moves count, edits do not).
 */
function dataFingerprint(root: string, data: ImageData): string {
  const hash = createHash('sha256');
  for (const [split, set] of [['train', data.train], ['valid', data.valid], ['test', data.test], ['test', data.testLabelled]] as const) {
    set.paths.forEach((file, i) => hash.update(`${split}\t${set.labels[i]}\t${relativeName(root, file)}\n`));
  }
  return hash.digest('hex').slice(0, 16);
}

function versionOf(pkg: string): string | undefined {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return undefined;
  }
}

function runConfig(args: {
  opts: ResolvedOptions;
  spec: BackboneSpec;
  data: ImageData;
  layoutInfo: { validSource: string; ignored: { hidden: number; notImage: number } };
  preprocessing: Preprocessing;
  engine: EngineInfo;
  weightsSource: string;
  dataRoot: string;
  fingerprint: string;
  dataWarnings: Awaited<ReturnType<typeof checkSplits>>;
}) {
  const { opts, spec, data, layoutInfo, preprocessing, engine, weightsSource, dataRoot, fingerprint, dataWarnings } = args;
  const countPerClass = (labels: Int32Array) =>
    Object.fromEntries(data.classes.map((name, c) => [name, labels.filter((l) => l === c).length]));
  const { data: _data, out: _out, overwrite: _overwrite, ...training } = opts;
  return {
    format: MODEL_FORMAT,
    created: new Date().toISOString(),
    classes: data.classes,
    backbone: { name: spec.name, alpha: spec.alphas ? opts.alpha : undefined, weights: weightsSource },
    input: { size: opts.imageSize, channels: 3, resize: opts.resize, preprocessing },
    training,
    data: {
      root: dataRoot,
      fingerprint,
      validSource: layoutInfo.validSource,
      train: countPerClass(data.train.labels),
      valid: countPerClass(data.valid.labels),
      test: data.test.images.length,
      ...(data.testLabelled.images.length > 0 ? { testLabelled: countPerClass(data.testLabelled.labels) } : {}),
      skipped: data.skipped.length,
      ignored: layoutInfo.ignored,
      warnings: dataWarnings,
    },
    engine: { backend: engine.backend, detail: engine.detail },
    versions: {
      finetune: (require('../package.json') as { version: string }).version,
      tfjs: tf.version.tfjs,
      sharp: versionOf('sharp'),
      node: process.versions.node,
    },
  };
}
