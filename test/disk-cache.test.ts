import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAllCached, FileDigests } from '../src/cache/decode-cache.js';
import { DiskCache } from '../src/cache/disk-cache.js';
import { mobileNetV2 } from '../src/backbones/mobilenet_v2.js';
import { CAFFE_PREPROCESSING, MOBILENET_PREPROCESSING, type Preprocessing } from '../src/backbones/preprocess.js';
import { vgg16 } from '../src/backbones/vgg16.js';
import { seedRandomWeights } from '../src/backbones/weights.js';
import type { ImageSet } from '../src/data/batches.js';
import { decodeImage } from '../src/data/decode.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { Rng } from '../src/data/rng.js';
import type { AugmentLevel } from '../src/data/types.js';
import { initEngine } from '../src/engine/backend.js';
import { buildProgram } from '../src/cli/main.js';
import { fineTune, type FineTuneOptions } from '../src/finetune.js';
import { ActivationCache } from '../src/train/activation-cache.js';
import { SplitModel, splittableAfter } from '../src/train/graph.js';
import { runCli } from './helpers/run-cli.js';
import { repoRoot, needShared, sharedPath, TM_WEIGHTS } from './helpers/shared.js';

let dir: string;
beforeAll(async () => {
  await initEngine('wasm');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-disk-cache-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const bytes = (...values: number[]) => Uint8Array.from(values);
const entryFiles = (cacheDir: string, kind: string) =>
  readdirSync(path.join(cacheDir, kind), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));

describe('DiskCache entries', () => {
  it('gives back what was stored, and nothing for another key', async () => {
    const cache = new DiskCache({ dir: path.join(dir, 'roundtrip') });
    await cache.put('frozen', 'key a', bytes(1, 2, 3));
    expect(await cache.get('frozen', 'key a')).toEqual(bytes(1, 2, 3));
    expect(await cache.get('frozen', 'key b')).toBeUndefined();
    expect(await cache.get('pixels', 'key a')).toBeUndefined(); // kinds are apart
    expect(cache.counts.frozen).toMatchObject({ hits: 1, lookups: 2, written: 1 });
  });

  it('a truncated, altered or foreign entry is not trusted: it is deleted and reads as missing', async () => {
    const cache = new DiskCache({ dir: path.join(dir, 'corrupt') });
    const payload = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    for (const key of ['cut', 'flipped', 'moved', 'empty', 'other']) await cache.put('frozen', key, payload);
    const file = (key: string) => cache.fileFor('frozen', key);
    // A run killed while the OS wrote the file: the rename happened, half the bytes did not.
    writeFileSync(file('cut'), readFileSync(file('cut')).subarray(0, 600));
    const flipped = readFileSync(file('flipped'));
    flipped[flipped.length - 10] ^= 1;
    writeFileSync(file('flipped'), flipped);
    cpSync(file('other'), file('moved')); // a whole entry, but its header names another key
    writeFileSync(file('empty'), '');
    for (const key of ['cut', 'flipped', 'moved', 'empty']) {
      expect(await cache.get('frozen', key), key).toBeUndefined();
      expect(() => statSync(file(key)), key).toThrow(/ENOENT/);
    }
    expect(cache.counts.frozen!.corrupt).toBe(4);
  });

  it('eviction removes the least recently used entries down to the cap, and stale temporary files', async () => {
    const cacheDir = path.join(dir, 'evict');
    const cache = new DiskCache({ dir: cacheDir, maxBytes: 2500 });
    const kb = new Uint8Array(1000);
    for (const [i, key] of ['old', 'used', 'new'].entries()) {
      await cache.put('pixels', key, kb);
      const t = new Date(Date.now() - (10 - i) * 60_000);
      utimesSync(cache.fileFor('pixels', key), t, t);
    }
    await cache.get('pixels', 'old'); // a hit makes it the most recent
    const stale = path.join(path.dirname(cache.fileFor('pixels', 'new')), '.tmp-1-dead');
    writeFileSync(stale, 'half an entry');
    const hourAgo = new Date(Date.now() - 2 * 3600_000);
    utimesSync(stale, hourAgo, hourAgo);
    const before = await cache.stats();
    expect(before.entries).toBe(3);
    const removed = await cache.evict();
    expect(removed.entries).toBe(1);
    expect(await cache.get('pixels', 'used')).toBeUndefined();
    expect(await cache.get('pixels', 'old')).toBeDefined();
    expect(await cache.get('pixels', 'new')).toBeDefined();
    expect(() => statSync(stale)).toThrow(/ENOENT/);
    const after = await cache.stats();
    expect(after.bytes).toBeLessThanOrEqual(2500);
    expect(after.kinds.pixels!.entries).toBe(2);
  });

  it('clear removes the entries and the digest memo, and leaves files it did not write', async () => {
    const cacheDir = path.join(dir, 'clear');
    const cache = new DiskCache({ dir: cacheDir });
    await cache.put('frozen', 'a', bytes(1));
    await cache.put('pixels', 'b', bytes(2));
    writeFileSync(path.join(cacheDir, 'file-digests.json'), '{}');
    writeFileSync(path.join(cacheDir, 'notes.txt'), 'mine');
    expect(await cache.clear()).toMatchObject({ entries: 2 });
    expect(readdirSync(cacheDir)).toEqual(['notes.txt']);
    expect((await cache.stats()).entries).toBe(0);
  });
});

describe('decoded images: keyed by file content, size, resize mode', () => {
  it('a hit gives the same pixels as decoding; an edited file (same size and mtime), another size or resize mode miss', async () => {
    const cacheDir = path.join(dir, 'decode');
    const images = path.join(dir, 'decode-images');
    await fsp.mkdir(images, { recursive: true });
    // Two pictures whose files have one length (uncompressed TIFF of one size): an edit that keeps the length.
    const picture = (seed: number) => {
      const rng = new Rng(seed);
      return sharp(Buffer.from(Array.from({ length: 40 * 30 * 3 }, () => rng.int(256))), { raw: { width: 40, height: 30, channels: 3 } })
        .tiff({ compression: 'none' })
        .toBuffer();
    };
    const [first, second] = await Promise.all([picture(1), picture(2)]);
    expect(second!.length).toBe(first!.length);
    const file = path.join(images, 'a.tif');
    writeFileSync(file, first!);
    utimesSync(file, 1_700_000_000, 1_700_000_000); // a whole second, which utimes sets back exactly
    const cache = new DiskCache({ dir: cacheDir });
    const decode = async (size: number, resize: 'stretch' | 'crop') => {
      const digests = await FileDigests.load(cacheDir);
      const result = await decodeAllCached([file], { size, resize }, cache, digests);
      await digests.save();
      return result;
    };
    const cold = await decode(48, 'stretch');
    expect(cold.fromCache).toBe(0);
    const warm = await decode(48, 'stretch');
    expect(warm.fromCache).toBe(1);
    expect(Buffer.from(warm.images[0]!).equals(Buffer.from(await decodeImage(file, { size: 48, resize: 'stretch' })))).toBe(true);
    expect((await decode(40, 'stretch')).fromCache).toBe(0);
    expect((await decode(48, 'crop')).fromCache).toBe(0);

    // Another picture in the same file, with the same length and mtime: the digest memo sees the
    // ctime change, hashes it again, and the stale entry is not used.
    const before = statSync(file);
    writeFileSync(file, second!);
    utimesSync(file, 1_700_000_000, 1_700_000_000);
    expect(statSync(file)).toMatchObject({ size: before.size, mtimeMs: before.mtimeMs });
    const edited = await decode(48, 'stretch');
    expect(edited.fromCache).toBe(0);
    expect(Buffer.from(edited.images[0]!).equals(Buffer.from(await decodeImage(file, { size: 48, resize: 'stretch' })))).toBe(true);
    expect(Buffer.from(edited.images[0]!).equals(Buffer.from(warm.images[0]!))).toBe(false);
  });
});

describe('frozen outputs: keyed by pixels, weights, backbone, split, preprocessing and augmentation', () => {
  const SIZE = 32;
  let set: ImageSet;
  let cacheDir: string;

  beforeAll(() => {
    cacheDir = path.join(dir, 'frozen');
    const rng = new Rng(11);
    const images = Array.from({ length: 6 }, () => Uint8Array.from({ length: SIZE * SIZE * 3 }, () => rng.int(256)));
    set = { images: new MemoryPixelStore(images), labels: Int32Array.from([0, 1, 0, 1, 0, 1]), paths: images.map((_, i) => `img${i}`) };
  });

  function backbone(name: 'mobilenetv2' | 'vgg16', alpha = 0.35, seed = 1): tf.LayersModel {
    const model = name === 'vgg16' ? vgg16({ imageSize: SIZE }) : mobileNetV2({ alpha, imageSize: SIZE });
    seedRandomWeights(model, seed);
    return model;
  }

  /** The frozen outputs of `model` at a boundary through a fresh ActivationCache (as a new run would), and how many came from disk. */
  async function frozen(
    model: tf.LayersModel,
    options: { boundary?: 'top' | 'middle'; copies?: number; seed?: number; augment?: AugmentLevel; preprocessing?: Preprocessing; images?: ImageSet } = {},
  ) {
    const cuts = splittableAfter(model)
      .map((ok, i) => (ok && i > 0 ? i : -1))
      .filter((i) => i > 0);
    const boundary = options.boundary === 'middle' ? cuts[Math.floor(cuts.length / 2)]! : cuts.at(-1)!;
    const cache = new ActivationCache(model, {
      imageSize: SIZE,
      preprocessing: options.preprocessing ?? MOBILENET_PREPROCESSING,
      batchSize: 4,
      budgetBytes: 1e9,
      augment: options.augment ?? 'light',
      rng: new Rng(options.seed ?? 42),
      disk: new DiskCache({ dir: cacheDir }),
    });
    const split = new SplitModel(model, boundary);
    const tensor = (await cache.outputs(options.images ?? set, split, options.copies ?? 0))!;
    const values = (await tensor.data()) as Float32Array;
    cache.dispose();
    split.dispose();
    return { values, hits: cache.persisted.hits, rows: cache.persisted.rows };
  }

  it('the same model and images hit, with the values computed the first time; anything that changes them misses', async () => {
    const mobile = backbone('mobilenetv2');
    const first = await frozen(mobile);
    expect(first).toMatchObject({ hits: 0, rows: 6 });
    const tensors = tf.memory().numTensors;
    const again = await frozen(mobile);
    expect(again).toMatchObject({ hits: 6, rows: 6 });
    expect(tf.memory().numTensors).toBe(tensors); // nothing left behind by a run through the cache
    expect(Buffer.from(again.values.buffer).equals(Buffer.from(first.values.buffer))).toBe(true);

    expect((await frozen(backbone('mobilenetv2', 0.35, 2))).hits).toBe(0); // other weights
    expect((await frozen(backbone('mobilenetv2', 0.5))).hits).toBe(0); // another alpha
    expect((await frozen(mobile, { boundary: 'middle' })).hits).toBe(0); // another split point
    expect((await frozen(mobile, { preprocessing: CAFFE_PREPROCESSING })).hits).toBe(0);
    // (Another input size gives other pixels, so another pixel digest: the decoded-image test covers it.)
    const vgg = backbone('vgg16');
    expect((await frozen(vgg)).hits).toBe(0); // another backbone
    expect((await frozen(vgg)).hits).toBe(6);
    mobile.dispose();
    vgg.dispose();
  });

  it('another division of the same images still hits: entries are per image, not per set', async () => {
    const mobile = backbone('mobilenetv2', 0.35, 3);
    await frozen(mobile);
    const order = [4, 2, 0];
    const subset: ImageSet = { images: new MemoryPixelStore(order.map((i) => set.images.get(i))), labels: Int32Array.from([0, 0, 0]), paths: order.map((i) => `img${i}`) };
    const warm = await frozen(mobile, { images: subset });
    expect(warm).toMatchObject({ hits: 3, rows: 3 });
    mobile.dispose();
  });

  it('augmented copies: the same seed and level hit with identical values, also for a subset; another seed or level misses', async () => {
    const mobile = backbone('mobilenetv2', 0.35, 4);
    const tensors = tf.memory().numTensors;
    const cold = await frozen(mobile, { copies: 2 });
    expect(cold).toMatchObject({ hits: 0, rows: 12 });
    expect(tf.memory().numTensors).toBe(tensors);
    const warm = await frozen(mobile, { copies: 2 });
    expect(warm).toMatchObject({ hits: 12, rows: 12 });
    expect(Buffer.from(warm.values.buffer).equals(Buffer.from(cold.values.buffer))).toBe(true);
    expect((await frozen(mobile, { copies: 2, seed: 43 })).hits).toBe(0);
    expect((await frozen(mobile, { copies: 2, augment: 'strong' })).hits).toBe(0);
    expect((await frozen(mobile, { copies: 3 })).hits).toBe(12); // copies 0 and 1 are the same ones; copy 2 is new

    // A subset computed cold (own cache folder) makes the same copies of its images as the full set:
    // each image's augmentation is its own stream.
    const order = [5, 1];
    const subset: ImageSet = { images: new MemoryPixelStore(order.map((i) => set.images.get(i))), labels: Int32Array.from([1, 1]), paths: order.map((i) => `img${i}`) };
    const saved = cacheDir;
    cacheDir = path.join(dir, 'frozen-subset');
    const alone = await frozen(mobile, { copies: 2, images: subset });
    cacheDir = saved;
    expect(alone.hits).toBe(0);
    const perRow = cold.values.length / 12;
    const row = (values: Float32Array, r: number) => Buffer.from(values.buffer, r * perRow * 4, perRow * 4);
    for (const [j, i] of order.entries()) {
      for (const copy of [0, 1]) expect(row(alone.values, copy * 2 + j).equals(row(cold.values, copy * 6 + i)), `image ${i} copy ${copy}`).toBe(true);
    }
    mobile.dispose();
  });
});

describe('fineTune through the cache (α=0.35 weights from ../shared)', () => {
  it('a second identical run reads every decoded image and frozen output from the cache and saves bit-identical weights; --no-cache too', async (ctx) => {
    needShared(ctx, 'the cold/warm run', TM_WEIGHTS);
    const cacheDir = path.join(dir, 'runs-cache');
    const saved = process.env.FINETUNE_CACHE_DIR;
    process.env.FINETUNE_CACHE_DIR = cacheDir;
    const run = async (out: string, cache = true) => {
      const logs: string[] = [];
      const reporter = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), task: () => ({ update() {}, finish() {} }) };
      await fineTune({
        data: path.join(repoRoot, 'fixtures/shapes'),
        out: path.join(dir, out),
        alpha: 0.35,
        imageSize: 48,
        weights: sharedPath(TM_WEIGHTS),
        epochs: 2,
        fineTuneEpochs: 1,
        augmentCopies: 2,
        batchSize: 16,
        backend: 'wasm',
        cache,
        reporter,
      });
      const model = path.join(dir, out, 'model');
      const weightsFile = readdirSync(model).find((f) => f.endsWith('.bin'))!;
      return { logs, weights: readFileSync(path.join(model, weightsFile)) };
    };
    try {
      const cold = await run('cold');
      expect(cold.logs).toContain(`decoded images: 0 of 132 from the cache (${cacheDir})`);
      expect(cold.logs.some((m) => /^stage 1: frozen outputs: 0 of \d+ from the cache/.test(m))).toBe(true);
      const entries = (await new DiskCache({ dir: cacheDir }).stats()).entries;
      expect(entries).toBeGreaterThan(132);

      const warm = await run('warm');
      expect(warm.logs).toContain(`decoded images: 132 of 132 from the cache (${cacheDir})`);
      const frozenLines = warm.logs.filter((m) => /frozen outputs:/.test(m));
      expect(frozenLines.length).toBeGreaterThan(0);
      for (const line of frozenLines) expect(line).toMatch(/: (\d+) of \1 from the cache/);
      expect(warm.weights.equals(cold.weights)).toBe(true);

      const bypass = await run('bypass', false);
      expect(bypass.logs.some((m) => /from the cache/.test(m))).toBe(false);
      expect(bypass.weights.equals(cold.weights)).toBe(true);
      expect((await new DiskCache({ dir: cacheDir }).stats()).entries).toBe(entries);
      expect(entryFiles(cacheDir, 'frozen').length).toBeGreaterThan(0);
    } finally {
      if (saved === undefined) delete process.env.FINETUNE_CACHE_DIR;
      else process.env.FINETUNE_CACHE_DIR = saved;
    }
  });
});

