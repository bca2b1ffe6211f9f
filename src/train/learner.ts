import * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import { batchRanges, imageBatch, type ImageSet } from '../data/batches.js';
import { Rng } from '../data/rng.js';
import type { AugmentLevel } from '../data/types.js';
import { FusedInference } from '../engine/fused-inference.js';
import { FinetuneError, InterruptedError } from '../errors.js';
import { SplitModel } from './graph.js';
import { HEAD_LAYERS } from './head.js';
import { FusedAdam } from './optimizer.js';

/** A tensor with a name, as optimizers list their slots (not re-exported by @tensorflow/tfjs). */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

/** One row of the training history (history.csv). */
export interface EpochLogs {
  /** 1: head on a frozen backbone; 2: fine-tuning the top blocks. */
  stage: number;
  /** 1-based, within the stage. */
  epoch: number;
  loss: number;
  accuracy: number;
  valLoss?: number;
  valAccuracy?: number;
  /** Learning rate used during the epoch. */
  lr: number;
  seconds: number;
}

export interface BatchLogs {
  batch: number;
  batches: number;
  loss: number;
  accuracy: number;
}

/** What callbacks see; setting `stopTraining` ends the current stage after this epoch. */
export interface TrainingContext {
  learner: Learner;
  stage: number;
  epoch: number;
  epochs: number;
  stopTraining: boolean;
}

/** Hooks into the training loop (Keras callbacks / fastai callbacks). Every hook may be async. */
export interface Callback {
  /** Callbacks with state that a resumed run must get back name themselves and implement get/setState. */
  readonly name?: string;
  getState?(): unknown;
  setState?(state: unknown): void;
  onStageBegin?(ctx: TrainingContext): void | Promise<void>;
  onEpochBegin?(ctx: TrainingContext): void | Promise<void>;
  onBatchEnd?(ctx: TrainingContext, logs: BatchLogs): void | Promise<void>;
  onEpochEnd?(ctx: TrainingContext, logs: EpochLogs): void | Promise<void>;
  onStageEnd?(ctx: TrainingContext): void | Promise<void>;
}

export interface LearnerOptions {
  /** Images per training step. */
  batchSize?: number;
  augment?: AugmentLevel;
  /** Seeds data order, augmentation and dropout. */
  seed?: number;
  /** Loss weight per class (e.g. balanced weights for imbalanced folders). */
  classWeights?: number[];
  /**
   * Run unfrozen BatchNormalization layers in training mode (batch statistics, moving averages
   * updated). Off by default: the Keras fine-tuning guide keeps them in inference mode, which is
   * what keeps small-batch fine-tuning from wrecking pretrained statistics.
   */
  trainBatchNorm?: boolean;
  /** Dropout rate applied before the classifier while training. */
  dropout?: number;
  /** Memory allowed for activations of the frozen part kept between epochs (bytes). */
  cacheBytes?: number;
  /**
   * With augmentation on, compute the frozen part's output for this many augmented copies of each
   * training image once, and draw one copy per image each epoch, instead of running the frozen
   * part on freshly augmented images every epoch (0, the default). Trades augmentation variety
   * for epochs that cost only the trainable top.
   */
  augmentCopies?: number;
  /** Where the learner says what its activation cache could or could not do (once per stage). */
  log?: (message: string) => void;
  /**
   * Longest time between reads of the running loss back from the device (seconds; 0: every
   * batch). Batch logs show the last value read; epoch logs are always exact.
   */
  readbackSeconds?: number;
  callbacks?: Callback[];
}

/** Where a resumed stage picks up: what a checkpoint saved at the end of `epoch`. */
export interface ResumePoint {
  /** The last completed epoch of this stage. */
  epoch: number;
  /** The optimizer's saved slots (`Optimizer.getWeights()` order). */
  optimizerWeights: NamedTensor[];
  /** Saved state of the named callbacks. */
  callbacks: Record<string, unknown>;
}

export interface FitOptions {
  /** Continue a stage from a checkpoint instead of starting it. */
  resume?: ResumePoint;
  /** Checked after every batch: when aborted, `fit` throws an InterruptedError. */
  signal?: AbortSignal;
}

