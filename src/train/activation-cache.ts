import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import type { DiskCache } from '../cache/disk-cache.js';
import { AUGMENT_PARAMS } from '../data/augment.js';
import { RANDAUGMENT, RANDAUGMENT_OPS } from '../data/randaugment.js';
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
  /**
   * The copies are drawn from forks of this stream, one per copy and image (the image named by its
   * pixels' digest), so a resumed run, stage 2, or another split of the same images make the same ones.
   */
  rng: Rng;
  /**
   * The persistent cache between runs: each image's (or copy's) frozen output is looked up there
   * first, keyed by its pixels, the frozen layers' weights and configuration up to the boundary,
   * the preprocessing, the backend and, for copies, the augmentation stream, level and copy number;
   * what is computed is stored.
   */
  disk?: DiskCache;
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
  /** sha256 of each image's pixels, per set (they name images in disk keys and augmentation streams). */
  private readonly digests = new WeakMap<ImageSet, string[]>();
  /** Digest of the frozen layers up to a boundary (weights and configuration), while the split stays. */
  private readonly modelDigests = new Map<number, Promise<string>>();
  /** Rows (image copies) looked up in the persistent cache, and found there, since construction. */
  readonly persisted = { rows: 0, hits: 0 };
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
    this.modelDigests.clear();
    // The activations there must be a single tensor: no connection may skip over the layer.
    this.retained = splittableAfter(this.model)[boundary] ? boundary : undefined;
    return this.retained !== undefined;
  }

  /** The split moved to `boundary`: frees what neither it nor the retained layer uses. */
  moveTo(boundary: number): void {
    this.modelDigests.clear();
    this.clear((b) => b === boundary || b === this.retained);
  }

  /**
   * Layer `split.boundary`'s output for every image of `set` (copies 0) or for `copies` augmented
   * copies of each (copy-major rows): from the cache, else computed and kept; undefined when it
   * would not fit in the budget.
   */
  outputs(set: ImageSet, split: SplitModel, copies = 0): Promise<tf.Tensor | undefined> {
    return this.outputsAt(set, split.boundary, copies, split);
  }

  /**
   * What a training stage gathers its batches from, or undefined when the frozen part must run on
   * every batch; `say` hears which, and why, once per stage.
   */
  async forTraining(
    train: ImageSet,
    split: SplitModel,
    stage: number,
    augmentCopies: number,
    say?: (message: string) => void,
  ): Promise<TrainingActivations | undefined> {
    const tell = (message: string) => {
      if (split.boundary > 0 && this.loggedStage !== stage) say?.(`stage ${stage}: ${message}`);
      this.loggedStage = stage;
    };
    const mib = (copies: number) => (this.bytesFor(train, copies, split.boundary) / 1024 ** 2).toFixed(0);
    const limit = `the memory left for cached activations (${(this.available() / 1024 ** 2).toFixed(0)} of ${(this.budgetBytes / 1024 ** 2).toFixed(0)} MiB)`;
    if (this.options.augment === 'none') {
      const activations = await this.outputs(train, split);
      if (activations) {
        tell(`the frozen layers' output for the ${train.images.length} training images is computed once (${mib(1)} MiB)`);
        return { activations, copies: 1 };
      }
      tell(`the frozen layers run every epoch: their output for the training images (${mib(1)} MiB) exceeds ${limit}`);
      return undefined;
    }
    if (augmentCopies > 0) {
      const activations = await this.outputs(train, split, augmentCopies);
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

  private async outputsAt(set: ImageSet, boundary: number, copies: number, split?: SplitModel): Promise<tf.Tensor | undefined> {
    if (boundary <= 0 || set.images.length === 0) return undefined;
    const key = `${boundary}:${copies}`;
    const hit = this.entries.get(set)?.get(key);
    if (hit) return hit;
    if (this.usedBytes() + this.bytesFor(set, copies, boundary) > this.budgetBytes) return undefined;
    const parent = set.rowsOf ? await this.outputsAt(set.rowsOf.set, boundary, copies, split) : undefined;
    if (parent) {
      // A fold's rows of a cached set: gathered, so each image's frozen output is computed once for all folds.
      const activations = this.gatherRows(parent, set.rowsOf!, copies);
      if (!this.entries.has(set)) this.entries.set(set, new Map());
      this.entries.get(set)!.set(key, activations);
      return activations;
    }
    const retained = this.retained;
    // Derived from the retained layer's outputs when it lies below; else from the images.
    let from = retained !== undefined && retained > 0 && retained < boundary ? retained : 0;
    let found = await this.lookUp(set, boundary, from, copies);
    let activations: tf.Tensor;
    if (found.missing.length === 0) {
      activations = found.assemble();
    } else {
      const base = from > 0 ? await this.outputsAt(set, from, copies) : undefined;
      if (from > 0 && !base) {
        from = 0; // the retained layer's outputs do not fit: compute these from the images
        found = await this.lookUp(set, boundary, 0, copies);
      }
      const { missing } = found;
      const all = missing.length === this.rowCount(set, copies);
      const computed = base
        ? all
          ? this.runFrozen(base, from, boundary)
          : tf.tidy(() => this.runFrozen(tf.gather(base, missing), from, boundary))
        : this.fromImages(set, boundary, copies, split, missing);
      activations = await found.complete(computed);
    }
    if (!this.entries.has(set)) this.entries.set(set, new Map());
    this.entries.get(set)!.set(key, activations);
    return activations;
  }

  private rowCount(set: ImageSet, copies: number): number {
    return Math.max(1, copies) * set.images.length;
  }

  /**
   * Which rows (copy·N + i) of layer `boundary`'s output for `set` the persistent cache has, and how
   * to make the whole tensor from them and the rest once computed (`complete`, which stores those).
   * Without a persistent cache every row is missing and `complete` returns what it is given.
   */
  private async lookUp(
    set: ImageSet,
    boundary: number,
    from: number,
    copies: number,
  ): Promise<{ missing: number[]; assemble: () => tf.Tensor; complete: (computed: tf.Tensor) => Promise<tf.Tensor> }> {
    const rows = this.rowCount(set, copies);
    const everyRow = Array.from({ length: rows }, (_, r) => r);
    const disk = this.options.disk;
    if (!disk) {
      return { missing: everyRow, assemble: () => tf.tensor([]), complete: async (computed) => computed };
    }
    const shape = (this.model.layers[boundary]!.outputShape as number[]).slice(1);
    const rowBytes = shape.reduce((a, b) => a * b, 1) * 4;
    const keys = await this.rowKeys(set, boundary, from, copies);
    const stored = await disk.getMany('frozen', keys);
    const missing = everyRow.filter((r) => stored[r]?.length !== rowBytes);
    this.persisted.rows += rows;
    this.persisted.hits += rows - missing.length;
    const all = new Uint8Array(rows * rowBytes);
    stored.forEach((payload, r) => {
      if (payload?.length === rowBytes) all.set(payload, r * rowBytes);
    });
    const toTensor = () => tf.tensor(new Float32Array(all.buffer), [rows, ...shape]);
    return {
      missing,
      assemble: toTensor,
      complete: async (computed) => {
        const values = await computed.data();
        computed.dispose();
        const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
        const fresh = missing.map((r, j) => {
          const payload = bytes.subarray(j * rowBytes, (j + 1) * rowBytes);
          all.set(payload, r * rowBytes);
          return { key: keys[r]!, payload };
        });
        await disk.putMany('frozen', fresh);
        return toTensor();
      },
    };
  }

  /**
   * The persistent cache's key of every row: what decides its values, and nothing else (not the
   * image's place in the set, so another split of the same images still finds them).
   */
  private async rowKeys(set: ImageSet, boundary: number, from: number, copies: number): Promise<string[]> {
    let model = this.modelDigests.get(boundary);
    if (!model) this.modelDigests.set(boundary, (model = layersDigest(this.model, boundary)));
    const { imageSize, preprocessing, augment } = this.options;
    const common =
      `frozen|layers ${await model}|layer ${this.model.layers[boundary]!.name}|via ${from}|size ${imageSize}|` +
      `preprocessing ${JSON.stringify(preprocessing)}|backend ${tf.getBackend()}|tfjs ${tf.version.tfjs}`;
    const digests = this.imageDigests(set);
    if (copies === 0) return digests.map((d) => `${common}|image ${d}|unaugmented`);
    const stream = JSON.stringify(this.options.rng.fork('augment-copies').getState());
    const level = `augment ${augment} ${JSON.stringify(augmentSettings(augment))} stream ${stream}`;
    const keys: string[] = [];
    for (let copy = 0; copy < copies; copy++) for (const d of digests) keys.push(`${common}|image ${d}|${level}|copy ${copy}`);
    return keys;
  }

  /** sha256 of each image's decoded pixels (memoized per set): part of every key of the persistent cache. */
  imageDigests(set: ImageSet): string[] {
    let digests = this.digests.get(set);
    if (!digests) {
      digests = Array.from({ length: set.images.length }, (_, i) => createHash('sha256').update(set.images.get(i)).digest('hex'));
      this.digests.set(set, digests);
    }
    return digests;
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

  /**
   * Layer `boundary`'s output computed from the images (augmented `copies` times, or not), for the
   * rows `rows` (copy·N + i, ascending), in that order.
   */
  private fromImages(set: ImageSet, boundary: number, copies: number, split: SplitModel | undefined, rows: number[]): tf.Tensor {
    const plan = split && boundary === split.boundary ? undefined : new FusedInference(this.model, 0, boundary);
    const run = (x: tf.Tensor) => (plan ? plan.run(x) : split!.runBottom(x));
    const { imageSize: size, preprocessing, batchSize } = this.options;
    const n = set.images.length;
    const streams = this.options.rng.fork('augment-copies');
    const digests = copies > 0 ? this.imageDigests(set) : [];
    const parts: tf.Tensor[] = [];
    this.imagesComputed += rows.length;
    try {
      for (let copy = 0; copy < Math.max(1, copies); copy++) {
        const images = rows.filter((r) => r >= copy * n && r < (copy + 1) * n).map((r) => r - copy * n);
        const copyStream = streams.fork(`copy ${copy}`);
        // Each image's augmentation comes from its own stream, named by its pixels: the same copies
        // whatever else is in the set and whichever rows are computed.
        const augment = copies > 0 ? { level: this.options.augment, rng: (i: number) => copyStream.fork(digests[i]!) } : undefined;
        for (let start = 0; start < images.length; start += batchSize) {
          const indices = images.slice(start, start + batchSize);
          parts.push(tf.tidy(() => run(imageBatch(set.images, indices, { size, preprocessing, augment }))));
        }
      }
      return parts.length === 1 ? parts.pop()! : tf.concat(parts, 0);
    } finally {
      tf.dispose(parts);
      plan?.dispose();
    }
  }
}

/** sha256 of the layers up to `boundary`: names, classes, configurations and weight values. */
export async function layersDigest(model: tf.LayersModel, boundary: number): Promise<string> {
  const hash = createHash('sha256');
  for (const layer of model.layers.slice(0, boundary + 1)) {
    hash.update(JSON.stringify([layer.name, layer.getClassName(), layer.getConfig()]));
    // Not the variables' names: tfjs adds a suffix to a name already used in the process.
    for (const [i, weight] of layer.weights.entries()) {
      hash.update(`weight ${i} ${JSON.stringify(weight.shape)}`);
      const values = await weight.read().data();
      hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    }
  }
  return hash.digest('hex');
}

/** What decides an augmentation level's copies (part of their cache key). */
function augmentSettings(level: AugmentLevel): object {
  if (level === 'none') return {};
  if (level === 'randaugment') return { ...RANDAUGMENT, ops: RANDAUGMENT_OPS };
  return AUGMENT_PARAMS[level];
}
