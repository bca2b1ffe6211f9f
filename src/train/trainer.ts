import * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import type { DiskCache } from '../cache/disk-cache.js';
import { batchRanges, imageBatch, type ImageSet } from '../data/batches.js';
import { Rng } from '../data/rng.js';
import type { AugmentLevel } from '../data/types.js';
import { DEFAULTS } from '../defaults.js';
import { FinetuneError, InterruptedError } from '../errors.js';
import { ActivationCache } from './activation-cache.js';
import { saveCheckpoint, type CheckpointState, type LoadedCheckpoint } from './checkpoint.js';
import { WeightAverage } from './ema.js';
import { HEAD_LAYERS } from './head.js';
import { solveLinearProbe } from './linear-probe.js';
import { softmaxCrossEntropy, type Loss } from './loss.js';
import { drawBatchMix, mixRows, pasteBox } from './mix.js';
import { backendBytesInUse, backendMemoryLimit, estimateStepBytes, isOutOfMemory, mib } from './memory.js';
import { TrainableLayers } from './trainable.js';
import { TrainStep, type StepOptimizer, type TrainStepParts } from './train-step.js';
import type { Callback, EpochLogs, TrainingContext, UnfreezeSpec } from './types.js';

export interface TrainerOptions extends TrainStepParts {
  /** Images per training step (default 32, as the CLI). Halved, saying so, when a step runs out of memory. */
  batchSize?: number;
  /** Training augmentation (default 'light', as the CLI). */
  augment?: AugmentLevel;
  /** Seeds data order, augmentation and dropout (default 42). */
  seed?: number;
  /** Loss weight per class, for the default loss (e.g. balancedClassWeights for imbalanced folders). */
  classWeights?: number[];
  /**
   * Run unfrozen BatchNormalization layers in training mode (batch statistics, moving averages
   * updated). Off by default: the Keras fine-tuning guide keeps them in inference mode, which is
   * what keeps small-batch fine-tuning from wrecking pretrained statistics.
   */
  trainBatchNorm?: boolean;
  /** Dropout before the classifier while training (default: the rate of the head's dropout layer). */
  dropout?: number;
  /**
   * Memory for cached activations of the frozen part, in bytes (default: `--cache-mb`'s default).
   * On WebAssembly it is further limited to what the 4 GiB heap leaves beside the training step.
   */
  cacheBytes?: number;
  /**
   * With augmentation on, compute the frozen part's output for this many augmented copies of each
   * training image once, and draw one copy per image each epoch, instead of running the frozen
   * part on freshly augmented images every epoch (0, the default). Trades augmentation variety
   * for epochs that cost only the trainable top.
   */
  augmentCopies?: number;
  /**
   * The persistent cache between runs (`$FINETUNE_HOME/cache`): the frozen layers' outputs per image
   * are read from it and stored into it. Default: none.
   */
  diskCache?: DiskCache;
  /**
   * Mixup α (0: off): each batch's frozen-part outputs are mixed in proportion λ ~ Beta(α, α) with
   * those of a shuffled copy of the batch, and so are the targets (manifold mixup at the frozen
   * boundary; works on cached activations). See mix.ts.
   */
  mixup?: number;
  /**
   * CutMix α (0: off): a box of another image of the batch is pasted into each image, the targets
   * mixed by area. In pixels, so the frozen part runs on every training batch. See mix.ts.
   */
  cutmix?: number;
  /** Where the trainer says what its cache does, its memory plan, and batch-size changes. */
  log?: (message: string) => void;
  /**
   * Longest time between reads of the running loss back from the device (seconds; 0: every
   * batch). Batch logs show the last value read; epoch logs are always exact.
   */
  readbackSeconds?: number;
  callbacks?: Callback[];
  /**
   * Decay of an exponential moving average of the weights that train, updated after every step
   * (see WeightAverage); validation, callbacks (early stopping, the kept epoch, the saved model)
   * and the end of each stage see the average. 0 (the default): no average.
   */
  ema?: number;
  /**
   * Discriminative learning rates: the top trainable backbone block (and the head) train at the
   * stage's rate, each block below at `layerLrDecay` times the one above. 1 (the default): one rate.
   */
  layerLrDecay?: number;
  /**
   * Save a checkpoint into `dir` after every epoch and stage (model, optimizer, callbacks' state,
   * history), so `resumeFrom` can continue the run; `run` (options and data fingerprint) is stored
   * with it for the resume check.
   */
  checkpoint?: { dir: string; run: Record<string, unknown> };
  /** Test hook: a training batch of more images than this fails as if out of memory. */
  failBatchesAbove?: number;
  /**
   * An activation cache to use instead of the Trainer's own (it must be for the same model): shared
   * by cross-validation's folds, whose sets are rows of one set, so the frozen part runs once for
   * all. The Trainer does not dispose a cache it was given.
   */
  activationCache?: ActivationCache;
}

