import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine } from '../src/engine/backend.js';
import { parseCsv } from '../src/predict/formats.js';
import { evaluate, topKAccuracy } from '../src/predict/evaluate.js';
import { colorProbabilities, solidPng, writeColorModel } from './helpers/color-model.js';
import { repoRoot } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
let dir: string;
/** Classes red, green, blue: p = softmax(4 · (r, g, b) / 255) for a solid-colour image. */
let rgbModel: string;
/** Classes red, green: p = softmax(4 · (r, g) / 255). */
let rgModel: string;
/** A training-layout folder: valid/ and test/ with red/, green/, blue/ and a purple/ the model does not know. */
let layout: string;
/** Plain class folders red/, green/ (2 images each). */
let plain: string;

type RGB = [number, number, number];
/** valid/: the hand-worked case below. */
const VALID: Record<string, Record<string, RGB>> = {
  red: { r1: [255, 0, 0], r2: [200, 0, 0], r3: [0, 180, 60] }, // r3 looks green
  green: { g1: [0, 255, 0], g2: [30, 200, 0] },
  blue: { b1: [0, 0, 255], b2: [220, 0, 100] }, // b2 looks red
  purple: { p1: [128, 0, 128] },
};
const PLAIN: Record<string, Record<string, RGB>> = {
  red: { a: [255, 0, 0], b: [100, 120, 0] }, // b: p(green) = σ(4·20/255) ≈ 0.578
  green: { c: [0, 255, 0], d: [130, 110, 0] }, // d: p(green) = σ(−4·20/255) ≈ 0.422
};

