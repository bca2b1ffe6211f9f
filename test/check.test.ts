/**
 * `finetune check`'s parts on images and numbers made here (no ../shared needed): perceptual
 * hashes, exact duplicates across splits, image headers, the label probe and its ranking, the
 * imbalance advice, and the command's usage errors. The planted-problem run on real photos is in
 * check-planted.test.ts.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertOutsideData, imbalanceOf } from '../src/check/check.js';
import { exactCrossSplitDuplicates, exactDuplicateGroups } from '../src/check/exact.js';
import { readImageHeader } from '../src/check/inspect.js';
import { outOfFoldProbabilities, rankSuspects, stratifiedFolds } from '../src/check/labels.js';
import { isNearDuplicate, MIN_CORRELATION } from '../src/check/near.js';
import { cropHashes, cropTolerantDistance, hammingDistance, perceptualHash } from '../src/check/phash.js';
import { alignedCorrelation, alignedThumbnails } from '../src/check/verify.js';
import { decodeImage } from '../src/data/decode.js';
import { discoverLayout } from '../src/data/layout.js';
import { Rng } from '../src/data/rng.js';
import { initEngine } from '../src/engine/backend.js';
import { FinetuneError } from '../src/errors.js';
import { runCli } from './helpers/run-cli.js';
import { repoRoot } from './helpers/shared.js';

let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-check-'));
  await initEngine('wasm');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A photo-like test picture: smooth random colour blobs on a gradient, different for each seed
 * (two seeds share no structure, as two different photos do), as JPEG.
 */
async function blobPhoto(seed: number, width = 300, height = 220): Promise<Buffer> {
  const rng = new Rng(seed);
  const blobs = Array.from({ length: 7 }, () => ({
    x: rng.next() * width,
    y: rng.next() * height,
    r: 20 + rng.next() * 60,
    c: [rng.next() * 255, rng.next() * 255, rng.next() * 255],
  }));
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const rgb = [(x / width) * 120, (y / height) * 120, 60];
      for (const b of blobs) {
        const w = Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.r * b.r));
        for (let c = 0; c < 3; c++) rgb[c] = rgb[c]! * (1 - w) + b.c[c]! * w;
      }
      px.set(rgb.map((v) => Math.round(v)), (y * width + x) * 3);
    }
  }
  return sharp(px, { raw: { width, height, channels: 3 } }).jpeg({ quality: 92 }).toBuffer();
}

const SIZE = 128;
const decode = (b: Buffer) => decodeImage(b, { size: SIZE, resize: 'stretch' });

describe('perceptual hash', () => {
  it('counts differing bits', () => {
    expect(hammingDistance([0, 0], [0xffffffff, 0x7fffffff])).toBe(63);
    expect(hammingDistance([0b1011, 0], [0b0001, 1])).toBe(3);
  });

  it('finds resized, re-encoded, brightened and cropped copies close, and different pictures far', async () => {
    const original = await blobPhoto(1);
    const copies = {
      'half size, JPEG quality 60': await sharp(original).resize(150).jpeg({ quality: 60 }).toBuffer(),
      '+20 % brightness': await sharp(original).modulate({ brightness: 1.2 }).jpeg().toBuffer(),
      '10 % cut from the left and top': await sharp(original).extract({ left: 30, top: 22, width: 270, height: 198 }).jpeg().toBuffer(),
    };
    const a = cropHashes(await decode(original), SIZE);
    expect(a).toHaveLength(6);
    const distances: Record<string, number> = {};
    for (const [name, bytes] of Object.entries(copies)) distances[name] = cropTolerantDistance(a, cropHashes(await decode(bytes), SIZE));
    for (const [name, d] of Object.entries(distances)) expect(d, name).toBeLessThanOrEqual(8);
    // The whole-picture hash alone misses the crop: that is what the crops are for.
    const cropped = await decode(copies['10 % cut from the left and top']);
    expect(hammingDistance(perceptualHash(await decode(original), SIZE), perceptualHash(cropped, SIZE))).toBeGreaterThan(distances['10 % cut from the left and top']!);
    for (const seed of [2, 3, 4, 5]) {
      expect(cropTolerantDistance(a, cropHashes(await decode(await blobPhoto(seed)), SIZE)), `picture ${seed}`).toBeGreaterThan(10);
    }
  });

  it('calls a pair a near-duplicate only when hash, thumbnails and features agree', () => {
    const copy = { distance: 4, cosine: 0.9, correlation: 0.98 };
    expect(isNearDuplicate(copy)).toBe(true);
    expect(isNearDuplicate({ ...copy, distance: 12 })).toBe(false); // the hash finds the candidates
    expect(isNearDuplicate({ ...copy, correlation: 0.9 })).toBe(false); // same layout, other picture
    expect(isNearDuplicate({ ...copy, cosine: 0.3 })).toBe(false); // same light and colour, other content
  });

  it('correlates the thumbnails of a copy almost perfectly, and of another picture far less', async () => {
    const original = alignedThumbnails(await decode(await blobPhoto(1)), SIZE);
    const copies = [
      await sharp(await blobPhoto(1)).resize(150).jpeg({ quality: 60 }).toBuffer(),
      await sharp(await blobPhoto(1)).modulate({ brightness: 1.2 }).jpeg().toBuffer(),
      await sharp(await blobPhoto(1)).extract({ left: 30, top: 22, width: 270, height: 198 }).jpeg().toBuffer(),
    ];
    for (const bytes of copies) expect(alignedCorrelation(original, alignedThumbnails(await decode(bytes), SIZE))).toBeGreaterThan(MIN_CORRELATION);
    for (const seed of [2, 3]) {
      expect(alignedCorrelation(original, alignedThumbnails(await decode(await blobPhoto(seed)), SIZE))).toBeLessThan(MIN_CORRELATION - 0.2);
    }
    // A colour change alone (here: red and blue swapped) is not a copy: thumbnails are compared in colour.
    const swapped = await sharp(await blobPhoto(1)).recomb([[0, 0, 1], [0, 1, 0], [1, 0, 0]]).jpeg().toBuffer();
    expect(alignedCorrelation(original, alignedThumbnails(await decode(swapped), SIZE))).toBeLessThan(MIN_CORRELATION);
  });
});