describe('the command line', () => {
  const cli = (args: string[], cacheDir: string) =>
    runCli(process.execPath, [path.join(repoRoot, 'bin/finetune.js'), ...args], { cwd: repoRoot, env: { FINETUNE_CACHE_DIR: cacheDir } });

  it('finetune cache shows the folder, entries per kind and the cap (FINETUNE_DISK_CACHE_MB); --clear empties it', async () => {
    const cacheDir = path.join(dir, 'cli-cache');
    const cache = new DiskCache({ dir: cacheDir });
    await cache.put('pixels', 'a', new Uint8Array(2048));
    await cache.put('frozen', 'b', new Uint8Array(1024));
    const text = await runCli(process.execPath, [path.join(repoRoot, 'bin/finetune.js'), 'cache'], {
      env: { FINETUNE_CACHE_DIR: cacheDir, FINETUNE_DISK_CACHE_MB: '512' },
    });
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toContain(`cache: ${cacheDir}`);
    expect(text.stdout).toMatch(/2 entries, 0\.0 MiB of the 512\.0 MiB cap/);
    expect(text.stdout).toMatch(/decoded images: 1 entries/);
    expect(text.stdout).toMatch(/frozen-layer outputs: 1 entries/);
    const json = JSON.parse((await cli(['cache', '--json'], cacheDir)).stdout);
    expect(json).toMatchObject({ dir: cacheDir, entries: 2, kinds: { pixels: { entries: 1 }, frozen: { entries: 1 } } });
    expect(json.bytes).toBeGreaterThan(3072);
    const cleared = await cli(['cache', '--clear'], cacheDir);
    expect(cleared.stdout).toMatch(/removed 2 entries/);
    expect(JSON.parse((await cli(['cache', '--json'], cacheDir)).stdout)).toMatchObject({ entries: 0, bytes: 0 });
  });

  it('--no-cache and --disk-cache-mb reach fineTune; a negative cap is a usage error (exit status 2) before any work', async () => {
    const seen: FineTuneOptions[] = [];
    await buildProgram(async (o) => void seen.push(o)).parseAsync(['node', 'finetune', 'data', '--no-cache', '--disk-cache-mb', '100']);
    await buildProgram(async (o) => void seen.push(o)).parseAsync(['node', 'finetune', 'data']);
    expect(seen[0]).toMatchObject({ cache: false, diskCacheMb: 100 });
    expect(seen[1]).toMatchObject({ cache: true });
    expect(seen[1]!.diskCacheMb).toBeUndefined();
    const bad = await cli([path.join(repoRoot, 'fixtures/shapes'), '--disk-cache-mb', '-1', '--out', path.join(dir, 'never')], path.join(dir, 'cli-bad'));
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--disk-cache-mb -1 is not valid/);
  });
});
