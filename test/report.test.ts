import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskCache } from '../src/cache/disk-cache.js';
import { stripMarks } from '../src/report/curves.js';
import { abbreviateMiddle, formatDuration } from '../src/report/format.js';
import {
  renderConfusion,
  renderCurves,
  renderReportHtml,
  renderTopLosses,
  REPORT_SECTIONS,
  topLossItems,
  writeRunReport,
  type TopLossItem,
} from '../src/report/index.js';
import { formatLr, niceTicks } from '../src/report/svg.js';
import type { EpochLogs } from '../src/train/learner.js';
import type { ClassificationMetrics } from '../src/train/metrics.js';

let dir: string;

/** Size, spread and colours of a PNG: enough to tell a drawn picture from a blank or broken one. */
async function inspect(png: Buffer) {
  const meta = await sharp(png).metadata();
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const colours = new Set<number>();
  let sum = 0;
  let sumSq = 0;
  const pixels = info.width * info.height;
  for (let i = 0; i < data.length; i += 3) {
    // 4 bits per channel: anti-aliasing shades merge, real colours stay apart.
    colours.add(((data[i]! >> 4) << 8) | ((data[i + 1]! >> 4) << 4) | (data[i + 2]! >> 4));
    const grey = (data[i]! + data[i + 1]! + data[i + 2]!) / 3;
    sum += grey;
    sumSq += grey * grey;
  }
  const mean = sum / pixels;
  /** Pixels within `tolerance` of a #rrggbb colour. */
  const count = (hex: string, tolerance = 40) => {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];
    let n = 0;
    for (let i = 0; i < data.length; i += 3) {
      if (Math.abs(data[i]! - r) + Math.abs(data[i + 1]! - g) + Math.abs(data[i + 2]! - b) <= tolerance) n++;
    }
    return n;
  };
  return { format: meta.format, width: info.width, height: info.height, variance: sumSq / pixels - mean * mean, colours: colours.size, count };
}

/** A valid, non-blank picture of the given size. A message on white has little ink: minVariance 5. */
async function expectPicture(png: Buffer, width?: number, height?: number, minVariance = 50) {
  const info = await inspect(png);
  expect(info.format).toBe('png');
  if (width !== undefined) expect(info.width).toBe(width);
  if (height !== undefined) expect(info.height).toBe(height);
  expect(info.variance).toBeGreaterThan(minVariance);
  expect(info.colours).toBeGreaterThanOrEqual(2);
  return info;
}

function twoStageHistory(): EpochLogs[] {
  const lrs = [1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 2e-5];
  return lrs.map((lr, i) => ({
    stage: i < 4 ? 1 : 2,
    epoch: i < 4 ? i + 1 : i - 3,
    loss: 0.9 * Math.exp(-i / 3) + 0.1,
    accuracy: 0.6 + 0.05 * i,
    valLoss: 0.8 * Math.exp(-i / 4) + 0.2,
    valAccuracy: 0.62 + 0.04 * i,
    lr,
    seconds: 2,
  }));
}

const metrics: ClassificationMetrics & { classes: string[] } = {
  classes: ['cat', 'dog', 'fish'],
  samples: 30,
  accuracy: 0.8,
  accuracyCI95: [0.627, 0.905],
  loss: 0.45,
  balancedAccuracy: 0.79,
  perClass: {
    cat: { precision: 0.9, recall: 0.8, f1: 0.847, support: 10 },
    dog: { precision: 0.7, recall: 0.9, f1: 0.787, support: 10 },
    fish: { precision: 0.8, recall: 0.7, f1: 0.747, support: 10 },
  },
  confusionMatrix: [
    [8, 2, 0],
    [1, 9, 0],
    [0, 3, 7],
  ],
};

const config = {
  format: 'finetune-model/1',
  created: '2026-01-02T03:04:05.000Z',
  classes: ['cat', 'dog', 'fish'],
  backbone: { name: 'mobilenetv2', alpha: 0.35, weights: 'imagenet' },
  input: { size: 96, channels: 3, resize: 'stretch', preprocessing: { name: 'mobilenet' } },
  training: { backbone: 'mobilenetv2', alpha: 0.35, lr: 0.001, epochs: 4, fineTuneEpochs: 3, trainBatchNorm: false, seed: 42 },
  data: {
    root: '/data/pets',
    fingerprint: 'abcdef0123456789',
    validSource: 'valid',
    train: { cat: 40, dog: 41, fish: 39 },
    valid: { cat: 10, dog: 10, fish: 10 },
    test: 5,
    skipped: 1,
    ignored: { hidden: 2, notImage: 1 },
  },
  engine: { backend: 'wasm', detail: 'wasm, SIMD, 1 thread' },
  versions: { finetune: '0.1.0', tfjs: '4.22.0', sharp: '0.34.5', node: '20.0.0' },
  results: { bestEpoch: { stage: 2, epoch: 2 }, valAccuracy: 0.8, valLoss: 0.45, stageSeconds: [8, 6], seconds: 15.5 },
};