export interface FitOptions {
  /** Checked after every batch: when aborted, `fit` throws an InterruptedError. */
  signal?: AbortSignal;
  /**
   * Instead of epochs of the optimizer, solve the head to convergence on the frozen layers' output
   * (a linear probe: L2-regularised logistic regression, L-BFGS; see linear-probe.ts) as the stage's
   * one epoch. Only the head may train. The rows solved on are the training images' augmented
   * copies with `augmentCopies` > 0, else the images unaugmented; dropout, mixup and CutMix do not
   * apply to it. `l2` is the penalty on the kernel.
   */
  solve?: { l2: number };
}

/** A labelled training set and an optional validation set. */
export interface TrainerData {
  train: ImageSet;
  valid?: ImageSet;
}

type ResolvedTrainerOptions = Required<Omit<TrainerOptions, 'classWeights' | 'callbacks' | 'log' | 'checkpoint' | 'failBatchesAbove' | 'diskCache' | 'activationCache' | keyof TrainStepParts>> &
  Pick<TrainerOptions, 'classWeights' | 'log' | 'checkpoint' | 'failBatchesAbove' | 'diskCache' | keyof TrainStepParts>;

/**
 * Trains a classifier (backbone + head from `attachHead`) on decoded images: owns the epoch loop,
 * the callbacks, checkpoints and resuming. Its parts are usable alone: TrainableLayers (what trains
 * and where the model is split), ActivationCache (what the frozen part computed, kept), TrainStep
 * (loss, optimizer and metrics of one step). `fineTune()` is freeze → fit → unfreeze → fit on one.
 */
export class Trainer {
  readonly model: tf.LayersModel;
  readonly data: TrainerData;
  readonly preprocessing: Preprocessing;
  readonly imageSize: number;
  readonly history: EpochLogs[] = [];
  readonly options: ResolvedTrainerOptions;
  readonly layers: TrainableLayers;
  readonly cache: ActivationCache;
  callbacks: Callback[];
  /** Seconds each stage that ran in this process took. */
  readonly stageSeconds: number[] = [];
  /** Where the last checkpoint stands, if one was written in this process or resumed from. */
  lastCheckpoint: { stage: number; epoch: number; stageComplete: boolean } | undefined;
  /** Images per step now (the option, unless out-of-memory halved it). */
  batchSize: number;

  private step: TrainStep | undefined;
  /** The weight average of the stage in progress (`ema` > 0). */
  private average: WeightAverage | undefined;
  private resumed: LoadedCheckpoint | undefined;
  /** The validation probabilities after each epoch run in this process, by `stage:epoch`, with the split they ran at. */
  private readonly validations = new Map<string, { boundary: number; probabilities: Float32Array }>();
  private readonly rng: Rng;
  private readonly ownsCache: boolean;