/** A labelled training set and an optional validation set. */
export interface LearnerData {
  train: ImageSet;
  valid?: ImageSet;
}

/** What a later stage unfreezes: the top `blocks` backbone blocks, or every layer from `fromLayer` up. */
export type UnfreezeSpec = { blocks: number } | { fromLayer: string };

/** The training set's frozen activations as a stage uses them. */
type TrainingCache =
  /** Images × copies rows: row copy·N + i is copy `copy` of image i (one copy: unaugmented). */
  { activations: tf.Tensor; copies: number } | undefined;

/**
 * Trains a classifier (backbone + head from `attachHead`) on decoded images — the middle layer of
 * the API: `fineTune()` is freeze → fit → unfreeze → fit on one of these.
 *
 * The model runs split at the lowest trainable layer: the frozen bottom runs in inference mode
 * outside the gradient tape, and when its input does not change between epochs (validation
 * images, or training images without augmentation) its output is computed once and kept.
 */
export class Learner {
  readonly model: tf.LayersModel;
  readonly data: LearnerData;
  readonly preprocessing: Preprocessing;
  readonly imageSize: number;
  readonly history: EpochLogs[] = [];
  readonly options: Required<Omit<LearnerOptions, 'classWeights' | 'callbacks' | 'log'>> & Pick<LearnerOptions, 'classWeights' | 'log'>;
  callbacks: Callback[];

  private readonly blocks: string[][];
  private trainable = new Set<string>();
  private split!: SplitModel; // set by setTrainable(), first through freeze() in the constructor
  /** Frozen activations per image set, by `${layer index}:${augmented copies}` (0: unaugmented). */
  private readonly caches = new Map<ImageSet, Map<string, tf.Tensor>>();
  /** The layer whose output stays cached when the split moves (retainActivationsFor). */
  private retained: number | undefined;
  private loggedStage: number | undefined;
  private optimizer: FusedAdam | undefined;
  private readonly rng: Rng;

  constructor(
    model: tf.LayersModel,
    blocks: string[][],
    data: LearnerData,
    preprocessing: Preprocessing,
    options: LearnerOptions = {},
  ) {
    this.model = model;
    this.blocks = blocks;
    this.data = data;
    this.preprocessing = preprocessing;
    const inputShape = model.inputs[0]!.shape;
    this.imageSize = inputShape[1]!;
    this.options = {
      batchSize: options.batchSize ?? 32,
      augment: options.augment ?? 'none',
      seed: options.seed ?? 42,
      trainBatchNorm: options.trainBatchNorm ?? false,
      dropout: options.dropout ?? 0.2,
      cacheBytes: options.cacheBytes ?? 2 * 1024 ** 3,
      readbackSeconds: options.readbackSeconds ?? 1,
      augmentCopies: options.augmentCopies ?? 0,
      classWeights: options.classWeights,
      log: options.log,
    };
    this.callbacks = options.callbacks ?? [];
    this.rng = new Rng(this.options.seed);
    this.freeze();
  }

  // ── What trains ────────────────────────────────────────────────────────────────────────────

  /** Only the classifier head trains. */
  freeze(): void {
    this.setTrainable([HEAD_LAYERS.logits]);
  }

  /**
   * Makes the top `blocks` backbone blocks trainable (plus the head), or every layer from
   * `fromLayer` up. Returns the names of the backbone layers now trainable.
   */
  unfreeze(what: UnfreezeSpec): string[] {
    const layers = this.layersToUnfreeze(what);
    this.setTrainable([...layers, HEAD_LAYERS.logits]);
    return layers.filter((name) => this.model.getLayer(name).weights.length > 0);
  }

  /**
   * Tells the learner what a later stage will unfreeze, so that it caches the frozen activations
   * just below those layers: this stage derives its own from them, and unfreezing then reuses them
   * instead of running the backbone over every image again.
   */
  retainActivationsFor(what: UnfreezeSpec): void {
    const layers = this.layersToUnfreeze(what);
    const names = this.model.layers.map((l) => l.name);
    const boundary = this.boundaryBelow(Math.min(...layers.map((name) => names.indexOf(name))));
    try {
      new SplitModel(this.model, boundary); // the activations there must be a single tensor
      this.retained = boundary;
    } catch {
      this.retained = undefined;
    }
  }