/** Solid-colour images for thumbnails. */
const swatches: Record<string, string> = { red: '#e01010', green: '#10b010', blue: '#1010e0' };
const images: Record<string, string> = {};

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-report-'));
  await mkdir(path.join(dir, 'images'));
  for (const [name, colour] of Object.entries(swatches)) {
    const file = path.join(dir, 'images', `${name}.png`);
    // Non-square, so the letterboxing of thumbnails is exercised too.
    await sharp({ create: { width: 64, height: 40, channels: 3, background: colour } }).png().toFile(file);
    images[name] = file;
  }
  await writeFile(path.join(dir, 'images', 'broken.jpg'), 'not an image');
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('renderCurves', () => {
  it('draws both stages, training and validation, on a 1000×420 picture', async () => {
    const info = await expectPicture(await renderCurves(twoStageHistory(), { best: { stage: 2, epoch: 2 } }), 1000, 420);
    expect(info.colours).toBeGreaterThan(5);
    expect(info.count('#1f77b4')).toBeGreaterThan(100); // training lines
    expect(info.count('#ff7f0e')).toBeGreaterThan(100); // validation lines
    expect(info.count('#9467bd')).toBeGreaterThan(20); // learning-rate change line and labels
  });

  it('marks the learning rate at the start, the stage boundary and changes within a stage', () => {
    expect(stripMarks(twoStageHistory())).toEqual([
      { at: 1, label: 'lr 1e-3', kind: 'start' },
      { at: 5, label: 'stage 2 · lr 1e-4', kind: 'stage' },
      { at: 7, label: 'lr 2e-5', kind: 'lr' },
    ]);
  });

  it('handles a single epoch, missing validation values and a diverged loss', async () => {
    await expectPicture(await renderCurves([{ stage: 1, epoch: 1, loss: 0.7, accuracy: 0.5, lr: 0.01, seconds: 1 }]), 1000, 420);
    const gappy = twoStageHistory().map((h, i) => ({ ...h, valLoss: i % 2 ? undefined : h.valLoss, loss: i === 3 ? NaN : h.loss }));
    const info = await expectPicture(await renderCurves(gappy), 1000, 420);
    expect(info.count('#ff7f0e')).toBeGreaterThan(20);
    const noValid = twoStageHistory().map(({ valLoss: _l, valAccuracy: _a, ...h }) => h);
    expect((await inspect(await renderCurves(noValid))).count('#ff7f0e', 20)).toBe(0);
  });

  it('says so when there is no history', async () => {
    await expectPicture(await renderCurves([]), 1000, 420, 5);
  });
});

describe('renderConfusion', () => {
  it('shades correct cells blue and confusions red', async () => {
    const info = await expectPicture(await renderConfusion(metrics.confusionMatrix, metrics.classes));
    expect(info.width).toBeGreaterThan(400);
    expect(info.count('#1f4e9e', 60)).toBeGreaterThan(1000); // mostly-correct diagonal cells
    expect(info.count('#e8a8a8', 60)).toBeGreaterThan(100); // light red confusions
  });

  it('grows with the number of classes, within limits, up to 100 classes with long names', async () => {
    const square = (k: number) => Array.from({ length: k }, (_, i) => Array.from({ length: k }, (_, j) => (i === j ? 20 : (i + j) % 7 === 0 ? 2 : 0)));
    const names = (k: number) => Array.from({ length: k }, (_, i) => `n0${1440764 + i}_a_rather_long_class_name_${i}`);
    const small = await inspect(await renderConfusion(square(2), ['a', 'b']));
    const medium = await expectPicture(await renderConfusion(square(20), names(20)));
    const large = await expectPicture(await renderConfusion(square(100), names(100)));
    expect(medium.width).toBeGreaterThan(small.width);
    expect(large.width).toBeGreaterThan(medium.width);
    expect(large.width).toBeLessThanOrEqual(3000);
    expect(large.height).toBeLessThanOrEqual(3000);
  });

  it('rejects a matrix that does not match the classes', async () => {
    await expect(renderConfusion([[1, 2]], ['a', 'b'])).rejects.toThrow(/2 classes/);
  });
});