  constructor(model: tf.LayersModel, blocks: string[][], data: TrainerData, preprocessing: Preprocessing, options: TrainerOptions = {}) {
    this.model = model;
    this.data = data;
    this.preprocessing = preprocessing;
    this.imageSize = model.inputs[0]!.shape[1]!;
    const headDropout = model.layers.find((l) => l.name === HEAD_LAYERS.dropout)?.getConfig().rate as number | undefined;
    this.options = {
      ...options,
      batchSize: options.batchSize ?? DEFAULTS.batchSize,
      augment: options.augment ?? DEFAULTS.augment,
      seed: options.seed ?? DEFAULTS.seed,
      trainBatchNorm: options.trainBatchNorm ?? DEFAULTS.trainBatchNorm,
      dropout: options.dropout ?? headDropout ?? 0,
      cacheBytes: options.cacheBytes ?? DEFAULTS.cacheMb * 1024 ** 2,
      readbackSeconds: options.readbackSeconds ?? 1,
      augmentCopies: options.augmentCopies ?? DEFAULTS.augmentCopies,
      mixup: options.mixup ?? DEFAULTS.mixup,
      cutmix: options.cutmix ?? DEFAULTS.cutmix,
      ema: options.ema ?? DEFAULTS.ema,
      layerLrDecay: options.layerLrDecay ?? DEFAULTS.layerLrDecay,
    };
    this.batchSize = this.options.batchSize;
    this.callbacks = options.callbacks ?? [];
    this.rng = new Rng(this.options.seed);
    this.layers = new TrainableLayers(model, blocks);
    this.ownsCache = options.activationCache === undefined;
    this.cache = options.activationCache ?? new ActivationCache(model, {
      imageSize: this.imageSize,
      preprocessing,
      batchSize: this.options.batchSize,
      budgetBytes: this.options.cacheBytes,
      augment: this.options.augment,
      rng: this.rng,
      ...(options.diskCache ? { disk: options.diskCache } : {}),
    });
  }

  // ── What trains ────────────────────────────────────────────────────────────────────────────

  /** Only the classifier head trains. */
  freeze(): void {
    this.moveSplit(() => this.layers.freeze());
  }

  /**
   * Makes the top `blocks` backbone blocks trainable (plus the head), or every layer from
   * `fromLayer` up. Returns the names of the backbone layers now trainable.
   */
  unfreeze(what: UnfreezeSpec): string[] {
    let unfrozen: string[] = [];
    this.moveSplit(() => (unfrozen = this.layers.unfreeze(what)));
    return unfrozen;
  }

  /**
   * Tells the trainer what a later stage will unfreeze, so that it caches the frozen activations
   * just below those layers: this stage derives its own from them, and unfreezing then reuses them
   * instead of running the backbone over every image again. Checks `what` (throws a UsageError).
   */
  retainActivationsFor(what: UnfreezeSpec): void {
    this.cache.retain(this.layers.boundaryFor(what));
  }

  /** Names of the layers whose weights train now. */
  get trainableLayers(): string[] {
    return this.layers.trainable;
  }

  /** Variables whose values training can change: trainable weights, plus BN statistics when BN trains. */
  mutableVariables(): tf.Variable[] {
    return this.layers.mutableVariables(this.options.trainBatchNorm);
  }

  /** The optimizer of the stage in progress (for checkpoints); undefined between stages. */
  get currentOptimizer(): StepOptimizer | undefined {
    return this.step?.optimizer;
  }

  get learningRate(): number {
    return this.step?.optimizer.learningRate ?? Number.NaN;
  }

  set learningRate(lr: number) {
    if (this.step) this.step.optimizer.learningRate = lr;
  }

  private moveSplit(change: () => void): void {
    const before = this.layers.split.boundary;
    change();
    if (this.layers.split.boundary !== before) this.cache.moveTo(this.layers.split.boundary);
  }

  // ── Resuming ──────────────────────────────────────────────────────────────────────────────────

  /**
   * Continues the run a checkpoint saved: the model's weights, the history, the callbacks' state
   * (and kept weights), and, when `fit` reaches the stage it stopped in, the optimizer's slots and
   * learning rate from the epoch after. Stages it completed are skipped by `fit`.
   */
  resumeFrom(checkpoint: LoadedCheckpoint): void {
    const { state } = checkpoint;
    checkpoint.restoreModel(this.model);
    this.history.push(...state.history);
    this.restoreCallbackStates(state.callbacks);
    const best = checkpoint.bestWeights(this.model);
    if (best) for (const cb of this.callbacks) cb.restoreCheckpointWeights?.(this.model, best);
    tf.dispose(best);
    this.lastCheckpoint = { stage: state.stage, epoch: state.epoch, stageComplete: state.stageComplete };
    this.resumed = checkpoint;
  }

