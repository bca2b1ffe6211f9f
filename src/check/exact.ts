/**
 * Byte-identical files in a dataset: the same photo saved twice, often once in train and once in
 * valid or test (then validation accuracy is measured on images the model was trained on).
 * Only file sizes and SHA-256 digests: nothing is decoded.
 */
import { promises as fsp } from 'node:fs';
import { fileDigest } from '../io/digest.js';
import type { DatasetLayout } from '../data/types.js';

/** The splits a file can be in. */
export type SplitName = 'train' | 'valid' | 'test';

/** One image of the layout with its split and label (-1 for unlabelled test images). */
export interface SplitFile {
  path: string;
  split: SplitName;
  label: number;
}

/** Files with the same content. `splits[i]` is the split of `files[i]`. */
export interface DuplicateGroup {
  files: string[];
  splits: string[];
}

/** Every image of the layout, train first, then valid, then test (the layout's own order within each). */
export function layoutFiles(layout: DatasetLayout): SplitFile[] {
  return [
    ...layout.train.map((f) => ({ path: f.path, split: 'train' as const, label: f.label })),
    ...layout.valid.map((f) => ({ path: f.path, split: 'valid' as const, label: f.label })),
    ...layout.test.map((p) => ({ path: p, split: 'test' as const, label: -1 })),
  ];
}

/** True when the group's files are not all in one split. */
export function crossesSplits(group: DuplicateGroup): boolean {
  return new Set(group.splits).size > 1;
}

/** Runs `work` over `items` with at most `concurrency` in flight, keeping the input order. */
async function mapLimited<T, R>(items: readonly T[], concurrency: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await work(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}

function pushTo<K>(map: Map<K, number[]>, key: K, value: number): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

export interface ExactDuplicateOptions {
  onProgress?: (done: number, total: number) => void;
}

/**
 * Groups of byte-identical images anywhere in the layout (within a split and across splits), in
 * the order of their first file. Only files that share their size with another are hashed, so a
 * folder without duplicates costs one stat per file. Files that cannot be read are left out (the
 * decoding step reports them).
 */
export async function exactDuplicateGroups(layout: DatasetLayout, options: ExactDuplicateOptions = {}): Promise<DuplicateGroup[]> {
  const files = layoutFiles(layout);
  const sizes = await mapLimited(files, 16, (f) => fsp.stat(f.path).then((s) => s.size, () => -1));
  const bySize = new Map<number, number[]>();
  sizes.forEach((size, i) => {
    if (size > 0) pushTo(bySize, size, i);
  });
  const candidates = [...bySize.values()].filter((g) => g.length > 1).flat().sort((a, b) => a - b);
  let done = 0;
  const digests = await mapLimited(candidates, 8, async (i) => {
    const digest = await fileDigest(files[i]!.path).catch(() => undefined);
    options.onProgress?.(++done, candidates.length);
    return digest;
  });
  const byDigest = new Map<string, number[]>();
  candidates.forEach((i, k) => {
    const d = digests[k];
    if (d !== undefined) pushTo(byDigest, d, i);
  });
  return [...byDigest.values()]
    .filter((g) => g.length > 1)
    .sort((a, b) => a[0]! - b[0]!)
    .map((g) => ({ files: g.map((i) => files[i]!.path), splits: g.map((i) => files[i]!.split) }));
}

/**
 * The byte-identical groups whose files lie in more than one split (train, valid, test): images a
 * model would be validated or tested on after training on them. Cheap enough to run before every
 * training run (sizes, then hashes of same-size files only; no decoding). Paths are absolute, as
 * in the layout.
 */
export async function exactCrossSplitDuplicates(layout: DatasetLayout): Promise<{ files: string[]; splits: string[] }[]> {
  return (await exactDuplicateGroups(layout)).filter(crossesSplits);
}
