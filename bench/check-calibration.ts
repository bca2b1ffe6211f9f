/**
 * Calibrates `finetune check`'s near-duplicate rule (src/check/near.ts) on made pairs against
 * distinct photos.
 *
 *   npx vite-node --config bench/vite.config.ts bench/check-calibration.ts -- [--size 160] [--alpha 0.35]
 *     [--weights ../shared/weights/teachable-machine-mobilenet_v2_0.35_224] [--per-class 60]
 *     [--dump pairs.json] [--verbose] [--variants] [--centre]
 *
 * For `--per-class` photos of each class of hymenoptera (train + val) and flowers_kaggle_128 it makes
 * the edits a copied photo goes through (resized to half + JPEG quality 60; 10 % cropped off, centred
 * and from one corner; +20 % brightness; all of these at once), and compares each edit with its
 * original (the pairs check must catch) and every two distinct photos of the same dataset (the pairs
 * it must not flag): crop-tolerant pHash distance, pooled-feature cosine and aligned thumbnail
 * correlation, their distributions, what the rule in near.ts catches and flags, and (--verbose) the
 * closest distinct pairs — look at those: a dataset can hold real copies. --dump writes every made
 * pair and the close distinct pairs as JSON; --variants compares other poolings of the features
 * (average, GeM, max, 2×2 grid, a middle layer), --centre subtracts each dataset's mean feature first.
 * Took 4–5 minutes at --per-class 100 on 2 busy cores.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadFeatureModel, pooledFeatures } from '../src/check/features.js';
import { cropHashes, cropTolerantDistance, hammingDistance, perceptualHash } from '../src/check/phash.js';
import { alignedCorrelation, alignedThumbnails } from '../src/check/verify.js';
import { isNearDuplicate } from '../src/check/near.js';
import { decodeImage } from '../src/data/decode.js';
import { discoverLayout } from '../src/data/layout.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { initEngine } from '../src/engine/backend.js';
import { FusedInference } from '../src/engine/fused-inference.js';
import { preprocessInto } from '../src/backbones/preprocess.js';
import * as tf from '@tensorflow/tfjs';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
};
const size = Number(arg('size', '160'));
const alpha = Number(arg('alpha', '0.35'));
const shared = path.resolve(import.meta.dirname, '../../shared');
const weights = arg('weights', path.join(shared, 'weights/teachable-machine-mobilenet_v2_0.35_224'));
const perClass = Number(arg('per-class', '60'));
const verbose = process.argv.includes('--verbose');

type Edit = (input: Buffer) => Promise<Buffer>;
/** The aligned thumbnail correlation of two items (set once the thumbnails exist). */
let correlationOf: (a: number, b: number) => number = () => NaN;
const EDITS: Record<string, Edit> = {
  'half+q60': async (b) => {
    const m = await sharp(b).metadata();
    return sharp(b).resize(Math.round(m.width! / 2)).jpeg({ quality: 60 }).toBuffer();
  },
  'crop10-centre': async (b) => crop(b, 0.5),
  'crop10-corner': async (b) => crop(b, 1),
  'bright+20': async (b) => sharp(b).modulate({ brightness: 1.2 }).jpeg({ quality: 90 }).toBuffer(),
  all: async (b) => {
    const cropped = await crop(b, 1);
    const m = await sharp(cropped).metadata();
    return sharp(cropped).modulate({ brightness: 1.2 }).resize(Math.round(m.width! / 2)).jpeg({ quality: 60 }).toBuffer();
  },
};

/** Cuts 10 % of the width and height off; `at` 0.5 takes equal parts from both sides, 1 all from the left/top. */
async function crop(b: Buffer, at: number): Promise<Buffer> {
  const { width, height } = await sharp(b, { autoOrient: true }).metadata();
  const w = Math.round(width! * 0.9);
  const h = Math.round(height! * 0.9);
  const left = Math.round((width! - w) * at);
  const top = Math.round((height! - h) * at);
  return sharp(b, { autoOrient: true }).extract({ left, top, width: w, height: h }).jpeg({ quality: 90 }).toBuffer();
}

interface Item {
  set: string;
  cls: string;
  file: string;
  edit?: string;
  /** Index of the original this is an edit of. */
  of?: number;
  pixels: Uint8Array;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))))]!;
}
const fmt = (x: number) => x.toFixed(4);

