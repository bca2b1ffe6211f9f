import * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import { batchRanges, imageBatch, type ImageSet } from '../data/batches.js';
import type { Rng } from '../data/rng.js';
import type { AugmentLevel } from '../data/types.js';
import { FusedInference } from '../engine/fused-inference.js';
import { splittableAfter, type SplitModel } from './graph.js';

export interface ActivationCacheOptions {
  imageSize: number;
  preprocessing: Preprocessing;
  /** Images per frozen forward pass. */
  batchSize: number;
  /** Most bytes of activations kept at once (initial `budgetBytes`); what would not fit is not cached. */
  budgetBytes: number;
  /** Augmentation of the cached copies (`outputs(…, copies > 0)`). */
  augment: AugmentLevel;
  /** The copies are drawn from forks of this stream, so a resumed run (or stage 2) makes the same ones. */
  rng: Rng;
}

/** What a training stage gathers its batches from: images × copies rows, row copy·N + i is copy `copy` of image i. */
export interface TrainingActivations {
  activations: tf.Tensor;
  copies: number;
}

/**
 * What the frozen part of a model computes, kept so that it is computed once: the output of layer
 * `boundary` (in `model.layers` order) for every image of a set, unaugmented or for K augmented copies
 * of each image, under one memory budget.
 *
 * One layer may be *retained* (`retain`): its outputs are kept when the split moves up or down, and
 * outputs at higher layers are derived from them rather than from the images — which is how stage 1
 * caches what lies below stage 2's trainable blocks, so unfreezing does not run the backbone again.
 */
export class ActivationCache {
  /** Per image set, by `${boundary}:${copies}` (copies 0: unaugmented). */
  private readonly entries = new Map<ImageSet, Map<string, tf.Tensor>>();
  /** The layer whose outputs stay cached when the split moves. */
  private retained: number | undefined;
  private loggedStage: number | undefined;
  /** Most bytes kept at once; the Trainer lowers it to what the backend's memory leaves. */
  budgetBytes: number;
  /**
   * Images (× copies) that went through the frozen layers from their pixels to fill this cache:
   * what cross-validation's "computed once" means, counted.
   */
  imagesComputed = 0;

  constructor(
    readonly model: tf.LayersModel,
    readonly options: ActivationCacheOptions,
  ) {
    this.budgetBytes = options.budgetBytes;
  }

  /** Keeps layer `boundary`'s outputs when the split moves; false (nothing retained) when the graph can't be cut there. */
  retain(boundary: number): boolean {
    // The activations there must be a single tensor: no connection may skip over the layer.
    this.retained = splittableAfter(this.model)[boundary] ? boundary : undefined;
    return this.retained !== undefined;
  }

  /** The split moved to `boundary`: frees what neither it nor the retained layer uses. */
  moveTo(boundary: number): void {
    this.clear((b) => b === boundary || b === this.retained);
  }

  /**
   * Layer `split.boundary`'s output for every image of `set` (copies 0) or for `copies` augmented
   * copies of each (copy-major rows): from the cache, else computed and kept; undefined when it
   * would not fit in the budget.
   */
  outputs(set: ImageSet, split: SplitModel, copies = 0): tf.Tensor | undefined {
    return this.outputsAt(set, split.boundary, copies, split);
  }

  /**
   * What a training stage gathers its batches from, or undefined when the frozen part must run on
   * every batch; `say` hears which, and why, once per stage.
   */
  forTraining(train: ImageSet, split: SplitModel, stage: number, augmentCopies: number, say?: (message: string) => void): TrainingActivations | undefined {
    const tell = (message: string) => {
      if (split.boundary > 0 && this.loggedStage !== stage) say?.(`stage ${stage}: ${message}`);
      this.loggedStage = stage;
    };
    const mib = (copies: number) => (this.bytesFor(train, copies, split.boundary) / 1024 ** 2).toFixed(0);
    const limit = `the memory left for cached activations (${(this.available() / 1024 ** 2).toFixed(0)} of ${(this.budgetBytes / 1024 ** 2).toFixed(0)} MiB)`;
    if (this.options.augment === 'none') {
      const activations = this.outputs(train, split);
      if (activations) {
        tell(`the frozen layers' output for the ${train.images.length} training images is computed once (${mib(1)} MiB)`);
        return { activations, copies: 1 };
      }
      tell(`the frozen layers run every epoch: their output for the training images (${mib(1)} MiB) exceeds ${limit}`);
      return undefined;
    }
    if (augmentCopies > 0) {
      const activations = this.outputs(train, split, augmentCopies);
      if (activations) {
        tell(
          `the frozen layers' output for ${augmentCopies} augmented copies of each training image is computed once (${mib(augmentCopies)} MiB); each epoch draws one copy per image`,
        );
        return { activations, copies: augmentCopies };
      }
      tell(`the frozen layers run every epoch: ${augmentCopies} augmented copies (${mib(augmentCopies)} MiB) exceed ${limit}`);
      return undefined;
    }
    tell(
      `augmentation is on, so the frozen layers run on every training image every epoch (only validation is cached). ` +
        `--augment-copies K computes them once for K augmented copies instead: faster epochs, K variants per image.`,
    );
    return undefined;
  }

