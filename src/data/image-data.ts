import { decodeAllCached, FileDigests } from '../cache/decode-cache.js';
import type { DiskCache } from '../cache/disk-cache.js';
import type { ImageSet } from './batches.js';
import { decodeAll, type DecodeOptions } from './decode.js';
import { SpillingPixelStore } from './pixel-store.js';
import type { DatasetLayout, LabelledFile, SkippedFile } from './types.js';

/** The decoded splits of a dataset, and every file that could not be used. */
export interface ImageData {
  classes: string[];
  train: ImageSet;
  valid: ImageSet;
  /** Unlabelled images (labels all -1). */
  test: ImageSet;
  /** Labelled test images (test/<class>/), evaluated after training; empty when there are none. */
  testLabelled: ImageSet;
  skipped: SkippedFile[];
  /** How many images went to the spill file because the memory budget was full. */
  spilled: number;
  /** Bytes of decoded images held in memory (the rest are in the spill file). */
  memoryBytes: number;
  /** How many images came decoded from the persistent cache (`diskCache`), not from sharp. */
  fromCache: number;
  /** Deletes the spill file, if any. */
  dispose(): void;
}

export interface LoadImageDataOptions extends DecodeOptions {
  /** Memory for decoded images, in bytes; past it they are kept in a temporary file. Default 4 GiB. */
  cacheBytes?: number;
  /** Folder for that file (default: the OS temporary folder). */
  spillDir?: string;
  /** The persistent cache between runs: decoded images found there are not decoded again, the others are stored. */
  diskCache?: DiskCache;
  onProgress?: (done: number, total: number) => void;
}

/** Files decoded per round: bounds the memory that decoding itself holds at once. */
const DECODE_CHUNK = 64;

/**
 * Decodes every image of a layout once, at the backbone's input size (decoding is the slow part of
 * reading images; keeping the resized bytes makes later epochs free of it). Files sharp cannot read
 * are dropped from their split and listed in `skipped` with the reason.
 */
export async function loadImageData(layout: DatasetLayout, options: LoadImageDataOptions): Promise<ImageData> {
  const splits: { name: string; files: LabelledFile[] }[] = [
    { name: 'train', files: layout.train },
    { name: 'valid', files: layout.valid },
    { name: 'test', files: layout.test.map((path) => ({ path, label: -1 })) },
    { name: 'test', files: layout.testLabelled ?? [] },
  ];
  const total = splits.reduce((n, s) => n + s.files.length, 0);
  const bytesPerImage = options.size * options.size * 3;
  let budget = options.cacheBytes ?? 4 * 1024 ** 3;
  const skipped: SkippedFile[] = [...layout.skipped];
  const stores: SpillingPixelStore[] = [];
  const sets: ImageSet[] = [];
  let done = 0;
  let fromCache = 0;
  const digests = options.diskCache ? await FileDigests.load(options.diskCache.dir) : undefined;
  for (const split of splits) {
    // One budget shared by the splits, in order: train first, as it is read most.
    const store = new SpillingPixelStore(bytesPerImage, budget, options.spillDir);
    stores.push(store);
    const labels: number[] = [];
    const paths: string[] = [];
    for (let start = 0; start < split.files.length; start += DECODE_CHUNK) {
      const chunk = split.files.slice(start, start + DECODE_CHUNK);
      const decodeOptions = { ...options, onProgress: (n: number) => options.onProgress?.(done + n, total) };
      const chunkPaths = chunk.map((f) => f.path);
      const { images, failures, fromCache: hits } =
        options.diskCache && digests
          ? await decodeAllCached(chunkPaths, decodeOptions, options.diskCache, digests)
          : { ...(await decodeAll(chunkPaths, decodeOptions)), fromCache: 0 };
      fromCache += hits;
      const reasons = new Map(failures.map((f) => [f.path, f.reason]));
      chunk.forEach((file, i) => {
        const pixels = images[i];
        if (pixels === undefined) {
          skipped.push({ path: file.path, split: split.name, reason: reasons.get(file.path) ?? 'cannot decode' });
          return;
        }
        store.push(pixels);
        paths.push(file.path);
        labels.push(file.label);
      });
      done += chunk.length;
    }
    budget = Math.max(0, budget - (store.length - store.spilledCount) * bytesPerImage);
    sets.push({ images: store, labels: Int32Array.from(labels), paths });
  }
  await digests?.save();
  return {
    classes: layout.classes,
    train: sets[0]!,
    valid: sets[1]!,
    test: sets[2]!,
    testLabelled: sets[3]!,
    skipped,
    spilled: stores.reduce((n, s) => n + s.spilledCount, 0),
    memoryBytes: stores.reduce((n, s) => n + (s.length - s.spilledCount) * bytesPerImage, 0),
    fromCache,
    dispose: () => stores.forEach((s) => s.close()),
  };
}