describe('exact duplicates', () => {
  it('finds byte copies within and across splits, hashing only same-size files', async () => {
    const root = path.join(dir, 'exact');
    const put = (rel: string, bytes: Buffer | string) => {
      mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      writeFileSync(path.join(root, rel), bytes);
    };
    const photos = await Promise.all([11, 12, 13, 14, 15].map((s) => blobPhoto(s, 120, 90)));
    put('train/a/1.jpg', photos[0]!);
    put('train/a/2.jpg', photos[1]!);
    put('train/a/2-again.jpg', photos[1]!); // within train
    put('train/b/3.jpg', photos[2]!);
    put('valid/a/1-copy.jpg', photos[0]!); // train → valid
    put('valid/b/4.jpg', photos[3]!);
    put('test/3-copy.jpg', photos[2]!); // train → test
    put('test/5.jpg', photos[4]!);
    // Same size, different bytes: not duplicates (these are never decoded here).
    put('train/b/same-size-1.jpg', 'AAAA');
    put('valid/b/same-size-2.jpg', 'BBBB');
    const layout = await discoverLayout(root);

    const all = await exactDuplicateGroups(layout);
    const rel = (g: { files: string[]; splits: string[] }) => ({ files: g.files.map((f) => path.relative(root, f)), splits: g.splits });
    expect(all.map(rel)).toEqual([
      { files: ['train/a/1.jpg', 'valid/a/1-copy.jpg'], splits: ['train', 'valid'] },
      { files: ['train/a/2-again.jpg', 'train/a/2.jpg'], splits: ['train', 'train'] },
      { files: ['train/b/3.jpg', 'test/3-copy.jpg'], splits: ['train', 'test'] },
    ]);
    expect((await exactCrossSplitDuplicates(layout)).map(rel)).toEqual([
      { files: ['train/a/1.jpg', 'valid/a/1-copy.jpg'], splits: ['train', 'valid'] },
      { files: ['train/b/3.jpg', 'test/3-copy.jpg'], splits: ['train', 'test'] },
    ]);
  });
});

describe('image headers', () => {
  it('notes tiny images, CMYK, grayscale, 16-bit, transparency and EXIF rotation, and nothing on a plain photo', async () => {
    const photo = await blobPhoto(21, 80, 60);
    const files: Record<string, Buffer> = {
      'plain.jpg': photo,
      'tiny.png': await sharp(photo).resize(20, 15).png().toBuffer(),
      'cmyk.jpg': await sharp(photo).toColourspace('cmyk').jpeg().toBuffer(),
      'grey.png': await sharp(photo).toColourspace('b-w').png().toBuffer(),
      'deep.png': await sharp(photo).toColourspace('rgb16').png().toBuffer(),
      'alpha.png': await sharp(photo).ensureAlpha(0.5).png().toBuffer(),
      'rotated.jpg': await sharp(photo).withMetadata({ orientation: 6 }).jpeg().toBuffer(),
    };
    const kinds: Record<string, string[]> = {};
    for (const [name, bytes] of Object.entries(files)) {
      const file = path.join(dir, 'headers', name);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, bytes);
      kinds[name] = (await readImageHeader(file))!.issues.map((i) => i.kind);
    }
    expect(kinds).toEqual({
      'plain.jpg': [],
      'tiny.png': ['tiny'],
      'cmyk.jpg': ['cmyk'],
      'grey.png': ['grayscale'],
      'deep.png': ['16-bit'],
      'alpha.png': ['alpha'],
      'rotated.jpg': ['exif-rotated'],
    });
    writeFileSync(path.join(dir, 'headers', 'text.jpg'), 'not an image');
    expect(await readImageHeader(path.join(dir, 'headers', 'text.jpg'))).toBeUndefined();
  });
});

