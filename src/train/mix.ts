/**
 * Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) for a training batch: each image i is
 * mixed with image perm[i] of the same batch in proportion λ ~ Beta(α, α) (one λ per batch, as both
 * papers' code), and the loss is λ·loss(label i) + (1 − λ)·loss(label perm[i]) — cross-entropy
 * against the convex combination of the two targets.
 *
 * Where finetune mixes: mixup mixes the frozen part's output for the batch (what the trainable top
 * sees: the pooled features in stage 1, the activations below the unfrozen blocks in stage 2), so
 * it works on cached activations and costs no backbone pass — "manifold mixup" (Verma et al. 2019)
 * at the frozen boundary, not a mix of pixels. CutMix pastes a box of one image into another, which
 * only means something in pixels: it runs before the frozen layers, so with --cutmix they run on
 * every training image every epoch (as with augmentation). Validation never mixes.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../data/rng.js';
import type { Loss } from './loss.js';

/** How one training batch is mixed. */
export interface BatchMix {
  kind: 'mixup' | 'cutmix';
  /** The weight of each image's own label (for CutMix: the share of its pixels left after pasting). */
  lambda: number;
  /** Row i is mixed with row perm[i]. */
  perm: number[];
  /** CutMix: the pasted box, rows [y0, y1) and columns [x0, x1). */
  box?: { y0: number; y1: number; x0: number; x1: number };
}

/**
 * Draws the mix of a batch of `n` images of `size` px, or undefined when both α are 0 (then nothing
 * is drawn from `rng`). With both on, each batch takes one of the two with probability ½ (as timm).
 */
export function drawBatchMix(rng: Rng, n: number, size: number, alphas: { mixup: number; cutmix: number }): BatchMix | undefined {
  const { mixup, cutmix } = alphas;
  if (!(mixup > 0) && !(cutmix > 0)) return undefined;
  const kind = mixup > 0 && cutmix > 0 ? (rng.next() < 0.5 ? 'mixup' : 'cutmix') : mixup > 0 ? 'mixup' : 'cutmix';
  const lambda = sampleBeta(rng, kind === 'mixup' ? mixup : cutmix);
  const perm = rng.shuffle(Array.from({ length: n }, (_, i) => i));
  if (kind === 'mixup') return { kind, lambda, perm };
  // A box of (1 − λ) of the area, centred anywhere, clipped to the image; λ is then the share left.
  const side = Math.sqrt(1 - lambda);
  const cy = rng.int(size);
  const cx = rng.int(size);
  const half = (side * size) / 2;
  const box = {
    y0: Math.max(0, Math.round(cy - half)),
    y1: Math.min(size, Math.round(cy + half)),
    x0: Math.max(0, Math.round(cx - half)),
    x1: Math.min(size, Math.round(cx + half)),
  };
  return { kind, lambda: 1 - ((box.y1 - box.y0) * (box.x1 - box.x0)) / (size * size), perm, box };
}

/** Mixup of rows: λ·x + (1 − λ)·x[perm]. */
export function mixRows(x: tf.Tensor, mix: Pick<BatchMix, 'lambda' | 'perm'>): tf.Tensor {
  return tf.tidy(() => tf.add(tf.mul(x, mix.lambda), tf.mul(tf.gather(x, mix.perm), 1 - mix.lambda)));
}

/** CutMix of an NHWC image batch: the box of each image replaced by that of image perm[i]. */
export function pasteBox(images: tf.Tensor4D, mix: Pick<BatchMix, 'perm' | 'box'>): tf.Tensor4D {
  const [, h, w] = images.shape;
  const { y0, y1, x0, x1 } = mix.box!;
  return tf.tidy(() => {
    const inside = new Float32Array(h * w);
    for (let y = y0; y < y1; y++) inside.fill(1, y * w + x0, y * w + x1);
    const mask = tf.tensor4d(inside, [1, h, w, 1]);
    return tf.add(tf.mul(images, tf.sub(1, mask)), tf.mul(tf.gather(images, mix.perm), mask)) as tf.Tensor4D;
  });
}

/** λ·loss(labels) + (1 − λ)·loss(labels[perm]): for cross-entropy, the loss against the mixed target. */
export function mixedLoss(loss: Loss, logits: tf.Tensor2D, labels: tf.Tensor1D, mixedWith: tf.Tensor1D, lambda: number): tf.Scalar {
  return tf.add(tf.mul(loss(logits, labels), lambda), tf.mul(loss(logits, mixedWith), 1 - lambda)) as tf.Scalar;
}

/** The soft targets a mixed batch trains towards: λ·onehot(labels) + (1 − λ)·onehot(labels[perm]). */
export function mixedTargets(labels: ArrayLike<number>, mix: Pick<BatchMix, 'lambda' | 'perm'>, classes: number): number[][] {
  return Array.from({ length: labels.length }, (_, i) => {
    const row = new Array<number>(classes).fill(0);
    row[labels[i]!]! += mix.lambda;
    row[labels[mix.perm[i]!]!]! += 1 - mix.lambda;
    return row;
  });
}

/** A draw from Beta(α, α): X / (X + Y) with X, Y ~ Gamma(α) (Marsaglia–Tsang). */
export function sampleBeta(rng: Rng, alpha: number): number {
  const x = sampleGamma(rng, alpha);
  const y = sampleGamma(rng, alpha);
  return x + y > 0 ? x / (x + y) : 0.5;
}

function sampleGamma(rng: Rng, alpha: number): number {
  if (alpha < 1) return sampleGamma(rng, alpha + 1) * Math.pow(1 - rng.next(), 1 / alpha); // 1 − u ∈ (0, 1]
  const d = alpha - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = standardNormal(rng);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.next();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

function standardNormal(rng: Rng): number {
  const u = 1 - rng.next(); // (0, 1]
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}