  private restoreCallbackStates(states: Record<string, unknown>): void {
    for (const cb of this.callbacks) if (cb.name && cb.setState && cb.name in states) cb.setState(states[cb.name]);
  }

  /** Where `stage` starts: 'done' when a resumed run completed it, an epoch when it stopped inside it. */
  private resumePoint(stage: number): { epoch: number; lr: number } | 'done' | undefined {
    const state = this.resumed?.state;
    if (!state || state.stage < stage) return undefined;
    if (state.stage > stage || state.stageComplete) return 'done';
    return { epoch: state.epoch, lr: state.lr };
  }

  // ── Training ──────────────────────────────────────────────────────────────────────────────────

  /**
   * Trains the trainable layers for `epochs` epochs at `lr`; callbacks may stop it early. Returns
   * this stage's history rows (none when a resumed run had completed the stage).
   */
  async fit(epochs: number, lr: number, stage = 1, options: FitOptions = {}): Promise<EpochLogs[]> {
    const { train, valid } = this.data;
    if (train.images.length === 0) throw new FinetuneError('there are no training images to learn from.');
    if (options.solve) {
      if (!this.layers.headOnly) throw new Error(`Trainer.fit: a solved stage trains the head only, but backbone layers train too (${this.layers.trainable[0]} …): freeze() first`);
      epochs = 1; // the solve is the stage
    }
    const at = this.resumePoint(stage);
    if (at === 'done') return [];
    const started = performance.now();
    this.planMemory(stage);
    this.step = this.makeStep(at ? at.lr : lr);
    // A stage averages from where it starts (stage 2: stage 1's kept weights), or from the checkpoint.
    this.average = this.options.ema > 0 ? new WeightAverage(this.mutableVariables(), this.options.ema) : undefined;
    const ctx: TrainingContext = { trainer: this, learner: this, stage, epoch: 0, epochs, stopTraining: false };
    const rows: EpochLogs[] = [];
    try {
      if (at) {
        const slots = this.resumed!.optimizerWeights();
        // Adam's slots only exist once it has stepped; a stage that completed no epoch has none.
        try {
          if (slots.length > 1) await this.step.optimizer.setWeights(slots);
        } finally {
          tf.dispose(slots.map((w) => w.tensor));
        }
        ctx.epoch = at.epoch;
        const average = this.resumed!.emaWeights(this.model);
        if (this.average && average) this.average.restore(this.model, average, this.resumed!.state.emaUpdates ?? 0);
        tf.dispose(average);
      }
      await this.each((cb) => cb.onStageBegin?.(ctx));
      if (at) this.restoreCallbackStates(this.resumed!.state.callbacks); // onStageBegin reset them
      const persisted = { ...this.cache.persisted };
      for (let epoch = (at?.epoch ?? 0) + 1; epoch <= epochs && !ctx.stopTraining; epoch++) {
        ctx.epoch = epoch;
        const epochStarted = performance.now();
        await this.each((cb) => cb.onEpochBegin?.(ctx));
        const { loss, accuracy, lr: epochLr } = options.solve ? await this.solveEpoch(ctx, options.solve.l2, options.signal) : await this.trainEpoch(ctx, options.signal);
        const row: EpochLogs = { stage, epoch, loss, accuracy, lr: epochLr, seconds: 0 };
        // Validation and the callbacks (the kept epoch, the saved model) see the average; training goes on from the raw weights.
        this.average?.swapIn();
        if (valid && valid.images.length > 0) {
          const evaluation = await this.evaluate(valid);
          this.validations.set(`${stage}:${epoch}`, { boundary: this.layers.split.boundary, probabilities: evaluation.probabilities });
          row.valLoss = evaluation.loss;
          row.valAccuracy = evaluation.accuracy;
        }
        // The first epoch has looked up everything this stage caches (training and validation).
        if (epoch === (at?.epoch ?? 0) + 1) this.logPersisted(stage, persisted);
        row.seconds = (performance.now() - epochStarted) / 1000;
        rows.push(row);
        this.history.push(row);
        await this.each((cb) => cb.onEpochEnd?.(ctx, row));
        this.average?.swapOut();
        await this.saveCheckpoint(ctx, false);
      }
      // The stage ends on the average (early stopping may then put its best epoch back).
      this.average?.keep();
      await this.each((cb) => cb.onStageEnd?.(ctx));
      await this.saveCheckpoint(ctx, true);
    } finally {
      this.average?.dispose();
      this.average = undefined;
      this.step.dispose();
      this.step = undefined;
    }
    this.stageSeconds.push((performance.now() - started) / 1000);
    return rows;
  }

