import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage } from '../src/data/decode.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { initEngine } from '../src/engine/backend.js';
import { loadModelDir } from '../src/io/model-io.js';
import { runCli, type CliRun } from './helpers/run-cli.js';
import { needShared, repoRoot, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
let dir: string;
let data: string;
let out: string;

/** Runs the CLI without blocking this worker (a long spawnSync starves vitest's own messages). */
function finetune(...args: string[]) {
  return runCli(process.execPath, [bin, ...args], { cwd: dir, timeout: 300_000 });
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
  /** The run both checks below read: pretrained weights when ../shared has them, else random ones. */
  let pretrained: string | undefined;
  let run: CliRun;
  const readPredictions = () => parseCsv(readFileSync(path.join(out, 'predictions.csv'), 'utf8'));

  beforeAll(async () => {
    pretrained = sharedMobileNetWeights();
    run = await finetune(
      data,
      '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '96', '--weights', pretrained ?? 'none',
      '--epochs', '4', '--fine-tune-epochs', '1', '--batch-size', '16', '--lr', '0.003',
      '--backend', 'wasm', '--out', out,
    );
  }, 300_000);

  it('trains both stages and writes every output with the right contents', async () => {
    expect(run.stderr + run.stdout).not.toMatch(/\r/); // plain lines off a terminal
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/validation accuracy/);

    const files = readdirSync(out).sort();
    expect(files).toEqual([
      'confusion.png', 'curves.png', 'finetune.json', 'history.csv', 'metrics.json', 'model', 'predictions.csv',
      'report.html', 'skipped.csv', 'top-losses.png',
    ]);
    // model/: the tfjs model, its one weights file, and Teachable Machine's metadata.json.
    const modelFiles = readdirSync(path.join(out, 'model')).filter((f) => !f.startsWith('.')).sort();
    expect(modelFiles).toHaveLength(3);
    expect(modelFiles).toEqual(['metadata.json', 'model.json', expect.stringMatching(/^weights-[0-9a-f]+\.bin$/)]);

    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    expect(config.format).toBe('finetune-model/2');
    expect(config.classes).toEqual(['circle', 'square', 'triangle']);
    expect(config.backbone).toMatchObject({ name: 'mobilenetv2', alpha: 0.35 });
    expect(config.input).toMatchObject({ size: 96, resize: 'crop' });
    expect(config.input.preprocessing).toMatchObject({ name: 'mobilenet', channelOrder: 'rgb' });
    expect(config.engine.backend).toBe('wasm');
    expect(config.training).toMatchObject({ epochs: 4, fineTuneEpochs: 1, unfreeze: 2, seed: 42 });
    expect(config.versions.tfjs).toBe(tf.version.tfjs);

    const history = parseCsv(readFileSync(path.join(out, 'history.csv'), 'utf8'));
    expect(history[0]).toEqual(['stage', 'epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'lr', 'seconds']);
    // From random weights (no ../shared) there is one stage training every layer.
    expect(history.slice(1).map((r) => r[0])).toEqual(pretrained ? ['1', '1', '1', '1', '2'] : ['1', '1', '1', '1']);

    const metrics = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    expect(metrics.samples).toBe(18);
    expect(Object.keys(metrics.perClass)).toEqual(['circle', 'square', 'triangle']);
    expect(metrics.confusionMatrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(18);

    const skipped = parseCsv(readFileSync(path.join(out, 'skipped.csv'), 'utf8'));
    expect(skipped[0]).toEqual(['file', 'split', 'reason']);
    expect(skipped.slice(1).map((r) => r[0])).toEqual(['train/circle/broken.jpg']);

    const predictions = readPredictions();
    expect(predictions[0]).toEqual(['file', 'label', 'confidence', 'circle', 'square', 'triangle']);
    expect(predictions.length - 1).toBe(6);
    for (const [file, , confidence, ...probs] of predictions.slice(1)) {
      expect(file).toMatch(/^test\/unknown\//);
      const p = probs.map(Number);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      expect(Number(confidence)).toBe(Math.max(...p));
    }

    // The saved model, fed raw RGB 0–255 at the size finetune.json records (format 2: the
    // preprocessing is the model's first layer), reproduces predictions.csv.
    await initEngine('wasm');
    const model = await loadModelDir(path.join(out, 'model'));
    const [file, , , ...probs] = predictions[1]!;
    const pixels = await decodeImage(path.join(data, file!), { size: 96, resize: 'crop' });
    const output = model.predict(tf.tensor4d(Float32Array.from(pixels), [1, 96, 96, 3])) as tf.Tensor;
    Array.from(output.dataSync()).forEach((p, i) => expect(p).toBeCloseTo(Number(probs[i]), 4));
  });

  // A random backbone learns the shapes only by chance in 5 epochs: accuracy is checked on real weights.
  it('from pretrained weights it learns the shapes: validation accuracy ≥ 0.8, ≥ 5 of 6 test images right', (ctx) => {
    needShared(ctx, 'accuracy after fine-tuning real ImageNet weights', TM_WEIGHTS);
    expect(run.status, run.stderr).toBe(0);
    const metrics = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    expect(metrics.accuracy).toBeGreaterThanOrEqual(0.8);
    const right = readPredictions().slice(1).filter(([file, label]) => path.basename(file!).startsWith(label!)).length;
    expect(right).toBeGreaterThanOrEqual(5);
  });

  it('passes every flag through to the run (recorded in finetune.json)', async () => {
    const flagsOut = path.join(dir, 'flags');
    const run = await finetune(
      data, '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '96', '--weights', sharedMobileNetWeights() ?? 'none',
      '--epochs', '1', '--fine-tune-epochs', '0', '--train-bn', '--resize', 'crop', '--preprocess', 'dataset-mean',
      '--augment', 'strong', '--augment-copies', '3', '--class-weight', 'none', '--batch-size', '8', '--dropout', '0.3', '--patience', '2',
      '--unfreeze', '3', '--fine-tune-lr', '0.0002', '--label-smoothing', '0.1', '--lr-schedule', 'cosine', '--warmup-epochs', '1', '--seed', '5', '--val-split', '0.3', '--backend', 'wasm', '-q', '--out', flagsOut,
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/stage 1 epoch/); // --quiet
    const config = JSON.parse(readFileSync(path.join(flagsOut, 'finetune.json'), 'utf8'));
    expect(config.training).toMatchObject({
      trainBatchNorm: true, resize: 'crop', preprocess: 'dataset-mean', augment: 'strong', augmentCopies: 3, classWeight: 'none',
      batchSize: 8, dropout: 0.3, patience: 2, unfreeze: 3, fineTuneLr: 0.0002, labelSmoothing: 0.1, lrSchedule: 'cosine', warmupEpochs: 1, seed: 5, valSplit: 0.3, backend: 'wasm', epochs: 1,
    });
    expect(config.input.preprocessing.name).toBe('dataset-mean');
  });

  it('--stage1 and --probe-l2 reach the run; without --epochs the head is solved (recorded in finetune.json)', async (ctx) => {
    needShared(ctx, 'a solved head needs pretrained weights', TM_WEIGHTS);
    const solvedOut = path.join(dir, 'solved');
    const run = await finetune(
      data, '--alpha', '0.35', '--image-size', '64', '--weights', sharedMobileNetWeights()!, '--probe-l2', '0.05',
      '--fine-tune-epochs', '1', '--backend', 'wasm', '--out', solvedOut,
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/stage 1: head solved on \d+ rows \(the images unaugmented\) in \d+ L-BFGS iterations/);
    const config = JSON.parse(readFileSync(path.join(solvedOut, 'finetune.json'), 'utf8'));
    expect(config.training).toMatchObject({ stage1: 'lbfgs', probeL2: 0.05 });
    const adamOut = path.join(dir, 'adam-by-epochs');
    const adam = await finetune(
      data, '--alpha', '0.35', '--image-size', '64', '--weights', sharedMobileNetWeights()!, '--epochs', '2',
      '--fine-tune-epochs', '0', '--backend', 'wasm', '--out', adamOut,
    );
    expect(adam.status, adam.stderr).toBe(0);
    expect(adam.stderr).toMatch(/stage 1 epoch 2/);
    expect(JSON.parse(readFileSync(path.join(adamOut, 'finetune.json'), 'utf8')).training).toMatchObject({ stage1: 'adam', epochs: 2 });
  });

  it('refuses to overwrite an earlier run unless told to', async () => {
    const run = await finetune(data, '--out', out, '--weights', 'none');
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/not empty.*--overwrite/);
  });

  it('rejects bad option values with exit status 2, naming the flag and the allowed values', async () => {
    const alpha = await finetune(data, '--alpha', '0.3', '--out', path.join(dir, 'x'));
    expect(alpha.status).toBe(2);
    expect(alpha.stderr).toMatch(/--alpha 0.3.*0.35, 0.5, 0.75, 1, 1.3, 1.4/);
    const backbone = await finetune(data, '--backbone', 'resnet', '--out', path.join(dir, 'x'));
    expect(backbone.status).toBe(2);
    expect(backbone.stderr).toMatch(/mobilenetv2, vgg16/);
    const split = await finetune(data, '--val-split', '1.5', '--out', path.join(dir, 'x'));
    expect(split.status).toBe(2);
    expect(split.stderr).toMatch(/--val-split 1.5/);
    const copies = await finetune(data, '--augment', 'none', '--augment-copies', '3', '--out', path.join(dir, 'x'));
    expect(copies.status).toBe(2);
    expect(copies.stderr).toMatch(/--augment-copies 3 needs augmentation/);
    const solvedEpochs = await finetune(data, '--stage1', 'lbfgs', '--epochs', '3', '--out', path.join(dir, 'x'));
    expect(solvedEpochs.status).toBe(2);
    expect(solvedEpochs.stderr).toMatch(/--epochs 3 sets how long Adam trains the head, but --stage1 lbfgs solves it/);
    const solvedScratch = await finetune(data, '--stage1', 'lbfgs', '--weights', 'none', '--out', path.join(dir, 'x'));
    expect(solvedScratch.status).toBe(2);
    expect(solvedScratch.stderr).toMatch(/--stage1 lbfgs solves a head on pretrained features, but --weights none/);
    const missing = await finetune(path.join(dir, 'nowhere'), '--out', path.join(dir, 'x'), '--weights', 'none');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/nowhere/);
    expect(missing.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace without --verbose
  });
});