describe('renderTopLosses', () => {
  const items = (): TopLossItem[] => [
    { path: images.red!, trueLabel: 'cat', predicted: 'dog', probability: 0.9, loss: 2.5 },
    { path: images.green!, trueLabel: 'dog', predicted: 'fish', probability: 0.6, loss: 1.2 },
    { path: path.join(dir, 'images', 'broken.jpg'), trueLabel: 'fish', predicted: 'cat', probability: 0.7, loss: 1.5 },
    { path: images.blue!, trueLabel: 'a-very-long-class-name-that-cannot-fit', predicted: 'cat', probability: 0.55, loss: 0.9 },
    { path: path.join(dir, 'missing.png'), trueLabel: 'cat', predicted: 'fish', probability: 0.51, loss: 0.8 },
  ];

  it('lays the images out in a grid with their thumbnails, placeholders for unreadable ones', async () => {
    const info = await expectPicture(await renderTopLosses(items(), { columns: 3, thumb: 120 }));
    // 3 columns of 120 px thumbnails (+ padding) and two rows.
    expect(info.width).toBe(640);
    expect(info.height).toBeGreaterThan(2 * 120 + 64);
    for (const colour of Object.values(swatches)) expect(info.count(colour, 60)).toBeGreaterThan(120 * 60);
    expect(info.count('#d0d0d0', 6)).toBeGreaterThan(2 * 100 * 100); // two grey placeholders
  });

  it('shows at most `limit` images', async () => {
    const one = await inspect(await renderTopLosses(items(), { columns: 4, thumb: 100, limit: 1 }));
    // Only the highest loss (the red image) is drawn.
    expect(one.count(swatches.red!, 60)).toBeGreaterThan(100 * 50);
    expect(one.count(swatches.green!, 60)).toBe(0);
  });

  it('keeps the finished picture in the cache between runs: the same picture is read back, another one drawn', async () => {
    const cache = new DiskCache({ dir: path.join(dir, 'cache') });
    const first = await renderTopLosses(items(), { thumb: 80, cache });
    expect(cache.counts.report).toMatchObject({ lookups: 1, hits: 0, written: 1 });
    const again = await renderTopLosses(items(), { thumb: 80, cache });
    expect(cache.counts.report).toMatchObject({ lookups: 2, hits: 1, written: 1 });
    expect(again.equals(first)).toBe(true);
    expect(again.equals(await renderTopLosses(items(), { thumb: 80 }))).toBe(true); // what it would have drawn
    const changed = items().map((item, i) => (i === 0 ? { ...item, probability: 0.8 } : item));
    const other = await renderTopLosses(changed, { thumb: 80, cache });
    expect(cache.counts.report).toMatchObject({ lookups: 3, hits: 1, written: 2 });
    expect(other.equals(first)).toBe(false);
  });

  it('says there were no misclassified images when there are none', async () => {
    await expectPicture(await renderTopLosses([]), 800, 220, 5);
  });
});

describe('topLossItems', () => {
  it('picks the misclassified samples, highest loss first', () => {
    const probabilities = new Float32Array([
      0.9, 0.1, // 0: true 0, right
      0.2, 0.8, // 1: true 0, wrong, p(true) 0.2
      0.6, 0.4, // 2: true 1, wrong, p(true) 0.4
      0.01, 0.99, // 3: true 0, wrong, p(true) 0.01
      0.3, 0.7, // 4: true 1, right
    ]);
    const items = topLossItems(['a', 'b', 'c', 'd', 'e'], [0, 0, 1, 0, 1], probabilities, ['ants', 'bees']);
    expect(items.map((i) => i.path)).toEqual(['d', 'b', 'c']);
    expect(items[0]).toMatchObject({ trueLabel: 'ants', predicted: 'bees' });
    expect(items[0]!.probability).toBeCloseTo(0.99);
    expect(items[0]!.loss).toBeCloseTo(-Math.log(0.01), 4);
    expect(topLossItems(['a', 'b', 'c', 'd', 'e'], [0, 0, 1, 0, 1], probabilities, ['ants', 'bees'], 2)).toHaveLength(2);
  });
});