  /** The training loss: the one given, else (class-weighted) softmax cross-entropy. */
  private loss(): Loss {
    return this.options.loss ?? softmaxCrossEntropy({ classWeights: this.options.classWeights });
  }

  private makeStep(lr: number): TrainStep {
    const split = this.layers.split;
    const { trainBatchNorm, dropout } = this.options;
    const logitsLayer = this.model.getLayer(HEAD_LAYERS.logits);
    const forward = (boundaryInput: tf.Tensor, dropoutSeed: number) => {
      const pooled = split.runTop(
        boundaryInput,
        (layer) => trainBatchNorm && layer.getClassName() === 'BatchNormalization' && this.layers.has(layer.name),
        HEAD_LAYERS.pool,
      );
      const dropped = dropout > 0 ? tf.dropout(pooled, dropout, undefined, dropoutSeed) : pooled;
      return logitsLayer.apply(dropped) as tf.Tensor2D;
    };
    const loss = this.loss();
    const variables = this.layers.variables();
    const lrScales = this.options.layerLrDecay === 1 ? undefined : this.layers.blockDepths(variables).map((depth) => this.options.layerLrDecay ** depth);
    return new TrainStep(forward, variables, lr, { ...this.options, loss }, lrScales);
  }

  /** Trains one epoch; returns its loss and accuracy, and the learning rate of its first step. */
  private async trainEpoch(ctx: TrainingContext, signal: AbortSignal | undefined): Promise<{ loss: number; accuracy: number; lr: number }> {
    const { stage, epoch } = ctx;
    const { train } = this.data;
    const { augment, augmentCopies, readbackSeconds } = this.options;
    const split = this.layers.split;
    const step = this.step!;
    const epochRng = this.rng.fork(`stage${stage}-epoch${epoch}`);
    const order = epochRng.shuffle(Array.from({ length: train.images.length }, (_, i) => i));
    const augmentRng = epochRng.fork('augment');
    // CutMix pastes pixels, so its images go through the frozen part every batch: no training cache.
    const cache = this.options.cutmix > 0 ? undefined : await this.cache.forTraining(train, split, stage, augmentCopies, this.options.log);
    if (this.options.cutmix > 0 && epoch === 1) this.options.log?.(`stage ${stage}: --cutmix pastes pixels, so the frozen layers run on every training batch`);
    const copyRng = epochRng.fork('copies');
    const mixRng = epochRng.fork('mix');
    step.reset();
    // Loss and accuracy add up on the device and are read back at most every `readbackSeconds`
    // (and at the end of the epoch): a read stalls a GPU's pipeline. Batch logs show the last read.
    let lastRead = performance.now();
    let known = { loss: Number.NaN, accuracy: Number.NaN };
    let batch = 0;
    let firstLr: number | undefined;
    for (let start = 0; start < order.length; ) {
      const size = Math.min(this.batchSize, order.length - start);
      const indices = order.slice(start, start + size);
      const dropoutSeed = epochRng.int(2 ** 31);
      for (const cb of this.callbacks) cb.onBatchBegin?.(ctx, batch + 1, batch + Math.ceil((order.length - start) / this.batchSize));
      firstLr ??= this.learningRate;
      try {
        this.stepOn(indices, dropoutSeed, cache, copyRng, augment, augmentRng, mixRng);
        this.average?.update();
      } catch (error) {
        if (!isOutOfMemory(error) || size === 1) throw error;
        this.batchSize = Math.max(1, Math.floor(size / 2));
        this.options.log?.(
          `out of memory on a training batch of ${size} images (${(error as Error).message.split('\n')[0]}): ` +
            `continuing with batches of ${this.batchSize} (pass --batch-size ${this.batchSize} to start there)`,
        );
        continue;
      }
      start += size;
      batch += 1;
      const last = start >= order.length;
      if (last || performance.now() - lastRead >= readbackSeconds * 1000) {
        const totals = await step.read();
        lastRead = performance.now();
        known = { loss: totals.loss, accuracy: totals.metrics[step.metricNames[0]!] ?? Number.NaN };
        if (!Number.isFinite(known.loss)) {
          throw new FinetuneError(
            `the training loss became ${known.loss} in stage ${stage}, epoch ${epoch}: lower the learning rate (--lr / --fine-tune-lr).`,
          );
        }
      }
      const batches = batch + Math.ceil((order.length - start) / this.batchSize);
      if (signal?.aborted) throw new InterruptedError(`interrupted in stage ${stage}, epoch ${epoch}, batch ${batch} of ${batches}.`);
      await this.each((cb) => cb.onBatchEnd?.(ctx, { batch, batches, ...known }));
    }
    step.reset();
    return { ...known, lr: firstLr ?? this.learningRate };
  }