async function main(): Promise<void> {
  await initEngine('wasm');
  const items: Item[] = [];
  const seen = new Set<string>();
  for (const set of ['datasets/hymenoptera_data', 'datasets/flowers_kaggle_128']) {
    const layout = await discoverLayout(path.join(shared, set), { valSplit: 0 });
    const all = [...layout.train, ...layout.valid];
    for (let c = 0; c < layout.classes.length; c++) {
      // Evenly spaced files, skipping byte copies (the dataset's own duplicates are not distinct photos).
      const files = all.filter((f) => f.label === c).map((f) => f.path);
      const step = Math.max(1, Math.floor(files.length / perClass));
      let taken = 0;
      for (let i = 0; i < files.length && taken < perClass; i += step) {
        const bytes = readFileSync(files[i]!);
        const digest = createHash('sha256').update(bytes).digest('hex');
        if (seen.has(digest)) continue;
        seen.add(digest);
        let pixels: Uint8Array;
        try {
          pixels = await decodeImage(bytes, { size, resize: 'stretch' });
        } catch {
          continue;
        }
        const index = items.length;
        items.push({ set, cls: layout.classes[c]!, file: files[i]!, pixels });
        for (const [edit, make] of Object.entries(EDITS)) {
          items.push({ set, cls: layout.classes[c]!, file: files[i]!, edit, of: index, pixels: await decodeImage(await make(bytes), { size, resize: 'stretch' }) });
        }
        taken++;
      }
    }
  }
  const originals = items.map((it, i) => ({ it, i })).filter(({ it }) => it.edit === undefined);
  process.stderr.write(`${originals.length} originals, ${items.length - originals.length} edits at ${size} px\n`);
  console.log(`# size ${size} px, alpha ${alpha}, ${originals.length} originals`);

  const fm = await loadFeatureModel({ backbone: 'mobilenetv2', alpha, imageSize: size, weights });
  const started = performance.now();
  const variants = process.argv.includes('--variants')
    ? await featureVariants(fm, items.map((i) => i.pixels))
    : { gap: await pooledFeatures(fm, new MemoryPixelStore(items.map((i) => i.pixels))) };
  process.stderr.write(`features: ${((items.length / (performance.now() - started)) * 1000).toFixed(1)} img/s\n`);
  const hashes = items.map((i) => perceptualHash(i.pixels, size));
  const crops = items.map((i) => cropHashes(i.pixels, size));
  const thumbs = items.map((i) => alignedThumbnails(i.pixels, size));
  correlationOf = (a, b) => alignedCorrelation(thumbs[a]!, thumbs[b]!);
  reportCropHash(items, originals, crops);
  for (const [name, { data, dim }] of Object.entries(variants)) {
    if (process.argv.includes('--centre')) centreRows(data, dim, items.map((it) => it.set));
    console.log(`\n## features: ${name} (${dim} dims)`);
    const cosine = (a: number, b: number) => {
      let s = 0;
      for (let d = 0; d < dim; d++) s += data[a * dim + d]! * data[b * dim + d]!;
      return s;
    };
    report(items, originals, hashes, cosine);
    reportJoint(items, originals, crops, cosine);
  }
  fm.dispose();
}