  private layersToUnfreeze(what: UnfreezeSpec): string[] {
    let layers: string[];
    if ('blocks' in what) {
      const n = Math.max(0, Math.min(what.blocks, this.blocks.length));
      layers = this.blocks.slice(this.blocks.length - n).flat();
    } else {
      const names = this.model.layers.map((l) => l.name);
      const start = names.indexOf(what.fromLayer);
      const headStart = names.indexOf(HEAD_LAYERS.pool);
      if (start < 0 || start >= headStart) {
        throw new FinetuneError(
          `--unfreeze-from ${what.fromLayer}: no such backbone layer. Block starts are: ${this.blocks.map((b) => b[0]).join(', ')}.`,
          { exitCode: 2 },
        );
      }
      layers = names.slice(start, headStart);
    }
    return layers;
  }

  /** Names of the layers whose weights train now. */
  get trainableLayers(): string[] {
    return [...this.trainable];
  }

  private setTrainable(names: string[]): void {
    this.trainable = new Set(names);
    for (const layer of this.model.layers) layer.trainable = this.trainable.has(layer.name);
    const boundary = this.boundaryBelow(this.model.layers.findIndex((l) => this.trainable.has(l.name)));
    const previous = this.split as SplitModel | undefined;
    this.split = new SplitModel(this.model, boundary);
    previous?.dispose();
    if (previous && previous.boundary !== boundary) this.clearCache((b) => b === boundary || b === this.retained);
  }

  /** The split for a lowest trainable layer: everything below it is frozen. */
  private boundaryBelow(lowestTrainable: number): number {
    // Dropout must stay above the split because it behaves differently in training.
    let boundary = lowestTrainable - 1;
    while (boundary > 0 && this.model.layers[boundary]!.getClassName() === 'Dropout') boundary--;
    return boundary;
  }

  /** Trainable variables in a stable order. */
  private trainableVariables(): tf.Variable[] {
    return this.model.layers
      .filter((l) => this.trainable.has(l.name))
      .flatMap((l) => l.trainableWeights.map((w) => w.read() as tf.Variable));
  }

  /** Variables whose values training can change: trainable weights, plus BN statistics when BN trains. */
  mutableVariables(): tf.Variable[] {
    const variables = this.trainableVariables();
    if (this.options.trainBatchNorm) {
      for (const layer of this.model.layers) {
        if (this.trainable.has(layer.name) && layer.getClassName() === 'BatchNormalization') {
          variables.push(...layer.nonTrainableWeights.map((w) => w.read() as tf.Variable));
        }
      }
    }
    return variables;
  }

  /** The optimizer of the stage in progress (for checkpoints); undefined between stages. */
  get currentOptimizer(): FusedAdam | undefined {
    return this.optimizer;
  }

  // ── Learning rate ─────────────────────────────────────────────────────────────────────────────

  get learningRate(): number {
    return this.optimizer?.learningRate ?? Number.NaN;
  }

  set learningRate(lr: number) {
    if (this.optimizer) this.optimizer.learningRate = lr;
  }

  // ── Training ──────────────────────────────────────────────────────────────────────────────────