  /**
   * The stage's one epoch as a solve: the head's dense layer as a logistic regression on the pooled
   * frozen output of the training rows (see FitOptions.solve).
   */
  private async solveEpoch(ctx: TrainingContext, l2: number, signal: AbortSignal | undefined): Promise<{ loss: number; accuracy: number; lr: number }> {
    const { train } = this.data;
    const split = this.layers.split;
    const copies = this.options.augment === 'none' ? 0 : this.options.augmentCopies;
    const cached = copies > 0 ? await this.cache.forTraining(train, split, ctx.stage, copies, this.options.log) : undefined;
    const solvedCopies = cached?.copies ?? 0;
    const rows = cached?.activations ?? (await this.cache.outputs(train, split));
    const n = train.images.length;
    const pooled = tf.tidy(() => {
      const run = (x: tf.Tensor) => split.runTop(x, () => false, HEAD_LAYERS.pool) as tf.Tensor2D;
      // The cache's tensor is its own: a copy when the split is at the pooled output already.
      if (rows) {
        const out = run(rows);
        return out === rows ? out.clone() : out;
      }
      // Too large for the activation cache: the pooled output (one vector per image) is small, so it is gathered batch by batch.
      return tf.concat(
        batchRanges(n, this.batchSize).map((indices) => run(split.runBottom(imageBatch(train.images, indices, { size: this.imageSize, preprocessing: this.preprocessing })))),
      ) as tf.Tensor2D;
    });
    const labels = tf.tensor1d(Array.from({ length: pooled.shape[0] }, (_, r) => train.labels[r % n]!), 'int32');
    const dense = this.model.getLayer(HEAD_LAYERS.logits);
    const [kernel, bias] = dense.trainableWeights.map((w) => w.read() as tf.Variable);
    const loss = this.loss();
    try {
      const started = performance.now();
      const result = await solveLinearProbe(pooled, labels, kernel!, bias, {
        l2,
        loss,
        onIteration: (iteration) => {
          if (signal?.aborted) throw new InterruptedError(`interrupted in stage ${ctx.stage}, solving the head (L-BFGS iteration ${iteration}).`);
        },
      });
      this.options.log?.(
        `stage ${ctx.stage}: head solved on ${pooled.shape[0]} rows (${solvedCopies > 0 ? `${solvedCopies} augmented copies of each image` : 'the images unaugmented'}) ` +
          `in ${result.iterations} L-BFGS iterations, ${((performance.now() - started) / 1000).toFixed(1)} s` +
          (result.reason === 'iterations' ? ' (stopped at the iteration limit, not converged)' : ''),
      );
      return { loss: result.loss, accuracy: result.accuracy, lr: 0 };
    } finally {
      tf.dispose([pooled, labels]);
    }
  }

