/**
 * Decoding throughput: image files → size × size × 3 bytes through the project's loader
 * (`loadImageData`: sharp, EXIF orientation, sRGB, resize; several images at a time). Real JPEGs
 * from ../shared/datasets/hymenoptera_data when that folder is there, otherwise generated ones.
 * Independent of the tfjs backend (sharp runs on the CPU).
 */
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import fg from 'fast-glob';
import { loadImageData } from '../src/data/image-data.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import type { DatasetLayout } from '../src/data/types.js';
import { round } from './measure.js';

export interface DecodeResult {
  source: 'hymenoptera' | 'generated';
  /** Where the files came from, and how they were made when generated. */
  note: string;
  files: number;
  /** Average size of a source file. */
  meanFileBytes: number;
  /** Output size (px) and resize mode. */
  size: number;
  resize: 'stretch';
  /** Images decoded at the same time (loadImageData's default: the number of CPUs). */
  concurrency: number;
  /** Timed passes over all the files (after a warm-up on a few of them). */
  passes: number;
  imagesDecoded: number;
  seconds: number;
  imagesPerSecond: number;
  /** Files that failed to decode (should be 0). */
  failed: number;
}

export interface DecodeOptions {
  sharedDir: string;
  size: number;
  /** Use at most this many files (quick mode). */
  maxFiles?: number;
  /** Keep doing passes until this many seconds were timed… */
  minSeconds: number;
  /** …or this many passes were made. */
  maxPasses: number;
  /** Scratch folder for generated images. */
  tmpDir: string;
}

/** The JPEG files of the shared hymenoptera set, sorted, or undefined when it is absent. */
export async function hymenopteraJpegs(sharedDir: string): Promise<string[] | undefined> {
  const root = path.join(sharedDir, 'datasets/hymenoptera_data');
  if (!existsSync(root)) return undefined;
  const files = await fg('**/*.{jpg,jpeg,JPG,JPEG}', { cwd: root, absolute: true, onlyFiles: true });
  return files.length > 0 ? files.sort() : undefined;
}

function layoutOf(files: string[]): DatasetLayout {
  return {
    root: path.dirname(files[0]!),
    classes: ['all'],
    train: files.map((p) => ({ path: p, label: 0 })),
    valid: [],
    test: [],
    validSource: 'none',
    ignored: { hidden: 0, notImage: 0 },
    skipped: [],
  };
}

export async function benchDecode(options: DecodeOptions, log: (line: string) => void = () => {}): Promise<DecodeResult> {
  let files = await hymenopteraJpegs(options.sharedDir);
  let source: DecodeResult['source'] = 'hymenoptera';
  let note: string;
  if (files) {
    note = `real JPEG photos of ${path.join(options.sharedDir, 'datasets/hymenoptera_data')} (train + val)`;
  } else {
    source = 'generated';
    const dir = path.join(options.tmpDir, 'decode-jpegs');
    const count = Math.min(options.maxFiles ?? 150, 150);
    await makeShapesDataset(dir, { trainPerClass: Math.ceil(count / 3), validPerClass: 0, testCount: 0, size: 480, seed: 1, format: 'jpeg' });
    files = (await fg('**/*.jpg', { cwd: dir, absolute: true })).sort();
    note = `${files.length} generated 480×480 JPEGs (makeShapesDataset): ${path.join(options.sharedDir, 'datasets/hymenoptera_data')} is absent`;
  }
  if (options.maxFiles !== undefined) files = files.slice(0, options.maxFiles);
  const sizes = await Promise.all(files.map(async (f) => (await fsp.stat(f)).size));
  const concurrency = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  log(`decode: ${files.length} files at ${options.size} px (${source})…`);

  // Warm-up: sharp/libvips start-up, and the files into the OS cache.
  (await loadImageData(layoutOf(files.slice(0, 8)), { size: options.size, resize: 'stretch' })).dispose();
  for (const f of files) await fsp.readFile(f);

  let seconds = 0;
  let passes = 0;
  let decoded = 0;
  let failed = 0;
  const layout = layoutOf(files);
  while (passes < options.maxPasses && (passes === 0 || seconds < options.minSeconds)) {
    const t = performance.now();
    const data = await loadImageData(layout, { size: options.size, resize: 'stretch' });
    seconds += (performance.now() - t) / 1000;
    decoded += data.train.images.length;
    failed += data.skipped.length;
    data.dispose();
    passes++;
  }
  const result: DecodeResult = {
    source,
    note,
    files: files.length,
    meanFileBytes: Math.round(sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length)),
    size: options.size,
    resize: 'stretch',
    concurrency,
    passes,
    imagesDecoded: decoded,
    seconds: round(seconds, 3),
    imagesPerSecond: round(decoded / seconds, 1),
    failed,
  };
  log(`  ${result.imagesPerSecond} img/s (${decoded} images in ${result.seconds} s)`);
  return result;
}