/** Several poolings of two layers, for comparing what separates edits from distinct photos best. */
async function featureVariants(fm: Awaited<ReturnType<typeof loadFeatureModel>>, images: Uint8Array[]): Promise<Record<string, { data: Float32Array; dim: number }>> {
  const layers = fm.model.layers;
  const mid = layers.findIndex((l) => l.name === arg('mid', 'block_13_expand_relu'));
  const lower = new FusedInference(fm.model, 0, mid).prepare();
  const upper = new FusedInference(fm.model, mid, layers.length - 1).prepare();
  const unit = (t: tf.Tensor2D) => tf.div(t, tf.maximum(tf.norm(t, 'euclidean', 1, true), 1e-12)) as tf.Tensor2D;
  const gem = (m: tf.Tensor4D) => tf.pow(tf.mean(tf.pow(tf.maximum(m, 1e-6), 3), [1, 2]), 1 / 3) as tf.Tensor2D;
  const grid = (m: tf.Tensor4D) => {
    const [, h, w] = m.shape;
    const hh = Math.ceil(h / 2);
    const ww = Math.ceil(w / 2);
    const cells = [0, h - hh].flatMap((y) => [0, w - ww].map((x) => unit(tf.mean(tf.slice(m, [0, y, x, 0], [-1, hh, ww, -1]), [1, 2]) as tf.Tensor2D)));
    return tf.concat(cells, 1) as tf.Tensor2D;
  };
  const parts: Record<string, Float32Array[]> = {};
  const dims: Record<string, number> = {};
  const per = size * size * 3;
  for (let start = 0; start < images.length; start += 32) {
    const batch = images.slice(start, start + 32);
    const buffer = new Float32Array(batch.length * per);
    batch.forEach((px, i) => preprocessInto(px, fm.spec.preprocessing, buffer, i * per));
    const outs = tf.tidy(() => {
      const x = tf.tensor4d(buffer, [batch.length, size, size, 3]);
      const m = lower.run(x) as tf.Tensor4D;
      const o = upper.run(m) as tf.Tensor4D;
      const gapO = unit(tf.mean(o, [1, 2]) as tf.Tensor2D);
      const gapM = unit(tf.mean(m, [1, 2]) as tf.Tensor2D);
      return {
        gap_out: gapO,
        gem_out: unit(gem(o)),
        max_out: unit(tf.max(o, [1, 2]) as tf.Tensor2D),
        grid_out: unit(grid(o)),
        gap_mid: gapM,
        gem_mid: unit(gem(m)),
        grid_mid: unit(grid(m)),
        gap_out_mid: unit(tf.concat([gapO, gapM], 1) as tf.Tensor2D),
      } as Record<string, tf.Tensor2D>;
    });
    for (const [k, t] of Object.entries(outs)) {
      (parts[k] ??= []).push((await t.data()) as Float32Array);
      dims[k] = t.shape[1];
      t.dispose();
    }
  }
  return Object.fromEntries(
    Object.entries(parts).map(([k, chunks]) => {
      const data = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
      let o = 0;
      for (const c of chunks) (data.set(c, o), (o += c.length));
      return [k, { data, dim: dims[k]! }];
    }),
  );
}

function report(items: Item[], originals: { it: Item; i: number }[], hashes: ReturnType<typeof perceptualHash>[], cosine: (a: number, b: number) => number): void {
  console.log('made pairs (edit vs original): cosine min / p1 / p5 / median; pHash max / p99 / p95 / median');
  const sets = [...new Set(items.map((it) => it.set))];
  for (const [set, edit] of sets.flatMap((set) => Object.keys(EDITS).map((e) => [set, e] as const))) {
    const pairs = items.map((it, i) => ({ it, i })).filter(({ it }) => it.edit === edit && it.set === set);
    const cos = pairs.map(({ it, i }) => cosine(i, it.of!)).sort((a, b) => a - b);
    const ham = pairs.map(({ it, i }) => hammingDistance(hashes[i]!, hashes[it.of!]!)).sort((a, b) => a - b);
    console.log(
      `  ${path.basename(set).slice(0, 11).padEnd(12)}${edit.padEnd(14)} cos ${fmt(cos[0]!)} ${fmt(percentile(cos, 1))} ${fmt(percentile(cos, 5))} ${fmt(percentile(cos, 50))}` +
        `  pHash ${ham.at(-1)} ${percentile(ham, 99)} ${percentile(ham, 95)} ${percentile(ham, 50)}`,
    );
  }
  console.log('distinct photos of the same class: cosine max / p99.99 / p99.9 / p99 / median; pHash min / p0.01 / p0.1 / median');
  for (const set of new Set(originals.map((o) => o.it.set))) {
    const cos: { c: number; a: number; b: number }[] = [];
    const ham: number[] = [];
    const mine = originals.filter((o) => o.it.set === set);
    for (let x = 0; x < mine.length; x++) {
      for (let y = x + 1; y < mine.length; y++) {
        if (mine[x]!.it.cls !== mine[y]!.it.cls) continue;
        cos.push({ c: cosine(mine[x]!.i, mine[y]!.i), a: mine[x]!.i, b: mine[y]!.i });
        ham.push(hammingDistance(hashes[mine[x]!.i]!, hashes[mine[y]!.i]!));
      }
    }
    cos.sort((p, q) => q.c - p.c);
    ham.sort((p, q) => p - q);
    const cs = cos.map((p) => p.c).reverse();
    console.log(
      `  ${path.basename(set).padEnd(20)} ${cos.length} pairs: cos ${fmt(cs.at(-1)!)} ${fmt(percentile(cs, 99.99))} ${fmt(percentile(cs, 99.9))} ${fmt(percentile(cs, 99))} ${fmt(percentile(cs, 50))}` +
        `  pHash ${ham[0]} ${percentile(ham, 0.01)} ${percentile(ham, 0.1)} ${percentile(ham, 50)}`,
    );
    for (const p of cos.slice(0, verbose ? 5 : 0)) {
      console.log(`    closest: ${fmt(p.c)} pHash ${hammingDistance(hashes[p.a]!, hashes[p.b]!)}  ${path.relative(shared, items[p.a]!.file)}  ${path.relative(shared, items[p.b]!.file)}`);
    }
    const byHash = cos.map((p) => ({ ...p, h: hammingDistance(hashes[p.a]!, hashes[p.b]!) })).sort((p, q) => p.h - q.h);
    for (const p of byHash.slice(0, verbose ? 3 : 0)) {
      console.log(`    closest pHash: ${p.h} cos ${fmt(p.c)}  ${path.relative(shared, items[p.a]!.file)}  ${path.relative(shared, items[p.b]!.file)}`);
    }
  }
}