describe('renderReportHtml', () => {
  it('has every section, embeds the pictures and escapes names', async () => {
    const png = await renderConfusion(metrics.confusionMatrix, metrics.classes);
    const html = renderReportHtml({
      config: { ...config, classes: ['cat', 'dog', '<b>fish</b>'] },
      metrics: { ...metrics, classes: ['cat', 'dog', '<b>fish</b>'], perClass: { ...metrics.perClass, '<b>fish</b>': metrics.perClass.fish! } },
      history: twoStageHistory(),
      skipped: [{ path: '/data/pets/train/cat/bad.jpg', split: 'train', reason: 'cannot decode: corrupt' }],
      pictures: { curves: png, confusion: png, topLosses: png },
      title: 'my run',
    });
    expect(html.startsWith('<!doctype html>')).toBe(true);
    for (const id of REPORT_SECTIONS) expect(html).toContain(`<section id="${id}">`);
    expect(html.match(/<img src="data:image\/png;base64,/g)).toHaveLength(3);
    expect(html).toContain(png.toString('base64'));
    expect(html).not.toContain('<b>fish</b>');
    expect(html).toContain('&lt;b&gt;fish&lt;/b&gt;');
    // Options as flags, data counts, skipped files relative to the data folder, per-class numbers.
    expect(html).toContain('<code>--fine-tune-epochs</code>');
    expect(html).toContain('<code>--train-bn</code>');
    expect(html).toMatch(/<td>cat<\/td><td class="num">40<\/td><td class="num">10<\/td>/);
    expect(html).toContain('<td>train/cat/bad.jpg</td>');
    expect(html).toContain('<td class="num">0.8470</td>');
    expect(html).toContain('abcdef0123456789');
    expect(html).toContain('wasm, SIMD, 1 thread');
    // No outside resources: one self-contained file.
    expect(html).not.toMatch(/(src|href)="(https?:|\/\/|[a-z-]+\.png)/);
  });

  it('says what is missing without metrics, history or pictures', () => {
    const html = renderReportHtml({ config: { format: 'finetune-model/1' }, pictures: {} });
    for (const id of REPORT_SECTIONS) expect(html).toContain(`<section id="${id}">`);
    expect(html).not.toContain('<img');
    expect(html).toContain('no validation set');
  });
});

describe('writeRunReport', () => {
  it('writes the pictures and the page, atomically, and lists them', async () => {
    const out = path.join(dir, 'run');
    await mkdir(out);
    const files = await writeRunReport(out, {
      config,
      history: twoStageHistory(),
      metrics,
      skipped: [],
      topLosses: [{ path: images.red!, trueLabel: 'cat', predicted: 'dog', probability: 0.9, loss: 2.5 }],
    });
    expect(files).toEqual(['curves.png', 'confusion.png', 'top-losses.png', 'report.html']);
    expect((await readdir(out)).sort()).toEqual(['confusion.png', 'curves.png', 'report.html', 'top-losses.png']);
    const html = readFileSync(path.join(out, 'report.html'), 'utf8');
    for (const picture of ['curves.png', 'confusion.png', 'top-losses.png']) {
      const png = readFileSync(path.join(out, picture));
      await expectPicture(png);
      expect(html).toContain(png.toString('base64'));
    }
    expect(html).toContain('<title>finetune report: run</title>');
  });

  it('writes only the page when there is nothing to draw', async () => {
    const out = path.join(dir, 'bare');
    await mkdir(out);
    expect(await writeRunReport(out, { config })).toEqual(['report.html']);
    expect(await readdir(out)).toEqual(['report.html']);
  });

  it("removes an earlier run's pictures that this report does not draw (e.g. --overwrite without a validation set)", async () => {
    const out = path.join(dir, 'rerun');
    await mkdir(out);
    for (const stale of ['curves.png', 'confusion.png', 'top-losses.png', 'report.html']) await writeFile(path.join(out, stale), 'earlier run');
    await writeFile(path.join(out, 'notes.txt'), 'not a report file');
    const files = await writeRunReport(out, { config, history: twoStageHistory() });
    expect(files).toEqual(['curves.png', 'report.html']);
    expect((await readdir(out)).sort()).toEqual(['curves.png', 'notes.txt', 'report.html']);
    await expectPicture(readFileSync(path.join(out, 'curves.png')));
  });

  it('leaves no earlier pictures behind when drawing fails', async () => {
    const out = path.join(dir, 'failed');
    await mkdir(out);
    for (const stale of ['confusion.png', 'top-losses.png', 'report.html']) await writeFile(path.join(out, stale), 'earlier run');
    const wrong = { ...metrics, confusionMatrix: [[1, 2]] };
    await expect(writeRunReport(out, { config, history: twoStageHistory(), metrics: wrong })).rejects.toThrow(/classes/);
    expect(await readdir(out)).toEqual(['curves.png']);
  });
});

describe('formatting helpers', () => {
  it('abbreviates in the middle, keeping both ends', () => {
    expect(abbreviateMiddle('short', 10)).toBe('short');
    const cut = abbreviateMiddle('n01440764_tench_and_more_0042', 16);
    expect(cut).toHaveLength(16);
    expect(cut.startsWith('n01440764')).toBe(true);
    expect(cut.endsWith('0042')).toBe(true);
  });

  it('formats durations, learning rates and ticks', () => {
    expect(formatDuration(8.44)).toBe('8.4s');
    expect(formatDuration(164)).toBe('2m44s');
    expect(formatDuration(3725)).toBe('1h02m');
    expect(formatLr(0.001)).toBe('1e-3');
    expect(formatLr(0.00025)).toBe('2.5e-4');
    expect(niceTicks(0, 0.93).ticks).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0.6, 1).ticks).toEqual([0.6, 0.7, 0.8, 0.9, 1]);
  });
});
