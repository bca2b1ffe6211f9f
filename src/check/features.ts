/**
 * The pretrained backbone's pooled features of decoded images: what `finetune check` compares to
 * find near-duplicates and trains its label probe on. The backbone runs frozen and folded
 * (FusedInference), then a global average pool, as the classifier head training adds would see it.
 */
import * as tf from '@tensorflow/tfjs';
import { resolveWeightsFile } from '../backbones/imagenet.js';
import { preprocessInto } from '../backbones/preprocess.js';
import { getBackbone, validateBackboneOptions } from '../backbones/registry.js';
import type { BackboneSpec } from '../backbones/types.js';
import { loadBackboneWeights } from '../backbones/weights.js';
import type { PixelStore } from '../data/pixel-store.js';
import { FusedInference } from '../engine/fused-inference.js';
import { UsageError } from '../errors.js';
import { silentReporter, type Reporter } from '../reporter.js';

export interface FeatureModelOptions {
  backbone: string;
  alpha?: number | undefined;
  imageSize?: number | undefined;
  /** 'imagenet' or a weights file / tfjs model folder (as training's --weights). */
  weights: string;
  reporter?: Reporter;
}

/** A frozen backbone that maps decoded images to pooled feature vectors. */
export interface FeatureModel {
  spec: BackboneSpec;
  alpha: number;
  imageSize: number;
  /** The weights file used. */
  weightsSource: string;
  model: tf.LayersModel;
  dispose(): void;
}

/**
 * The backbone spec, alpha and image size for these options; a UsageError (exit 2) for values
 * the backbone does not have or for random weights. Cheap: call it before any slow work.
 */
export function resolveFeatureOptions(options: Omit<FeatureModelOptions, 'reporter'>): { spec: BackboneSpec; alpha: number; imageSize: number } {
  const spec = getBackbone(options.backbone);
  const { alpha, imageSize } = validateBackboneOptions(spec, { alpha: options.alpha, imageSize: options.imageSize });
  if (options.weights === 'none') {
    // Random weights' features say nothing about which photos look alike.
    throw new UsageError('--weights none: check compares pretrained features; give --weights imagenet or a weights file');
  }
  return { spec, alpha, imageSize };
}

/** Builds the backbone and loads its pretrained weights, the same way training does. */
export async function loadFeatureModel(options: FeatureModelOptions): Promise<FeatureModel> {
  const reporter = options.reporter ?? silentReporter;
  const { spec, alpha, imageSize } = resolveFeatureOptions(options);
  const file = await resolveWeightsFile(spec, { alpha, imageSize, weights: options.weights }, reporter);
  const model = spec.build({ alpha, imageSize });
  try {
    const report = await loadBackboneWeights(model, file);
    reporter.info(`weights: ${report.matched} tensors from ${file}`);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return { spec, alpha, imageSize, weightsSource: file, model, dispose: () => model.dispose() };
}

export interface FeatureOptions {
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Pooled features of every image in `images` (each `imageSize² × 3` RGB bytes), as one row-major
 * N × D matrix; each row is scaled to unit length, so a dot product is the cosine similarity.
 */
export async function pooledFeatures(fm: FeatureModel, images: PixelStore, options: FeatureOptions = {}): Promise<{ data: Float32Array; dim: number }> {
  const n = images.length;
  const batchSize = Math.max(1, options.batchSize ?? 32);
  const size = fm.imageSize;
  const per = size * size * 3;
  const plan = FusedInference.forModel(fm.model)?.prepare();
  const forward = (x: tf.Tensor) => (plan ? plan.run(x) : (fm.model.predict(x) as tf.Tensor));
  const dim = (fm.model.outputs[0]!.shape.at(-1) as number | null) ?? 0;
  const out = new Float32Array(n * dim);
  const buffer = new Float32Array(batchSize * per);
  try {
    for (let start = 0; start < n; start += batchSize) {
      const count = Math.min(batchSize, n - start);
      for (let i = 0; i < count; i++) preprocessInto(images.get(start + i), fm.spec.preprocessing, buffer, i * per);
      const pooled = tf.tidy(() => {
        const x = tf.tensor4d(buffer.subarray(0, count * per), [count, size, size, 3]);
        const p = tf.mean(forward(x), [1, 2]);
        // Unit rows: cosine similarity becomes a plain matrix product later.
        return tf.div(p, tf.maximum(tf.norm(p, 'euclidean', 1, true), 1e-12));
      });
      out.set((await pooled.data()) as Float32Array, start * dim);
      pooled.dispose();
      options.onProgress?.(start + count, n);
    }
  } finally {
    plan?.dispose();
  }
  return { data: out, dim };
}