/** Distributions of the crop-tolerant pHash distance: made pairs (max, p99, p95, median) and distinct (min, p0.1, p1, median). */
function reportCropHash(items: Item[], originals: { it: Item; i: number }[], crops: ReturnType<typeof cropHashes>[]): void {
  console.log('crop-tolerant pHash: made pairs max / p99 / p95 / median');
  const sets = [...new Set(items.map((it) => it.set))];
  for (const [set, edit] of sets.flatMap((set) => Object.keys(EDITS).map((e) => [set, e] as const))) {
    const d = items
      .map((it, i) => ({ it, i }))
      .filter(({ it }) => it.edit === edit && it.set === set)
      .map(({ it, i }) => cropTolerantDistance(crops[i]!, crops[it.of!]!))
      .sort((a, b) => a - b);
    console.log(`  ${path.basename(set).slice(0, 11).padEnd(12)}${edit.padEnd(14)} ${d.at(-1)} ${percentile(d, 99)} ${percentile(d, 95)} ${percentile(d, 50)}`);
  }
  console.log('crop-tolerant pHash: distinct same-class (and all) pairs min / p0.01 / p0.1 / p1 / median, histogram of the lowest');
  for (const sameClass of [true, false]) {
    for (const set of sets) {
      const mine = originals.filter((o) => o.it.set === set);
      const d: number[] = [];
      for (let x = 0; x < mine.length; x++) {
        for (let y = x + 1; y < mine.length; y++) {
          if (sameClass && mine[x]!.it.cls !== mine[y]!.it.cls) continue;
          d.push(cropTolerantDistance(crops[mine[x]!.i]!, crops[mine[y]!.i]!));
        }
      }
      d.sort((a, b) => a - b);
      const hist = new Map<number, number>();
      for (const v of d) if (v <= 20) hist.set(v, (hist.get(v) ?? 0) + 1);
      console.log(
        `  ${path.basename(set).slice(0, 11).padEnd(12)}${sameClass ? 'same class' : 'all pairs '} ${d.length}: ${d[0]} ${percentile(d, 0.01)} ${percentile(d, 0.1)} ${percentile(d, 1)} ${percentile(d, 50)}  ` +
          [...hist].map(([k, v]) => `${k}:${v}`).join(' '),
      );
    }
  }
}