  /**
   * Trains the trainable layers for `epochs` epochs with Adam at `lr`; callbacks may stop it early.
   * Returns this stage's history rows.
   */
  async fit(epochs: number, lr: number, stage = 1, options: FitOptions = {}): Promise<EpochLogs[]> {
    const { train, valid } = this.data;
    if (train.images.length === 0) throw new FinetuneError('there are no training images to learn from.');
    const variables = this.trainableVariables();
    this.optimizer = new FusedAdam(variables, lr);
    const ctx: TrainingContext = { learner: this, stage, epoch: 0, epochs, stopTraining: false };
    const rows: EpochLogs[] = [];
    const resume = options.resume;
    try {
      if (resume) {
        // Adam's slots only exist once it has stepped; a stage that completed no epoch has none.
        if (resume.optimizerWeights.length > 1) await this.optimizer.setWeights(resume.optimizerWeights);
        ctx.epoch = resume.epoch;
      }
      await this.each((cb) => cb.onStageBegin?.(ctx));
      if (resume) {
        for (const cb of this.callbacks) if (cb.name && cb.setState && cb.name in resume.callbacks) cb.setState(resume.callbacks[cb.name]);
      }
      for (let epoch = (resume?.epoch ?? 0) + 1; epoch <= epochs && !ctx.stopTraining; epoch++) {
        ctx.epoch = epoch;
        const started = performance.now();
        const epochLr = this.learningRate;
        await this.each((cb) => cb.onEpochBegin?.(ctx));
        const { loss, accuracy } = await this.trainEpoch(ctx, variables, stage, epoch, options.signal);
        const row: EpochLogs = { stage, epoch, loss, accuracy, lr: epochLr, seconds: 0 };
        if (valid && valid.images.length > 0) {
          const evaluation = await this.evaluate(valid);
          row.valLoss = evaluation.loss;
          row.valAccuracy = evaluation.accuracy;
        }
        row.seconds = (performance.now() - started) / 1000;
        rows.push(row);
        this.history.push(row);
        await this.each((cb) => cb.onEpochEnd?.(ctx, row));
      }
      await this.each((cb) => cb.onStageEnd?.(ctx));
    } finally {
      this.optimizer.dispose();
      this.optimizer = undefined;
    }
    return rows;
  }

  private async trainEpoch(
    ctx: TrainingContext,
    variables: tf.Variable[],
    stage: number,
    epoch: number,
    signal: AbortSignal | undefined,
  ): Promise<{ loss: number; accuracy: number }> {
    const { train } = this.data;
    const { batchSize, augment, classWeights, trainBatchNorm } = this.options;
    const epochRng = this.rng.fork(`stage${stage}-epoch${epoch}`);
    const order = epochRng.shuffle(Array.from({ length: train.images.length }, (_, i) => i));
    const augmentRng = epochRng.fork('augment');
    const cache = this.trainingActivations(stage);
    const copyRng = epochRng.fork('copies');
    const batches = batchRanges(order.length, batchSize);
    // Loss and accuracy add up on the device and are read back at most every `readbackSeconds`
    // (and at the end of the epoch): a read stalls a GPU's pipeline. Batch logs show the last read.
    let sums = tf.tidy(() => [tf.scalar(0), tf.scalar(0)] as [tf.Scalar, tf.Scalar]);
    let lastRead = performance.now();
    let known = { loss: Number.NaN, accuracy: Number.NaN };
    let seen = 0;
    try {
      for (let b = 0; b < batches.length; b++) {
        const indices = batches[b]!.map((i) => order[i]!);
        const dropoutSeed = epochRng.int(2 ** 31);
        const previous = sums;
        sums = tf.tidy(() => {
          const boundaryInput = cache
            ? tf.gather(cache.activations, indices.map((i) => copyRng.int(cache.copies) * train.images.length + i))
            : this.split.runBottom(
                imageBatch(train.images, indices, {
                  size: this.imageSize,
                  preprocessing: this.preprocessing,
                  augment: { level: augment, rng: augmentRng },
                }),
              );
          const labels = tf.tensor1d(indices.map((i) => train.labels[i]!), 'int32');
          const weights = classWeights ? tf.tensor1d(indices.map((i) => classWeights[train.labels[i]!]!)) : undefined;
          let correctCount: tf.Scalar | undefined;
          const { value, grads } = tf.variableGrads(() => {
            const pooled = this.split.runTop(
              boundaryInput,
              (layer) => trainBatchNorm && layer.getClassName() === 'BatchNormalization' && this.trainable.has(layer.name),
              HEAD_LAYERS.pool,
            );
            const dropped = this.options.dropout > 0 ? tf.dropout(pooled, this.options.dropout, undefined, dropoutSeed) : pooled;
            const logits = this.model.getLayer(HEAD_LAYERS.logits).apply(dropped) as tf.Tensor2D;
            correctCount = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32')) as tf.Scalar);
            const perSample = tf.neg(tf.sum(tf.mul(tf.oneHot(labels, logits.shape[1]), tf.logSoftmax(logits)), 1));
            return tf.mean(weights ? tf.mul(perSample, weights) : perSample) as tf.Scalar;
          }, variables);
          this.optimizer!.applyGradients(grads);
          const next = [tf.add(previous[0], tf.mul(value, indices.length)), tf.add(previous[1], correctCount!)] as [tf.Scalar, tf.Scalar];
          correctCount!.dispose(); // kept to leave the gradient tape; tidy() won't free it
          return next;
        });
        tf.dispose(previous);
        seen += indices.length;
        const last = b === batches.length - 1;
        if (last || performance.now() - lastRead >= this.options.readbackSeconds * 1000) {
          const [lossSum, correct] = await Promise.all(sums.map(async (t) => (await t.data())[0]!));
          lastRead = performance.now();
          known = { loss: lossSum! / seen, accuracy: correct! / seen };
          if (!Number.isFinite(known.loss)) {
            throw new FinetuneError(
              `the training loss became ${known.loss} in stage ${stage}, epoch ${epoch}: lower the learning rate (--lr / --fine-tune-lr).`,
            );
          }
        }
        if (signal?.aborted) {
          throw new InterruptedError(`interrupted in stage ${stage}, epoch ${epoch}, batch ${b + 1} of ${batches.length}.`);
        }
        await this.each((cb) => cb.onBatchEnd?.(ctx, { batch: b + 1, batches: batches.length, ...known }));
      }
    } finally {
      tf.dispose(sums);
    }
    return known;
  }

