import * as tf from '@tensorflow/tfjs';
import { preprocessInto, type Preprocessing } from '../backbones/preprocess.js';
import { augmentImage } from './augment.js';
import type { Rng } from './rng.js';
import type { PixelStore } from './pixel-store.js';
import type { AugmentLevel } from './types.js';

/** Decoded images with their labels: each file is decoded once per run. */
export interface ImageSet {
  /** size × size × 3 RGB bytes per image (in memory, or spilled to disk past a budget). */
  images: PixelStore;
  /** Class index per image; -1 for unlabelled images. */
  labels: Int32Array;
  /** Source file per image. */
  paths: string[];
  /**
   * Set when this set is rows of another (a cross-validation fold): image i is `rowsOf.set`'s
   * image `rowsOf.rows[i]`, so the activation cache gathers its rows instead of computing them again.
   */
  rowsOf?: { set: ImageSet; rows: readonly number[] };
}

export interface BatchOptions {
  size: number;
  preprocessing: Preprocessing;
  /**
   * Training-time augmentation; omitted or 'none' for evaluation and prediction. `rng`: one stream
   * for the batch, or a stream per image (given the image's index).
   */
  augment?: { level: AugmentLevel; rng: Rng | ((index: number) => Rng) };
}

/** Preprocesses (and optionally augments) the images at `indices` into one NHWC float32 batch. */
export function imageBatch(images: PixelStore, indices: ArrayLike<number>, options: BatchOptions): tf.Tensor4D {
  const { size, preprocessing, augment } = options;
  const pixelsPerImage = size * size * 3;
  const data = new Float32Array(indices.length * pixelsPerImage);
  for (let i = 0; i < indices.length; i++) {
    let pixels = images.get(indices[i]!);
    if (pixels.length !== pixelsPerImage) {
      throw new Error(`image ${indices[i]} has ${pixels.length} bytes, expected ${pixelsPerImage} (${size}×${size}×3)`);
    }
    if (augment && augment.level !== 'none') {
      const rng = typeof augment.rng === 'function' ? augment.rng(indices[i]!) : augment.rng;
      pixels = augmentImage(pixels, size, augment.level, rng);
    }
    preprocessInto(pixels, preprocessing, data, i * pixelsPerImage);
  }
  return tf.tensor4d(data, [indices.length, size, size, 3]);
}

/** [0, 1, …, n-1] split into consecutive batches. */
export function batchRanges(n: number, batchSize: number): number[][] {
  const batches: number[][] = [];
  for (let start = 0; start < n; start += batchSize) {
    batches.push(Array.from({ length: Math.min(batchSize, n - start) }, (_, i) => start + i));
  }
  return batches;
}
