import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preprocessInto, type Preprocessing } from '../src/backbones/preprocess.js';
import { decodeImage } from '../src/data/decode.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { initEngine } from '../src/engine/backend.js';
import { loadModelDir } from '../src/io/model-io.js';
import { repoRoot, sharedMobileNetWeights } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
let dir: string;
let data: string;
let out: string;

function finetune(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: dir, timeout: 300_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function parseCsv(text: string): string[][] {
  return text.trim().split('\n').map((line) => line.split(','));
}

beforeAll(async () => {
  if (!existsSync(path.join(repoRoot, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-cli-'));
  data = path.join(dir, 'data');
  out = path.join(dir, 'out');
  await makeShapesDataset(data, { trainPerClass: 16, validPerClass: 6, testCount: 6, size: 64, seed: 11 });
  writeFileSync(path.join(data, 'train/circle/broken.jpg'), 'this is not a jpeg');
  writeFileSync(path.join(data, 'train/circle/notes.txt'), 'not an image');
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('finetune <data> (child process)', () => {
  it('trains both stages and writes every output with the right contents', async () => {
    const shared = sharedMobileNetWeights();
    const weights = shared ?? 'none';
    const run = finetune(
      data,
      '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '96', '--weights', weights,
      '--epochs', '4', '--fine-tune-epochs', '1', '--batch-size', '16', '--lr', '0.003',
      '--backend', 'wasm', '--out', out,
    );
    expect(run.stderr + run.stdout).not.toMatch(/\r/); // plain lines off a terminal
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/validation accuracy/);

    const files = readdirSync(out).sort();
    expect(files).toEqual([
      'confusion.png', 'curves.png', 'finetune.json', 'history.csv', 'metrics.json', 'model', 'predictions.csv',
      'report.html', 'skipped.csv', 'top-losses.png',
    ]);
    expect(readdirSync(path.join(out, 'model')).filter((f) => !f.startsWith('.')).length).toBe(2);

    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    expect(config.classes).toEqual(['circle', 'square', 'triangle']);
    expect(config.backbone).toMatchObject({ name: 'mobilenetv2', alpha: 0.35 });
    expect(config.input).toMatchObject({ size: 96, resize: 'stretch' });
    expect(config.input.preprocessing).toMatchObject({ name: 'mobilenet', channelOrder: 'rgb' });
    expect(config.engine.backend).toBe('wasm');
    expect(config.training).toMatchObject({ epochs: 4, fineTuneEpochs: 1, unfreeze: 2, seed: 42 });
    expect(config.versions.tfjs).toBe(tf.version.tfjs);

    const history = parseCsv(readFileSync(path.join(out, 'history.csv'), 'utf8'));
    expect(history[0]).toEqual(['stage', 'epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'lr', 'seconds']);
    // From random weights (no ../shared) there is one stage training every layer.
    expect(history.slice(1).map((r) => r[0])).toEqual(shared ? ['1', '1', '1', '1', '2'] : ['1', '1', '1', '1']);

    const metrics = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    expect(metrics.samples).toBe(18);
    expect(Object.keys(metrics.perClass)).toEqual(['circle', 'square', 'triangle']);
    expect(metrics.confusionMatrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(18);
    if (shared) expect(metrics.accuracy).toBeGreaterThanOrEqual(0.8);

    const skipped = parseCsv(readFileSync(path.join(out, 'skipped.csv'), 'utf8'));
    expect(skipped[0]).toEqual(['file', 'split', 'reason']);
    expect(skipped.slice(1).map((r) => r[0])).toEqual(['train/circle/broken.jpg']);

    const predictions = parseCsv(readFileSync(path.join(out, 'predictions.csv'), 'utf8'));
    expect(predictions[0]).toEqual(['file', 'label', 'confidence', 'circle', 'square', 'triangle']);
    expect(predictions.length - 1).toBe(6);
    let right = 0;
    for (const [file, label, confidence, ...probs] of predictions.slice(1)) {
      expect(file).toMatch(/^test\/unknown\//);
      const p = probs.map(Number);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      expect(Number(confidence)).toBe(Math.max(...p));
      if (path.basename(file!).startsWith(label!)) right += 1;
    }
    if (shared) expect(right).toBeGreaterThanOrEqual(5);

    // The saved model + the preprocessing recorded in finetune.json reproduce predictions.csv.
    await initEngine('wasm');
    const model = await loadModelDir(path.join(out, 'model'));
    const [file, , , ...probs] = predictions[1]!;
    const pixels = await decodeImage(path.join(data, file!), { size: 96, resize: 'stretch' });
    const input = new Float32Array(96 * 96 * 3);
    preprocessInto(pixels, config.input.preprocessing as Preprocessing, input);
    const output = model.predict(tf.tensor4d(input, [1, 96, 96, 3])) as tf.Tensor;
    Array.from(output.dataSync()).forEach((p, i) => expect(p).toBeCloseTo(Number(probs[i]), 4));
  });

  it('passes every flag through to the run (recorded in finetune.json)', () => {
    const flagsOut = path.join(dir, 'flags');
    const run = finetune(
      data, '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '96', '--weights', sharedMobileNetWeights() ?? 'none',
      '--epochs', '1', '--fine-tune-epochs', '0', '--train-bn', '--resize', 'crop', '--preprocess', 'dataset-mean',
      '--augment', 'none', '--augment-copies', '3', '--class-weight', 'none', '--batch-size', '8', '--dropout', '0.3', '--patience', '2',
      '--unfreeze', '3', '--fine-tune-lr', '0.0002', '--seed', '5', '--val-split', '0.3', '--backend', 'wasm', '-q', '--out', flagsOut,
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/stage 1 epoch/); // --quiet
    const config = JSON.parse(readFileSync(path.join(flagsOut, 'finetune.json'), 'utf8'));
    expect(config.training).toMatchObject({
      trainBatchNorm: true, resize: 'crop', preprocess: 'dataset-mean', augment: 'none', augmentCopies: 3, classWeight: 'none',
      batchSize: 8, dropout: 0.3, patience: 2, unfreeze: 3, fineTuneLr: 0.0002, seed: 5, valSplit: 0.3, backend: 'wasm', epochs: 1,
    });
    expect(config.input.preprocessing.name).toBe('dataset-mean');
  });

  it('refuses to overwrite an earlier run unless told to', () => {
    const run = finetune(data, '--out', out, '--weights', 'none');
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/not empty.*--overwrite/);
  });

  it('rejects bad option values with exit status 2, naming the flag and the allowed values', () => {
    const alpha = finetune(data, '--alpha', '0.3', '--out', path.join(dir, 'x'));
    expect(alpha.status).toBe(2);
    expect(alpha.stderr).toMatch(/--alpha 0.3.*0.35, 0.5, 0.75, 1, 1.3, 1.4/);
    const backbone = finetune(data, '--backbone', 'resnet', '--out', path.join(dir, 'x'));
    expect(backbone.status).toBe(2);
    expect(backbone.stderr).toMatch(/mobilenetv2, vgg16/);
    const split = finetune(data, '--val-split', '1.5', '--out', path.join(dir, 'x'));
    expect(split.status).toBe(2);
    expect(split.stderr).toMatch(/--val-split 1.5/);
    const missing = finetune(path.join(dir, 'nowhere'), '--out', path.join(dir, 'x'), '--weights', 'none');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/nowhere/);
    expect(missing.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace without --verbose
  });
});
