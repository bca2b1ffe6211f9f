import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fg from 'fast-glob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAll } from '../src/data/decode.js';
import { discoverLayout } from '../src/data/layout.js';
import { makeShapesDataset } from '../src/data/synthetic.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixture = path.join(repoRoot, 'fixtures/shapes');

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'finetune-shapes-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** sha256 of every file under dir, keyed by relative path. */
async function digest(dir: string): Promise<Record<string, string>> {
  const files = (await fg('**/*', { cwd: dir })).sort();
  const out: Record<string, string> = {};
  for (const f of files) out[f] = createHash('sha256').update(await fsp.readFile(path.join(dir, f))).digest('hex');
  return out;
}

/** Mean colour of the saturated pixels (the shape; backgrounds are muted) of an RGB image. */
function shapeColour(img: Uint8Array): [number, number, number] {
  const sum = [0, 0, 0];
  let n = 0;
  for (let i = 0; i < img.length; i += 3) {
    const r = img[i]!, g = img[i + 1]!, b = img[i + 2]!;
    const max = Math.max(r, g, b), min = Math.min(r, g, b);
    if (max - min < 90) continue;
    sum[0]! += r; sum[1]! += g; sum[2]! += b;
    n++;
  }
  return n === 0 ? [0, 0, 0] : [sum[0]! / n, sum[1]! / n, sum[2]! / n];
}

describe('makeShapesDataset', () => {
  it('writes train/valid/test folders that discoverLayout reads', async () => {
    const dir = path.join(tmp, 'a');
    const res = await makeShapesDataset(dir, { trainPerClass: 6, validPerClass: 2, testCount: 7, size: 32, seed: 1 });
    expect(res).toEqual({ classes: ['circle', 'square', 'triangle'], files: 3 * 6 + 3 * 2 + 7 });
    const layout = await discoverLayout(dir);
    expect(layout.classes).toEqual(['circle', 'square', 'triangle']);
    expect(layout.train).toHaveLength(18);
    expect(layout.valid).toHaveLength(6);
    expect(layout.validSource).toBe('valid');
    expect(layout.test.map((p) => path.basename(p))).toEqual([
      'circle_001.png', 'circle_004.png', 'square_002.png', 'square_005.png', 'triangle_000.png', 'triangle_003.png', 'triangle_006.png',
    ]);
    const { images, failures } = await decodeAll([...layout.train.map((f) => f.path), ...layout.test], { size: 32, resize: 'stretch' });
    expect(failures).toEqual([]);
    // no two images alike
    const hashes = new Set(images.map((im) => createHash('sha1').update(im!).digest('hex')));
    expect(hashes.size).toBe(images.length);
  });

  it('is deterministic from the seed', async () => {
    const opts = { trainPerClass: 3, validPerClass: 1, testCount: 3, size: 24 };
    await makeShapesDataset(path.join(tmp, 's1'), { ...opts, seed: 5 });
    await makeShapesDataset(path.join(tmp, 's2'), { ...opts, seed: 5 });
    await makeShapesDataset(path.join(tmp, 's3'), { ...opts, seed: 6 });
    const [d1, d2, d3] = await Promise.all(['s1', 's2', 's3'].map((s) => digest(path.join(tmp, s))));
    expect(d2).toEqual(d1);
    expect(Object.keys(d1)).toHaveLength(3 * 3 + 3 * 1 + 3);
    expect(Object.keys(d3)).toHaveLength(Object.keys(d1).length);
    const seen = new Set(Object.values(d1));
    expect(Object.values(d3).filter((h) => seen.has(h))).toEqual([]);
  });

  it('writes JPEGs, no valid/ folder when validPerClass is 0, and any class names', async () => {
    const dir = path.join(tmp, 'j');
    const res = await makeShapesDataset(dir, { classes: ['star', 'cats', 'ring', 'dogs'], trainPerClass: 2, validPerClass: 0, testCount: 0, format: 'jpeg' });
    expect(res.files).toBe(8);
    expect(existsSync(path.join(dir, 'valid'))).toBe(false);
    expect((await fg('**/*', { cwd: dir })).sort()).toEqual([
      'train/cats/cats_000.jpg', 'train/cats/cats_001.jpg', 'train/dogs/dogs_000.jpg', 'train/dogs/dogs_001.jpg',
      'train/ring/ring_000.jpg', 'train/ring/ring_001.jpg', 'train/star/star_000.jpg', 'train/star/star_001.jpg',
    ]);
    await expect(makeShapesDataset(dir, { classes: ['a', 'a'] })).rejects.toThrow(/distinct/);
    await expect(makeShapesDataset(dir, { size: 4 })).rejects.toThrow(/size/);
  });

  it('is easy: the shape colour alone classifies ≥ 90 % of validation images', async () => {
    const dir = path.join(tmp, 'easy');
    await makeShapesDataset(dir, { trainPerClass: 20, validPerClass: 20, testCount: 0, seed: 3 });
    const layout = await discoverLayout(dir);
    const decode = async (files: string[]) => (await decodeAll(files, { size: 64, resize: 'stretch' })).images.map((im) => shapeColour(im!));
    const trainX = await decode(layout.train.map((f) => f.path));
    const validX = await decode(layout.valid.map((f) => f.path));
    const centroids = layout.classes.map((_, c) => {
      const xs = trainX.filter((_, i) => layout.train[i]!.label === c);
      return [0, 1, 2].map((k) => xs.reduce((s, x) => s + x[k]!, 0) / xs.length);
    });
    const dist = (a: number[], b: number[]) => a.reduce((s, v, k) => s + (v - b[k]!) ** 2, 0);
    let correct = 0;
    validX.forEach((x, i) => {
      const pred = centroids.map((c) => dist(x, c)).reduce((best, d, c, all) => (d < all[best]! ? c : best), 0);
      if (pred === layout.valid[i]!.label) correct++;
    });
    expect(correct / validX.length).toBeGreaterThanOrEqual(0.9);
  });
});

describe('fixtures/shapes', () => {
  it.skipIf(!existsSync(fixture))('is the committed demo set: 3 classes, 30 + 10 per class, 12 test, under 400 KB', async () => {
    const layout = await discoverLayout(fixture);
    expect(layout.classes).toEqual(['circle', 'square', 'triangle']);
    expect(layout.train).toHaveLength(90);
    expect(layout.valid).toHaveLength(30);
    expect(layout.test).toHaveLength(12);
    const files = await fg('**/*', { cwd: fixture, absolute: true, stats: true });
    const bytes = files.reduce((s, f) => s + f.stats!.size, 0);
    expect(bytes).toBeLessThan(400 * 1024);
  });
});
