/**
 * Cross-validation folds over decoded images: stratified, seeded fold assignment, and sets that are
 * rows of another set (no image is copied or decoded again; the activation cache gathers their rows).
 */
import { UsageError } from '../errors.js';
import type { ImageSet } from './batches.js';
import type { PixelStore } from './pixel-store.js';
import { Rng } from './rng.js';

/** A set made of rows of `set` (in the order given), remembered as such for the activation cache. */
export function subsetOf(set: ImageSet, rows: readonly number[]): ImageSet {
  const store: PixelStore = { length: rows.length, get: (i) => set.images.get(rows[i]!) };
  return { images: store, labels: Int32Array.from(rows, (r) => set.labels[r]!), paths: rows.map((r) => set.paths[r]!), rowsOf: { set, rows } };
}

/** One set holding `a`'s images then `b`'s (train + valid pooled for cross-validation). */
export function concatSets(a: ImageSet, b: ImageSet): ImageSet {
  const n = a.images.length;
  const store: PixelStore = { length: n + b.images.length, get: (i) => (i < n ? a.images.get(i) : b.images.get(i - n)) };
  const labels = new Int32Array(n + b.labels.length);
  labels.set(a.labels);
  labels.set(b.labels, n);
  return { images: store, labels, paths: [...a.paths, ...b.paths] };
}

/**
 * Splits the indices 0…N−1 into `k` folds, each class spread as evenly as it can be (stratified, as
 * scikit-learn's StratifiedKFold): each class's images are shuffled with `seed` and dealt round the
 * folds, continuing where the previous class stopped so fold sizes differ by at most one. Returns
 * the validation indices of each fold, sorted. Throws a UsageError for k < 2 or k above the images
 * of the smallest class (a fold would then miss that class).
 */
export function stratifiedFolds(labels: ArrayLike<number>, k: number, seed: number): number[][] {
  if (!Number.isInteger(k) || k < 2) throw new UsageError(`--folds ${k} is not valid: use a whole number ≥ 2 (5 is common), or leave --folds out.`);
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (label < 0) continue;
    if (!byClass.has(label)) byClass.set(label, []);
    byClass.get(label)!.push(i);
  }
  const classes = [...byClass.keys()].sort((a, b) => a - b);
  const smallest = Math.min(...classes.map((c) => byClass.get(c)!.length));
  if (classes.length === 0 || k > smallest) {
    throw new UsageError(
      `--folds ${k} is more than the ${classes.length === 0 ? 0 : smallest} images of the smallest class: every fold must hold each class. Use --folds ${Math.max(2, Math.min(smallest, 5))} or fewer.`,
    );
  }
  const rng = new Rng(seed).fork('folds');
  const folds: number[][] = Array.from({ length: k }, () => []);
  let next = 0;
  for (const c of classes) {
    for (const i of rng.shuffle(byClass.get(c)!.slice())) {
      folds[next]!.push(i);
      next = (next + 1) % k;
    }
  }
  return folds.map((f) => f.sort((a, b) => a - b));
}

/** The rows of 0…n−1 not in `held` (a fold's training rows). */
export function complement(n: number, held: readonly number[]): number[] {
  const out = new Uint8Array(n);
  for (const i of held) out[i] = 1;
  const rest: number[] = [];
  for (let i = 0; i < n; i++) if (out[i] === 0) rest.push(i);
  return rest;
}