function finetune(args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

beforeAll(async () => {
  if (!existsSync(path.join(repoRoot, 'dist/predict/evaluate.js'))) throw new Error('dist/ is missing or old: run `npm run build` (npm test does it first)');
  await initEngine('wasm');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-evaluate-'));
  rgbModel = path.join(dir, 'rgb-model');
  rgModel = path.join(dir, 'rg-model');
  await writeColorModel(rgbModel, { classes: ['red', 'green', 'blue'] });
  await writeColorModel(rgModel, { classes: ['red', 'green'] });
  layout = path.join(dir, 'layout');
  for (const [cls, files] of Object.entries(VALID)) {
    for (const [name, rgb] of Object.entries(files)) await solidPng(path.join(layout, 'valid', cls, `${name}.png`), rgb);
  }
  await solidPng(path.join(layout, 'train/red/t.png'), [255, 0, 0]);
  await solidPng(path.join(layout, 'test/red/x.png'), [255, 0, 0]);
  await solidPng(path.join(layout, 'test/green/y.png'), [255, 0, 0]); // wrong
  plain = path.join(dir, 'plain');
  for (const [cls, files] of Object.entries(PLAIN)) {
    for (const [name, rgb] of Object.entries(files)) await solidPng(path.join(plain, cls, `${name}.png`), rgb);
  }
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('evaluate (library), against hand-worked figures', () => {
  it('3 classes: accuracy, balanced accuracy, per-class P/R/F1, confusion matrix, top-k, loss, top losses', async () => {
    const r = await evaluate(rgbModel, layout, { batchSize: 2 });
    expect(r.split).toBe('valid');
    expect(r.classes).toEqual(['red', 'green', 'blue']);
    const m = r.metrics;
    expect(m.samples).toBe(7);
    // rows: true red, green, blue; columns: predicted.  r3 → green, b2 → red.
    expect(m.confusionMatrix).toEqual([
      [2, 1, 0],
      [0, 2, 0],
      [1, 0, 1],
    ]);
    expect(m.accuracy).toBeCloseTo(5 / 7, 10);
    expect(m.perClass.red).toEqual({ precision: expect.closeTo(2 / 3, 10), recall: expect.closeTo(2 / 3, 10), f1: expect.closeTo(2 / 3, 10), support: 3 });
    expect(m.perClass.green).toEqual({ precision: expect.closeTo(2 / 3, 10), recall: 1, f1: expect.closeTo(4 / 5, 10), support: 2 });
    expect(m.perClass.blue).toEqual({ precision: 1, recall: 0.5, f1: expect.closeTo(2 / 3, 10), support: 2 });
    expect(m.balancedAccuracy).toBeCloseTo((2 / 3 + 1 + 1 / 2) / 3, 10);
    // r3: red ranks 3rd (green, blue above it); b2: blue ranks 2nd (after red).
    expect(m.topKAccuracy).toEqual({ '1': expect.closeTo(5 / 7, 10), '2': expect.closeTo(6 / 7, 10), '3': 1 });
    expect(m.rocAuc).toBeUndefined();
    const trueProbability = Object.entries(VALID)
      .filter(([cls]) => cls !== 'purple')
      .flatMap(([cls, files]) => Object.values(files).map((rgb) => colorProbabilities(rgb, 3)[['red', 'green', 'blue'].indexOf(cls)]!));
    expect(m.loss).toBeCloseTo(-trueProbability.reduce((a, p) => a + Math.log(p), 0) / 7, 5);
    // Top losses: r3 (−ln p ≈ 3.01) before b2 (≈ 2.05).
    expect(r.errors.map((e) => [e.file, e.label, e.predicted])).toEqual([
      ['red/r3.png', 'red', 'green'],
      ['blue/b2.png', 'blue', 'red'],
    ]);
    expect(r.errors[0]!.loss).toBeCloseTo(-Math.log(colorProbabilities([0, 180, 60], 3)[0]!), 5);
    expect(r.extraClasses).toEqual([{ name: 'purple', files: 1 }]);
    expect(r.missingClasses).toEqual([]);
  });

  it('2 classes: ROC AUC of the second class; a class without a folder is reported missing', async () => {
    const r = await evaluate(rgModel, plain);
    expect(r.split).toBeUndefined();
    // p(green): red images 0.018, 0.578; green images 0.982, 0.422 → 3 of 4 pairs ordered right.
    expect(r.metrics.rocAuc).toBeCloseTo(0.75, 10);
    expect(r.metrics.rocAucPositiveClass).toBe('green');
    expect(r.metrics.accuracy).toBe(0.5);

    const missing = await evaluate(rgbModel, plain);
    expect(missing.missingClasses).toEqual(['blue']);
    expect(missing.metrics.perClass.blue!.support).toBe(0);
    expect(missing.metrics.samples).toBe(4);
  });

  it('top-k accuracy breaks ties by class order, as argmax does', () => {
    const probs = Float32Array.from([0.4, 0.4, 0.2, 0.4, 0.4, 0.2]);
    expect(topKAccuracy(probs, [0, 1], 3, 2)).toEqual({ '1': 0.5, '2': 1 });
  });
});

describe('finetune evaluate (child process)', () => {
  it('prints a table, writes metrics.json and errors.csv into --out', () => {
    const out = path.join(dir, 'eval-out');
    const run = finetune(['evaluate', rgbModel, layout, '--out', out, '--backend', 'wasm', '--top-k', '2']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/7 images \(valid\/\): accuracy 0\.7143, balanced accuracy 0\.7222/);
    expect(run.stdout).toMatch(/top-2 accuracy 0\.8571/);
    expect(run.stdout).toMatch(/^green\s+0\.6667\s+1\.0000\s+0\.8000\s+2$/m);
    expect(run.stdout).toMatch(/^blue\s+1\s+0\s+1$/m); // confusion-matrix row
    expect(run.stdout).toMatch(/not scored.*purple \(1 file\)/);
    expect(run.stderr).toMatch(/purple\/ \(1 file\) is not one of the model's classes/);

    const metrics = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    expect(metrics).toMatchObject({
      split: 'valid',
      classes: ['red', 'green', 'blue'],
      samples: 7,
      confusionMatrix: [[2, 1, 0], [0, 2, 0], [1, 0, 1]],
      extraClasses: [{ name: 'purple', files: 1 }],
      missingClasses: [],
      unreadable: [],
    });
    expect(metrics.accuracy).toBeCloseTo(5 / 7, 10);
    expect(metrics.topKAccuracy['2']).toBeCloseTo(6 / 7, 10);
    const errors = parseCsv(readFileSync(path.join(out, 'errors.csv'), 'utf8'));
    expect(errors[0]).toEqual(['file', 'label', 'predicted', 'loss', 'p_label', 'p_predicted']);
    expect(errors.slice(1).map((e) => e[0])).toEqual(['red/r3.png', 'blue/b2.png']);
    expect(Number(errors[1]![4])).toBeCloseTo(colorProbabilities([0, 180, 60], 3)[0]!, 5);
  });

  it('--split picks the split; bad --split or --out are usage errors', () => {
    mkdirSync(path.join(dir, 'cwd-out'), { recursive: true });
    const test = finetune(['evaluate', rgbModel, layout, '--split', 'test', '--out', 'cwd-out', '--backend', 'wasm', '-q']);
    expect(test.status, test.stderr).toBe(0);
    expect(test.stdout).toMatch(/2 images \(test\/\): accuracy 0\.5000/);
    expect(JSON.parse(readFileSync(path.join(dir, 'cwd-out/metrics.json'), 'utf8')).split).toBe('test');

    const noLayout = finetune(['evaluate', rgbModel, plain, '--split', 'test', '--backend', 'wasm']);
    expect(noLayout.status).toBe(2);
    expect(noLayout.stderr).toMatch(/--split test needs the training layout/);

    const intoModel = finetune(['evaluate', rgbModel, plain, '--out', rgbModel, '--backend', 'wasm']);
    expect(intoModel.status).toBe(2);
    expect(intoModel.stderr).toMatch(/is the model's folder/);

    const noClasses = finetune(['evaluate', rgbModel, path.join(layout, 'valid', 'red'), '--backend', 'wasm']);
    expect(noClasses.status).toBe(1);
    expect(noClasses.stderr).toMatch(/no folder named after a class of the model/);
  });
});