  /** Bytes of layer `boundary`'s output for `set` (× copies). */
  bytesFor(set: ImageSet | number, copies: number, boundary: number): number {
    const count = typeof set === 'number' ? set : set.images.length;
    const shape = this.model.layers[boundary]!.outputShape as number[];
    return Math.max(1, copies) * count * shape.slice(1).reduce((a, b) => a * b, 1) * 4;
  }

  /** Bytes held now. */
  usedBytes(): number {
    let bytes = 0;
    for (const perSet of this.entries.values()) for (const t of perSet.values()) bytes += t.size * 4;
    return bytes;
  }

  /** Frees cached activations (all, or those at boundaries `keep` rejects). */
  clear(keep: (boundary: number) => boolean = () => false): void {
    for (const perSet of this.entries.values()) {
      for (const [key, activations] of perSet) {
        if (keep(Number(key.split(':')[0]))) continue;
        activations.dispose();
        perSet.delete(key);
      }
    }
  }

  /** Frees what is kept for `set` (a finished fold's rows), leaving other sets' entries. */
  forget(set: ImageSet): void {
    const perSet = this.entries.get(set);
    if (!perSet) return;
    for (const activations of perSet.values()) activations.dispose();
    this.entries.delete(set);
  }

  dispose(): void {
    this.clear();
  }

  private available(): number {
    return Math.max(0, this.budgetBytes - this.usedBytes());
  }

  private outputsAt(set: ImageSet, boundary: number, copies: number, split?: SplitModel): tf.Tensor | undefined {
    if (boundary <= 0 || set.images.length === 0) return undefined;
    const key = `${boundary}:${copies}`;
    const hit = this.entries.get(set)?.get(key);
    if (hit) return hit;
    if (this.usedBytes() + this.bytesFor(set, copies, boundary) > this.budgetBytes) return undefined;
    const parent = set.rowsOf ? this.outputsAt(set.rowsOf.set, boundary, copies, split) : undefined;
    if (parent) {
      // A fold's rows of a cached set: gathered, so each image's frozen output is computed once for all folds.
      const activations = this.gatherRows(parent, set.rowsOf!, copies);
      if (!this.entries.has(set)) this.entries.set(set, new Map());
      this.entries.get(set)!.set(key, activations);
      return activations;
    }
    const retained = this.retained;
    const base = retained !== undefined && retained > 0 && retained < boundary ? this.outputsAt(set, retained, copies) : undefined;
    const activations = base ? this.runFrozen(base, retained!, boundary) : this.fromImages(set, boundary, copies, split);
    if (!this.entries.has(set)) this.entries.set(set, new Map());
    this.entries.get(set)!.set(key, activations);
    return activations;
  }

  /** The rows of `parent` (copy-major, `copies` copies of each image) that `rowsOf` names, in the same layout. */
  private gatherRows(parent: tf.Tensor, rowsOf: NonNullable<ImageSet['rowsOf']>, copies: number): tf.Tensor {
    const n = rowsOf.set.images.length;
    const indices: number[] = [];
    for (let copy = 0; copy < Math.max(1, copies); copy++) for (const r of rowsOf.rows) indices.push(copy * n + r);
    return tf.tidy(() => tf.gather(parent, tf.tensor1d(indices, 'int32')));
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
  private fromImages(set: ImageSet, boundary: number, copies: number, split: SplitModel | undefined): tf.Tensor {
    const plan = split && boundary === split.boundary ? undefined : new FusedInference(this.model, 0, boundary);
    const run = (x: tf.Tensor) => (plan ? plan.run(x) : split!.runBottom(x));
    const { imageSize: size, preprocessing, batchSize } = this.options;
    const rng = this.options.rng.fork('augment-copies');
    const parts: tf.Tensor[] = [];
    this.imagesComputed += set.images.length * Math.max(1, copies);
    try {
      for (let copy = 0; copy < Math.max(1, copies); copy++) {
        for (const indices of batchRanges(set.images.length, batchSize)) {
          const augment = copies > 0 ? { level: this.options.augment, rng } : undefined;
          parts.push(tf.tidy(() => run(imageBatch(set.images, indices, { size, preprocessing, augment }))));
        }
      }
      return tf.concat(parts, 0);
    } finally {
      tf.dispose(parts);
      plan?.dispose();
    }
  }
}