  /** One step on the training images at `indices`: from cached activations, or through the frozen part. */
  private stepOn(
    indices: number[],
    dropoutSeed: number,
    cache: Awaited<ReturnType<ActivationCache['forTraining']>>,
    copyRng: Rng,
    augment: AugmentLevel,
    augmentRng: Rng,
    mixRng: Rng,
  ): void {
    const { train } = this.data;
    if (this.options.failBatchesAbove !== undefined && indices.length > this.options.failBatchesAbove) {
      throw new Error(`out of memory (test hook: batches above ${this.options.failBatchesAbove} images fail)`);
    }
    const mix = indices.length > 1 ? drawBatchMix(mixRng, indices.length, this.imageSize, this.options) : undefined;
    const [boundaryInput, labels, mixedLabels] = tf.tidy(() => {
      let x: tf.Tensor;
      if (cache) {
        x = tf.gather(cache.activations, indices.map((i) => copyRng.int(cache.copies) * train.images.length + i));
      } else {
        const images = imageBatch(train.images, indices, { size: this.imageSize, preprocessing: this.preprocessing, augment: { level: augment, rng: augmentRng } });
        x = this.layers.split.runBottom(mix?.kind === 'cutmix' ? pasteBox(images, mix) : images);
      }
      if (mix?.kind === 'mixup') x = mixRows(x, mix);
      return [
        x,
        tf.tensor1d(indices.map((i) => train.labels[i]!), 'int32'),
        ...(mix ? [tf.tensor1d(mix.perm.map((j) => train.labels[indices[j]!]!), 'int32')] : []),
      ];
    });
    try {
      this.step!.step(boundaryInput!, labels as tf.Tensor1D, dropoutSeed, mix ? { labels: mixedLabels as tf.Tensor1D, lambda: mix.lambda } : undefined);
    } finally {
      tf.dispose([boundaryInput!, labels!, ...(mixedLabels ? [mixedLabels] : [])]);
    }
  }

  /** Says how many frozen outputs the persistent cache had, of those looked up since `before`. */
  private logPersisted(stage: number, before: { rows: number; hits: number }): void {
    const rows = this.cache.persisted.rows - before.rows;
    if (!this.options.diskCache || rows === 0) return;
    const hits = this.cache.persisted.hits - before.hits;
    this.options.log?.(`stage ${stage}: frozen outputs: ${hits} of ${rows} from the cache (${this.options.diskCache.dir})`);
  }

  /**
   * Before a stage: estimates what a training step needs and, on a backend with a fixed memory
   * limit (WebAssembly's 4 GiB), halves the batch until the step fits beside what is held already,
   * and gives the activation cache only what is left. Says what it planned.
   */
  private planMemory(stage: number): void {
    const params = this.layers.variables().reduce((n, v) => n + v.size, 0);
    const boundary = this.layers.split.boundary;
    const limit = backendMemoryLimit();
    let stepBytes = estimateStepBytes(this.model, boundary, this.batchSize, params);
    let note = '';
    if (limit !== undefined) {
      const free = limit - backendBytesInUse();
      const before = this.batchSize;
      while (this.batchSize > 1 && stepBytes > free * 0.8) {
        this.batchSize = Math.max(1, Math.floor(this.batchSize / 2));
        stepBytes = estimateStepBytes(this.model, boundary, this.batchSize, params);
      }
      if (this.batchSize !== before) {
        this.options.log?.(
          `stage ${stage}: a training batch of ${before} images would need about ${mib(estimateStepBytes(this.model, boundary, before, params))}, ` +
            `more than the ${mib(free)} free of the ${mib(limit)} WebAssembly heap: using batches of ${this.batchSize}`,
        );
      }
      this.cache.budgetBytes = Math.max(0, Math.min(this.options.cacheBytes, this.cache.usedBytes() + free - stepBytes));
      note = `; ${mib(backendBytesInUse())} of the ${mib(limit)} heap in use, ${mib(this.cache.budgetBytes)} allowed for cached activations`;
    }
    this.options.log?.(`stage ${stage}: memory: a training step of ${this.batchSize} images needs about ${mib(stepBytes)}${note}`);
  }