describe('label probe', () => {
  it('deals every class evenly over the folds', () => {
    const labels = [...Array(10).fill(0), ...Array(5).fill(1)];
    const folds = stratifiedFolds(labels, 5, 42);
    for (let f = 0; f < 5; f++) {
      expect(labels.filter((l, i) => l === 0 && folds[i] === f)).toHaveLength(2);
      expect(labels.filter((l, i) => l === 1 && folds[i] === f)).toHaveLength(1);
    }
    expect(stratifiedFolds(labels, 5, 42)).toEqual(folds); // seeded
  });

  it('ranks the flipped labels of separable features first', async () => {
    // Three classes of 40 points in 16 dimensions around distinct centres; 6 labels flipped.
    const rng = new Rng(7);
    const dim = 16;
    const n = 120;
    const truth = Int32Array.from({ length: n }, (_, i) => i % 3);
    const x = new Float32Array(n * dim);
    for (let i = 0; i < n; i++) {
      for (let d = 0; d < dim; d++) x[i * dim + d] = (d % 3 === truth[i] ? 2 : 0) + (rng.next() - 0.5) * 1.5;
    }
    const labels = truth.slice();
    const flipped = [3, 17, 40, 58, 81, 99];
    for (const i of flipped) labels[i] = (truth[i]! + 1) % 3;
    const probs = await outOfFoldProbabilities(x, dim, labels, 3, { folds: 5, steps: 200 });
    expect(probs).toHaveLength(n * 3);
    for (let i = 0; i < n; i++) expect(probs[i * 3]! + probs[i * 3 + 1]! + probs[i * 3 + 2]!).toBeCloseTo(1, 4);
    const suspects = rankSuspects(probs, labels, 3);
    expect(suspects.slice(0, flipped.length).map((s) => s.index).sort((a, b) => a - b)).toEqual(flipped);
    for (const s of suspects.slice(0, flipped.length)) expect(s.predicted).toBe(truth[s.index]);
  });

  it('flags an image only when another class reaches its own average confidence, ranked by margin', () => {
    const labels = Int32Array.from([0, 0, 0, 1, 1, 1]);
    const probs = Float32Array.from([
      0.9, 0.1, // fine
      0.95, 0.05, // fine
      0.45, 0.55, // class 1 wins, but below class 1's average confidence (0.553): not flagged
      0.3, 0.7, // fine
      0.82, 0.18, // class 0 wins with 0.82 ≥ class 0's average confidence (0.767): suspect, margin 0.64
      0.22, 0.78, // fine
    ]);
    expect(rankSuspects(probs, labels, 2).map((s) => [s.index, s.predicted, Number(s.score.toFixed(2))])).toEqual([[4, 0, 0.64]]);
  });
});

describe('imbalance', () => {
  it('advises by the ratio of the largest to the smallest training class', () => {
    expect(imbalanceOf({ a: 100, b: 60 }).advice).toMatch(/nothing to do/);
    const mild = imbalanceOf({ a: 100, b: 40 });
    expect(mild.ratio).toBe(2.5);
    expect(mild.advice).toMatch(/--class-weight auto/);
    const strong = imbalanceOf({ a: 400, b: 100, c: 50 });
    expect(strong).toMatchObject({ ratio: 8, largest: { class: 'a', count: 400 }, smallest: { class: 'c', count: 50 } });
    expect(strong.advice).toMatch(/balanced accuracy.*'c'/);
  });
});

describe('finetune check usage', () => {
  it('refuses an --out inside the data folder before any work', () => {
    expect(() => assertOutsideData('/data/x/report', '/data/x')).toThrow(FinetuneError);
    expect(() => assertOutsideData('/data/x', '/data/x')).toThrow(/never writes there/);
    expect(() => assertOutsideData('/data/x-report', '/data/x')).not.toThrow();
  });

  it.each([
    [['--out', 'fixtures/shapes/out'], /inside the data folder/],
    [['--alpha', '0.3'], /--alpha 0.3 is not available/],
    [['--weights', 'none'], /--weights none/],
    [['--resize', 'squash'], /--resize/],
    [['--val-split', '2'], /validation split/],
  ])('finetune check fixtures/shapes %j: exit 2 with one line', async (args, message) => {
    const run = await runCli(process.execPath, [path.join(repoRoot, 'bin/finetune.js'), 'check', 'fixtures/shapes', ...args], {
      cwd: repoRoot,
      timeout: 60_000,
    });
    expect(run.stderr).toMatch(message);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stdout).toBe('');
    expect(run.status).toBe(2);
  });
});
