import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeMessyDataset, type MessyCase } from '../fixtures/make-messy.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { runCli, type CliRun } from './helpers/run-cli.js';
import { needShared, repoRoot, sharedMobileNetWeights, sharedPath, TM_WEIGHTS } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
let dir: string;
const weights = () => sharedMobileNetWeights() ?? 'none';
const quick = ['--alpha', '0.35', '--image-size', '32', '--epochs', '1', '--fine-tune-epochs', '0', '--backend', 'wasm'];

/** Runs the CLI without blocking this worker (a long spawnSync starves vitest's own messages). */
function finetune(...args: string[]) {
  return runCli(process.execPath, [bin, ...args], { timeout: 300_000 });
}

/** The error line a person sees: one line, no stack trace. */
function expectOneLineError(run: { status: number | null; stderr: string }, status: number, pattern: RegExp) {
  expect(run.status, run.stderr).toBe(status);
  expect(run.stderr).toMatch(pattern);
  expect(run.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-messy-'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a messy image folder', () => {
  let cases: MessyCase[];
  let out: string;
  let run: CliRun;

  beforeAll(async () => {
    const data = path.join(dir, 'messy');
    cases = await makeMessyDataset(data);
    out = path.join(dir, 'messy-out');
    run = await finetune(data, '--weights', weights(), ...quick, '--out', out);
  });

  it('trains: every usable file is used and every unusable one is listed with its reason', () => {
    expect(run.status, run.stderr).toBe(0);
    const skipped = readFileSync(path.join(out, 'skipped.csv'), 'utf8').trim().split('\n').slice(1);
    const reasons = new Map(skipped.map((line) => [line.slice(0, line.indexOf(',')), line]));
    for (const c of cases.filter((c) => c.expect === 'skipped')) {
      expect(reasons.has(c.file), `${c.what} (${c.file}) should be in skipped.csv`).toBe(true);
      expect(reasons.get(c.file), c.what).toMatch(c.reason!);
    }
    expect(reasons.size).toBe(cases.filter((c) => c.expect === 'skipped').length);
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    const used = cases.filter((c) => c.expect === 'used').length;
    expect(config.data.train.circle).toBe(10 + used); // the 10 good circles + every usable odd file
    expect(config.data.ignored.hidden).toBeGreaterThanOrEqual(1);
    expect(config.data.ignored.notImage).toBeGreaterThanOrEqual(1);
    expect(run.stdout).toMatch(new RegExp(`skipped ${reasons.size} files`));
    console.info(
      `messy corpus: ${cases.length} cases: ${used} used, ${reasons.size} skipped with a reason, ` +
        `${cases.filter((c) => c.expect === 'ignored').length} ignored (hidden / not an image)`,
    );
  });
});

describe('layouts that cannot train say what to do', () => {
  it('a missing path, or a file instead of a folder', async () => {
    expectOneLineError(await finetune(path.join(dir, 'nope'), ...quick, '--out', path.join(dir, 'o1')), 1, /not found.*\n?.*Expected a folder like/s);
    const file = path.join(dir, 'a-file.jpg');
    writeFileSync(file, 'x');
    expectOneLineError(await finetune(file, ...quick, '--out', path.join(dir, 'o2')), 1, /not a folder/i);
  });

  it('images directly in the root: explains the expected layout', async () => {
    const root = path.join(dir, 'flat');
    mkdirSync(root, { recursive: true });
    for (let i = 0; i < 3; i++) await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f00' } }).png().toFile(path.join(root, `${i}.png`));
    expectOneLineError(await finetune(root, ...quick, '--out', path.join(dir, 'o3')), 1, /train\/<class>/);
  });

  it('one class only; an empty class; a validation class train lacks; a class with no usable image', async () => {
    const one = path.join(dir, 'one');
    await makeShapesDataset(one, { classes: ['circle'], trainPerClass: 3, validPerClass: 0, testCount: 0, size: 16 });
    expectOneLineError(await finetune(one, ...quick, '--out', path.join(dir, 'o4')), 1, /2 classes|only one class|one class/i);

    const empty = path.join(dir, 'empty-class');
    await makeShapesDataset(empty, { trainPerClass: 3, validPerClass: 0, testCount: 0, size: 16 });
    mkdirSync(path.join(empty, 'train/hexagon'));
    expectOneLineError(await finetune(empty, ...quick, '--out', path.join(dir, 'o5')), 1, /hexagon/);

    const extra = path.join(dir, 'extra-valid');
    await makeShapesDataset(extra, { trainPerClass: 3, validPerClass: 1, testCount: 0, size: 16 });
    mkdirSync(path.join(extra, 'valid/star'));
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0' } }).png().toFile(path.join(extra, 'valid/star/s.png'));
    expectOneLineError(await finetune(extra, ...quick, '--out', path.join(dir, 'o6')), 1, /star/);

    const unusable = path.join(dir, 'unusable');
    await makeShapesDataset(unusable, { trainPerClass: 3, validPerClass: 0, testCount: 0, size: 16 });
    rmSync(path.join(unusable, 'train/square'), { recursive: true });
    mkdirSync(path.join(unusable, 'train/square'));
    writeFileSync(path.join(unusable, 'train/square/a.jpg'), 'not an image');
    expectOneLineError(await finetune(unusable, ...quick, '--weights', 'none', '--out', path.join(dir, 'o7')), 1, /no usable training images for class 'square'/);
  });

  it('an empty test/ folder is fine: no predictions', async () => {
    const data = path.join(dir, 'empty-test');
    await makeShapesDataset(data, { trainPerClass: 4, validPerClass: 2, testCount: 0, size: 16 });
    mkdirSync(path.join(data, 'test/unknown'), { recursive: true });
    const out = path.join(dir, 'o8');
    const run = await finetune(data, ...quick, '--weights', weights(), '--out', out);
    expect(run.status, run.stderr).toBe(0);
    expect(existsSync(path.join(out, 'predictions.csv'))).toBe(false);
  });

  it('thousands of classes train', async () => {
    const data = path.join(dir, 'many');
    const pixel = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#888' } }).png().toBuffer();
    for (let c = 0; c < 1200; c++) {
      const folder = path.join(data, 'train', `class-${String(c).padStart(4, '0')}`);
      mkdirSync(folder, { recursive: true });
      writeFileSync(path.join(folder, 'a.png'), pixel);
      writeFileSync(path.join(folder, 'b.png'), pixel);
    }
    const out = path.join(dir, 'o9');
    const run = await finetune(data, ...quick, '--weights', weights(), '--batch-size', '64', '--out', out);
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8')).classes).toHaveLength(1200);
  }, 600_000); // 2,400 images: over a minute on 2 busy cores
});

describe('weights that do not fit say which layer', () => {
  it('weights of another alpha', async (ctx) => {
    needShared(ctx, 'real α=0.35 weights given for α=1.0', TM_WEIGHTS);
    const data = path.join(dir, 'messy');
    expectOneLineError(await finetune(data, '--alpha', '1.0', '--image-size', '96', '--weights', sharedPath(TM_WEIGHTS), '--out', path.join(dir, 'o10')), 1, /Conv1\/kernel.*alpha/s);
  });

  it('a truncated .h5 file', async (ctx) => {
    const H5 = 'weights/mobilenet_2_5_224_tf_no_top.h5';
    needShared(ctx, 'cutting a real .h5 file short', H5);
    const h5 = path.join(dir, 'cut.h5');
    const real = sharedPath(H5);
    writeFileSync(h5, readFileSync(real).subarray(0, 100_000));
    expectOneLineError(await finetune(path.join(dir, 'messy'), ...quick, '--weights', h5, '--out', path.join(dir, 'o11')), 1, /cut\.h5/);
  });
});