  private async saveCheckpoint(ctx: TrainingContext, stageComplete: boolean): Promise<void> {
    const target = this.options.checkpoint;
    if (!target || !this.step || ctx.epoch === 0) return;
    const state: CheckpointState = {
      format: 'finetune-checkpoint/1',
      stage: ctx.stage,
      epoch: ctx.epoch,
      stageComplete,
      lr: this.learningRate,
      history: this.history,
      callbacks: Object.fromEntries(this.callbacks.filter((cb) => cb.name && cb.getState).map((cb) => [cb.name!, cb.getState!()])),
      run: target.run,
    };
    const kept = this.callbacks.map((cb) => cb.checkpointWeights?.(this.model)).find((w) => w !== undefined);
    // A completed stage's average is in the model already; the next stage starts its own.
    const average = this.average && !stageComplete ? { values: this.average.checkpointValues(this.model), updates: this.average.updates } : undefined;
    await saveCheckpoint(target.dir, this.model, this.step.optimizer, state, kept, average);
    this.lastCheckpoint = { stage: ctx.stage, epoch: ctx.epoch, stageComplete };
  }

  // ── Inference ─────────────────────────────────────────────────────────────────────────────────

  /** Class probabilities (N × K, row-major) for decoded images, in inference mode. */
  async predictProbabilities(set: ImageSet): Promise<Float32Array> {
    const split = this.layers.split;
    const cached = await this.cache.outputs(set, split);
    const k = this.model.outputs[0]!.shape[1]!;
    const out = new Float32Array(set.images.length * k);
    for (const indices of batchRanges(set.images.length, this.options.batchSize)) {
      const probs = tf.tidy(() => {
        const boundaryInput = cached
          ? tf.gather(cached, indices)
          : split.runBottom(imageBatch(set.images, indices, { size: this.imageSize, preprocessing: this.preprocessing }));
        return split.runTopInference(boundaryInput);
      });
      // data(), not dataSync(): WebGPU can't read back synchronously in Node.
      out.set((await probs.data()) as Float32Array, indices[0]! * k);
      probs.dispose();
    }
    return out;
  }

  /**
   * The validation set's probabilities as computed after epoch `at` of this process, when the model
   * still runs at that epoch's split; else undefined. They are the model's probabilities now only if
   * it holds that epoch's weights again (EarlyStopping restores the best epoch's at each stage end):
   * then they need not be computed a second time (the same ops on the same values, bit for bit).
   */
  validationProbabilitiesAt(at: { stage: number; epoch: number }): Float32Array | undefined {
    const kept = this.validations.get(`${at.stage}:${at.epoch}`);
    return kept && kept.boundary === this.layers.split.boundary ? kept.probabilities : undefined;
  }

  /** Loss and accuracy on a labelled set, with the probabilities they came from. */
  async evaluate(set: ImageSet): Promise<{ loss: number; accuracy: number; probabilities: Float32Array }> {
    const probabilities = await this.predictProbabilities(set);
    const k = this.model.outputs[0]!.shape[1]!;
    let loss = 0;
    let correct = 0;
    for (let i = 0; i < set.labels.length; i++) {
      const row = probabilities.subarray(i * k, (i + 1) * k);
      const label = set.labels[i]!;
      loss -= Math.log(Math.max(row[label]!, 1e-7));
      let best = 0;
      for (let j = 1; j < k; j++) if (row[j]! > row[best]!) best = j;
      if (best === label) correct += 1;
    }
    const n = Math.max(1, set.labels.length);
    return { loss: loss / n, accuracy: correct / n, probabilities };
  }

  // ── Weights ───────────────────────────────────────────────────────────────────────────────────

  /** Copies of the given variables' current values (for restoring the best epoch). */
  snapshot(variables: tf.Variable[] = this.mutableVariables()): Map<tf.Variable, tf.Tensor> {
    return new Map(variables.map((v) => [v, tf.keep(v.clone())]));
  }

  /** Writes a snapshot back. */
  restore(snapshot: Map<tf.Variable, tf.Tensor>): void {
    for (const [variable, value] of snapshot) variable.assign(value);
  }

  /** Frees the kept activations and folded weights (the model stays usable). */
  dispose(): void {
    if (this.ownsCache) this.cache.dispose(); // a shared one is its owner's to free
    this.layers.dispose();
  }

  private async each(hook: (cb: Callback) => void | Promise<void>): Promise<void> {
    for (const cb of this.callbacks) await hook(cb);
  }
}
