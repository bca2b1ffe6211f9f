import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverLayout } from '../src/data/layout.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { fineTune } from '../src/finetune.js';
import { findRuns } from '../src/runs/runs.js';
import { formatRunsTable } from '../src/runs/format.js';

let dir: string;

/** A shapes folder whose test/ holds class folders (copies of validation images) and unknown/ images. */
async function withLabelledTest(name: string, swapLabels: boolean): Promise<string> {
  const data = path.join(dir, name);
  await makeShapesDataset(data, { trainPerClass: 10, validPerClass: 4, testCount: 3, size: 48, seed: 11 });
  const classes = readdirSync(path.join(data, 'train')).sort();
  mkdirSync(path.join(data, 'test/unknown'), { recursive: true });
  for (const f of readdirSync(path.join(data, 'test')).filter((f) => f.endsWith('.png'))) {
    cpSync(path.join(data, 'test', f), path.join(data, 'test/unknown', f));
    rmSync(path.join(data, 'test', f));
  }
  classes.forEach((c, i) => {
    // Swapped: each class's images go into the next class's folder (every label wrong).
    const target = path.join(data, 'test', swapLabels ? classes[(i + 1) % classes.length]! : c);
    mkdirSync(target, { recursive: true });
    for (const f of readdirSync(path.join(data, 'valid', c))) cpSync(path.join(data, 'valid', c, f), path.join(target, `${c}-${f}`));
  });
  return data;
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-test-split-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a labelled test split (test/<class>/)', () => {
  it('is found beside the images to label', async () => {
    const data = await withLabelledTest('layout', false);
    const layout = await discoverLayout(data);
    expect(layout.testLabelled).toHaveLength(12);
    expect(layout.test).toHaveLength(3); // test/unknown/ is still labelled by the model
    expect(new Set(layout.testLabelled!.map((f) => f.label))).toEqual(new Set([0, 1, 2]));
  });

  it('is evaluated after training, reported apart, and never steers training', async () => {
    const run = async (swap: boolean) => {
      const data = await withLabelledTest(swap ? 'swapped' : 'right', swap);
      const out = path.join(dir, `out-${swap ? 'swapped' : 'right'}`);
      const result = await fineTune({
        data, out, alpha: 0.35, imageSize: 32, weights: 'none', epochs: 3, batchSize: 8, augment: 'none', backend: 'wasm', patience: 1,
      });
      return { result, out, metrics: JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8')) };
    };
    const right = await run(false);
    const swapped = await run(true);
    // Same training either way: the test labels were never looked at before the end.
    expect(swapped.result.history).toEqual(right.result.history.map((h) => ({ ...h, seconds: expect.any(Number) })));
    const weights = (out: string) => {
      const file = JSON.parse(readFileSync(path.join(out, 'model/model.json'), 'utf8')).weightsManifest[0].paths[0];
      return readFileSync(path.join(out, 'model', file));
    };
    expect(weights(swapped.out).equals(weights(right.out))).toBe(true);
    // Reported apart, with its interval: a model that is right on a test image is wrong on its swapped copy.
    expect(right.metrics.test).toMatchObject({ samples: 12, accuracyCI95: [expect.any(Number), expect.any(Number)] });
    expect(right.metrics.test.accuracy + swapped.metrics.test.accuracy).toBeLessThanOrEqual(1 + 1e-9);
    expect(right.metrics.accuracy).toBeCloseTo(swapped.metrics.accuracy, 10); // validation unchanged
    expect(right.result.testMetrics?.accuracy).toBe(right.metrics.test.accuracy);
    expect(right.result.predictions).toHaveLength(3);
    const config = JSON.parse(readFileSync(path.join(right.out, 'finetune.json'), 'utf8'));
    expect(config.results.testAccuracy).toBe(right.metrics.test.accuracy);
    expect(config.data.testLabelled).toEqual({ circle: 4, square: 4, triangle: 4 });
    const table = formatRunsTable(await findRuns(dir));
    expect(table).toMatch(/test acc/);
  });
});

describe('training warns about the data', () => {
  it('names byte-identical images across splits and a class imbalance above 3, with details in finetune.json', async () => {
    const data = path.join(dir, 'leaky');
    await makeShapesDataset(data, { trainPerClass: 4, validPerClass: 2, testCount: 0, size: 32, seed: 3 });
    const circle = readdirSync(path.join(data, 'train/circle'));
    cpSync(path.join(data, 'train/circle', circle[0]!), path.join(data, 'valid/circle/leaked.png'));
    // 4 squares against 13 circles: imbalance 3.25.
    for (let i = 0; i < 9; i++) cpSync(path.join(data, 'train/circle', circle[i % circle.length]!), path.join(data, 'train/circle', `extra-${i}.png`));
    const warnings: string[] = [];
    const reporter = { info: () => {}, warn: (m: string) => void warnings.push(m), task: () => ({ update: () => {}, finish: () => {} }) };
    const out = path.join(dir, 'out-leaky');
    await fineTune({ data, out, alpha: 0.35, imageSize: 32, weights: 'none', epochs: 1, batchSize: 8, augment: 'none', backend: 'wasm', reporter });
    expect(warnings.find((w) => /byte-identical in two splits.*valid\/circle\/leaked\.png/.test(w))).toBeDefined();
    expect(warnings.find((w) => /imbalanced: circle has 3\.3× the training images of (square|triangle)/.test(w))).toBeDefined();
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    const leaked = config.data.warnings.crossSplitDuplicates.find((g: { files: string[] }) => g.files.includes('valid/circle/leaked.png'));
    expect(new Set(leaked.splits)).toEqual(new Set(['train', 'valid']));
    expect(config.data.warnings.imbalance).toBeCloseTo(13 / 4, 5);
  });
});

describe('training exports at the end (--export)', () => {
  it('writes each format asked for into <out>/export/, and refuses an unknown one before any work', async () => {
    const data = path.join(dir, 'export-data');
    await makeShapesDataset(data, { trainPerClass: 4, validPerClass: 2, testCount: 0, size: 32, seed: 4 });
    const out = path.join(dir, 'out-export');
    const base = { data, out, alpha: 0.35, imageSize: 32, weights: 'none', epochs: 1, batchSize: 8, augment: 'none' as const, backend: 'wasm' as const };
    await expect(fineTune({ ...base, export: ['keras', 'tensorrt'] })).rejects.toThrow(/--format tensorrt is not a format/);
    expect(readdirSync(dir)).not.toContain('out-export'); // nothing was written
    const result = await fineTune({ ...base, export: ['keras', 'tfjs'] });
    expect(readdirSync(path.join(out, 'export')).sort()).toEqual(['model.h5', 'tfjs']);
    expect(result.files).toEqual(expect.arrayContaining(['export/model.h5', 'export/tfjs']));
  });
});