  // ── Inference ─────────────────────────────────────────────────────────────────────────────────

  /** Class probabilities (N × K, row-major) for decoded images, in inference mode. */
  async predictProbabilities(set: ImageSet): Promise<Float32Array> {
    const cache = this.activations(set);
    const k = this.model.outputs[0]!.shape[1]!;
    const out = new Float32Array(set.images.length * k);
    for (const indices of batchRanges(set.images.length, this.options.batchSize)) {
      const probs = tf.tidy(() => {
        const boundaryInput = cache
          ? tf.gather(cache, indices)
          : this.split.runBottom(imageBatch(set.images, indices, { size: this.imageSize, preprocessing: this.preprocessing }));
        return this.split.runTopInference(boundaryInput);
      });
      // data(), not dataSync(): WebGPU can't read back synchronously in Node.
      out.set((await probs.data()) as Float32Array, indices[0]! * k);
      probs.dispose();
    }
    return out;
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

  // ── Frozen activations ────────────────────────────────────────────────────────────────────────

  /**
   * The frozen bottom's output for every image of `set`, computed once and kept while the split
   * stays where it is; undefined when it would not fit in `cacheBytes`.
   */
  private activations(set: ImageSet): tf.Tensor | undefined {
    return this.cachedOutputs(set, this.split.boundary, 0);
  }

  /**
   * Layer `boundary`'s output for every image of `set` (copies 0) or for `copies` augmented copies
   * of each (copy-major rows), from the cache, else computed and cached — from the retained layer's
   * cached output where there is one below, else from the images.
   */
  private cachedOutputs(set: ImageSet, boundary: number, copies: number): tf.Tensor | undefined {
    if (boundary <= 0 || set.images.length === 0) return undefined;
    const key = `${boundary}:${copies}`;
    const hit = this.caches.get(set)?.get(key);
    if (hit) return hit;
    if (this.cachedBytes() + this.activationBytes(set, copies, boundary) > this.options.cacheBytes) return undefined;
    const retained = this.retained;
    const base = retained !== undefined && retained > 0 && retained < boundary ? this.cachedOutputs(set, retained, copies) : undefined;
    const activations = base ? this.runFrozen(base, retained!, boundary) : this.frozenFromImages(set, boundary, copies);
    if (!this.caches.has(set)) this.caches.set(set, new Map());
    this.caches.get(set)!.set(key, activations);
    return activations;
  }

  /** Runs the frozen layers (from, to] over cached activations, a batch at a time. */
  private runFrozen(input: tf.Tensor, from: number, to: number): tf.Tensor {
    const plan = new FusedInference(this.model, from, to);
    try {
      const parts = batchRanges(input.shape[0]!, this.options.batchSize).map((rows) =>
        tf.tidy(() => plan.run(tf.slice(input, rows[0]!, rows.length))),
      );
      const out = tf.concat(parts, 0);
      tf.dispose(parts);
      return out;
    } finally {
      plan.dispose();
    }
  }

  /** Layer `boundary`'s output computed from the images (augmented `copies` times, or not). */
  private frozenFromImages(set: ImageSet, boundary: number, copies: number): tf.Tensor {
    const plan = boundary === this.split.boundary ? undefined : new FusedInference(this.model, 0, boundary);
    const run = (x: tf.Tensor) => (plan ? plan.run(x) : this.split.runBottom(x));
    // The copies depend only on the seed, so a resumed run (or stage 2) makes the same ones.
    const rng = this.rng.fork('augment-copies');
    const parts: tf.Tensor[] = [];
    try {
      for (let copy = 0; copy < Math.max(1, copies); copy++) {
        for (const indices of batchRanges(set.images.length, this.options.batchSize)) {
          const augment = copies > 0 ? { level: this.options.augment, rng } : undefined;
          parts.push(tf.tidy(() => run(imageBatch(set.images, indices, { size: this.imageSize, preprocessing: this.preprocessing, augment }))));
        }
      }
      return tf.concat(parts, 0);
    } finally {
      tf.dispose(parts);
      plan?.dispose();
    }
  }

  private cachedBytes(): number {
    let bytes = 0;
    for (const perSet of this.caches.values()) for (const t of perSet.values()) bytes += t.size * 4;
    return bytes;
  }

  /**
   * What trainEpoch gathers training activations from, or undefined when the frozen part must run
   * on every batch; says which, and why, once per stage.
   */
  private trainingActivations(stage: number): TrainingCache {
    const { train } = this.data;
    const { augment, augmentCopies } = this.options;
    const say = (message: string) => {
      if (this.split.boundary > 0 && this.loggedStage !== stage) this.options.log?.(`stage ${stage}: ${message}`);
      this.loggedStage = stage;
    };
    const mib = (copies: number) => (this.activationBytes(train, copies) / 1024 ** 2).toFixed(0);
    const limit = `the cache limit (${(this.options.cacheBytes / 1024 ** 2).toFixed(0)} MiB)`;
    if (augment === 'none') {
      const activations = this.activations(train);
      if (activations) {
        say(`the frozen layers' output for the ${train.images.length} training images is computed once (${mib(1)} MiB)`);
        return { activations, copies: 1 };
      }
      say(`the frozen layers run every epoch: their output for the training images (${mib(1)} MiB) exceeds ${limit}`);
      return undefined;
    }
    if (augmentCopies > 0) {
      const activations = this.cachedOutputs(train, this.split.boundary, augmentCopies);
      if (activations) {
        say(`the frozen layers' output for ${augmentCopies} augmented copies of each training image is computed once (${mib(augmentCopies)} MiB); each epoch draws one copy per image`);
        return { activations, copies: augmentCopies };
      }
      say(`the frozen layers run every epoch: ${augmentCopies} augmented copies (${mib(augmentCopies)} MiB) exceed ${limit}`);
      return undefined;
    }
    say(
      `augmentation is on, so the frozen layers run on every training image every epoch (only validation is cached). ` +
        `--augment-copies K computes them once for K augmented copies instead: faster epochs, K variants per image.`,
    );
    return undefined;
  }

  private activationBytes(set: ImageSet, copies: number, boundary = this.split.boundary): number {
    const shape = this.model.layers[boundary]!.outputShape as number[];
    return Math.max(1, copies) * set.images.length * shape.slice(1).reduce((a, b) => a * b, 1) * 4;
  }

  /** Frees cached activations (all, or those at boundaries `keep` rejects). */
  private clearCache(keep: (boundary: number) => boolean = () => false): void {
    for (const perSet of this.caches.values()) {
      for (const [key, activations] of perSet) {
        if (keep(Number(key.split(':')[0]))) continue;
        activations.dispose();
        perSet.delete(key);
      }
    }
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

  /** Frees the kept activations (the model stays usable). */
  dispose(): void {
    this.clearCache();
    this.split.dispose();
  }

  private async each(hook: (cb: Callback) => void | Promise<void>): Promise<void> {
    for (const cb of this.callbacks) await hook(cb);
  }
}