/** Both signals together: made pairs that either signal finds hard, and distinct pairs close by pHash. */
function reportJoint(items: Item[], originals: { it: Item; i: number }[], crops: ReturnType<typeof cropHashes>[], cosine: (a: number, b: number) => number): void {
  const hardest = items
    .map((it, i) => ({ it, i }))
    .filter(({ it }) => it.edit !== undefined && it.edit !== 'all')
    .map(({ it, i }) => ({ edit: it.edit!, file: it.file, d: cropTolerantDistance(crops[i]!, crops[it.of!]!), c: cosine(i, it.of!), r: correlationOf(i, it.of!) }));
  console.log('made pairs (single edits): lowest cosine / highest pHash-crop, as (pHash-crop, cos)');
  const show = (p: (typeof hardest)[number]) => `(${p.d}, ${fmt(p.c)}) ${p.edit} ${path.relative(shared, p.file)}`;
  for (const p of [...hardest].sort((a, b) => a.c - b.c).slice(0, 6)) console.log(`  low cos:   ${show(p)}`);
  for (const p of [...hardest].sort((a, b) => b.d - a.d).slice(0, 6)) console.log(`  high hash: ${show(p)}`);
  const grid = [6, 8, 10, 12];
  const cosCuts = [0, 0.5, 0.6, 0.7, 0.75, 0.8];
  const caught = (d: number, c: number, h: number, k: number) => d <= h && c >= k;
  console.log('caught made pairs (single edits) / distinct pairs flagged (all pairs of originals), for pHash-crop ≤ h and cos ≥ c:');
  const distinct: { d: number; c: number; r: number; a: number; b: number }[] = [];
  for (let x = 0; x < originals.length; x++) {
    for (let y = x + 1; y < originals.length; y++) {
      const a = originals[x]!.i;
      const b = originals[y]!.i;
      if (items[a]!.set !== items[b]!.set) continue;
      const d = cropTolerantDistance(crops[a]!, crops[b]!);
      distinct.push({ d, c: cosine(a, b), r: d <= 14 ? correlationOf(a, b) : NaN, a, b });
    }
  }
  for (const h of grid) {
    console.log(
      `  h ${String(h).padStart(2)}: ` +
        cosCuts.map((k) => `c ${k.toFixed(2)} ${hardest.filter((p) => caught(p.d, p.c, h, k)).length}/${hardest.length} fp ${distinct.filter((p) => caught(p.d, p.c, h, k)).length}`).join(' | '),
    );
  }
  const flagged = (p: { d: number; c: number; r: number }) => isNearDuplicate({ distance: p.d, cosine: p.c, correlation: p.r });
  console.log(
    `the rule in near.ts: caught ${hardest.filter(flagged).length}/${hardest.length} edits ` +
      `(${[...new Set(hardest.map((p) => p.edit))].map((e) => `${e} ${hardest.filter((p) => p.edit === e && flagged(p)).length}`).join(', ')}); ` +
      `flagged ${distinct.filter(flagged).length} of ${distinct.length} distinct pairs`,
  );
  for (const p of distinct.filter(flagged)) console.log(`  flagged: (${p.d}, ${fmt(p.c)}, ${fmt(p.r)}) ${path.relative(shared, items[p.a]!.file)}  ${path.relative(shared, items[p.b]!.file)}`);
  const dump = arg('dump', '');
  if (dump) {
    const rel = (i: number) => path.relative(shared, items[i]!.file);
    writeFileSync(
      dump,
      JSON.stringify({
        size,
        made: hardest.map((p) => ({ edit: p.edit, file: path.relative(shared, p.file), d: p.d, c: p.c, r: p.r })),
        distinctTotal: distinct.length,
        distinct: distinct.filter((p) => p.d <= 20 || p.c >= 0.8).map((p) => ({ d: p.d, c: p.c, r: p.r, a: rel(p.a), b: rel(p.b) })),
      }),
    );
  }
  if (!verbose) return;
  console.log(`distinct pairs (${distinct.length}) with pHash-crop ≤ 14:`);
  for (const p of distinct.filter((p) => p.d <= 14).sort((a, b) => a.d - b.d)) {
    console.log(`  (${p.d}, ${fmt(p.c)}) ${path.relative(shared, items[p.a]!.file)}  ${path.relative(shared, items[p.b]!.file)}`);
  }
}

/** Subtracts each set's mean feature from its rows, then scales the rows to unit length again. */
function centreRows(data: Float32Array, dim: number, groups: string[]): void {
  for (const g of new Set(groups)) {
    const rows = groups.flatMap((x, i) => (x === g ? [i] : []));
    const mean = new Float64Array(dim);
    for (const r of rows) for (let d = 0; d < dim; d++) mean[d]! += data[r * dim + d]! / rows.length;
    for (const r of rows) {
      let norm = 0;
      for (let d = 0; d < dim; d++) {
        const v = data[r * dim + d]! - mean[d]!;
        data[r * dim + d] = v;
        norm += v * v;
      }
      norm = Math.sqrt(norm) || 1;
      for (let d = 0; d < dim; d++) data[r * dim + d]! /= norm;
    }
  }
}

await main();
