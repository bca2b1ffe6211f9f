/**
 * The self-contained model folder (format finetune-model/2), `finetune export`, and what other
 * tools see of our models: plain tf.loadLayersModel, Teachable Machine's library arithmetic, Keras.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CAFFE_PREPROCESSING, MOBILENET_PREPROCESSING, preprocessInto, withDatasetMean, type Preprocessing } from '../src/backbones/preprocess.js';
import { getBackbone } from '../src/backbones/registry.js';
import { loadBackboneWeights, seedRandomWeights } from '../src/backbones/weights.js';
import { decodeImage } from '../src/data/decode.js';
import { initEngine } from '../src/engine/backend.js';
import { EXPORT_FORMATS, exportFormat, exportRun } from '../src/export/index.js';
import { saveClassifierModel } from '../src/io/classifier-model.js';
import { modelArtifacts, saveModelDir } from '../src/io/model-io.js';
import { preprocessingAffine, withPreprocessingLayer } from '../src/io/preprocess-layer.js';
import { loadClassifier, MODEL_FORMAT } from '../src/predict/classifier.js';
import { attachHead } from '../src/train/head.js';
import { runCli } from './helpers/run-cli.js';
import { repoRoot, sharedMobileNetWeights } from './helpers/shared.js';

const SIZE = 96;
const CLASSES = ['circle', 'square', 'triangle'];
const bin = path.join(repoRoot, 'bin/finetune.js');
const imageDir = path.join(repoRoot, 'fixtures/shapes/test/unknown');

let dir: string;
/** A run folder in format 2 (model/ takes raw pixels) and one written the old way (format 1). */
let newRun: string;
let oldRun: string;
let files: string[];
let pixels: Uint8Array[];
/** What the trained model gives on the preprocessed images: what predict gave before format 2. */
let reference: Float32Array;
let server: Server;
let baseUrl: string;

const finetuneCli = (args: string[]) => runCli(process.execPath, [bin, ...args], { cwd: dir, timeout: 120_000 });

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function runConfig(format: string, preprocessing: Preprocessing) {
  return {
    format,
    created: new Date().toISOString(),
    classes: CLASSES,
    backbone: { name: 'mobilenetv2', alpha: 0.35, weights: 'test' },
    input: { size: SIZE, channels: 3, resize: 'stretch', preprocessing },
    versions: { tfjs: tf.version.tfjs },
    results: {},
  };
}

/** A batch of raw pixels as float32 [n, SIZE, SIZE, 3]. */
const rawBatch = () => tf.tensor4d(Float32Array.from(pixels.flatMap((p) => [...p])), [pixels.length, SIZE, SIZE, 3]);

/** Serves `dir`'s files over HTTP on the loopback, so models load with plain tf.loadLayersModel(url), as in a browser. */
function serve(root: string): Promise<Server> {
  const s = createServer((req, res) => {
    const file = path.join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200).end(readFileSync(file));
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

beforeAll(async () => {
  if (!existsSync(path.join(repoRoot, 'dist/cli/export.js'))) throw new Error('dist/ is missing or old: run `npm run build` (npm test does it first)');
  await initEngine('wasm');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-export-'));
  // The real backbone (ImageNet weights where ../shared has them; the equivalences below hold for
  // any weights) with a seeded head: accuracy does not matter here, only that every path agrees.
  const spec = getBackbone('mobilenetv2');
  const backbone = spec.build({ alpha: 0.35, imageSize: SIZE });
  const weights = sharedMobileNetWeights();
  if (weights) await loadBackboneWeights(backbone, weights);
  else seedRandomWeights(backbone, 3);
  const model = attachHead(backbone, { numClasses: CLASSES.length, dropout: 0.2, seed: 7 });
  const preprocessing = MOBILENET_PREPROCESSING;

  files = readdirSync(imageDir).sort().map((f) => path.join(imageDir, f));
  pixels = await Promise.all(files.map((f) => decodeImage(f, { size: SIZE, resize: 'stretch' })));
  const per = SIZE * SIZE * 3;
  const input = new Float32Array(pixels.length * per);
  pixels.forEach((p, i) => preprocessInto(p, preprocessing, input, i * per));
  reference = tf.tidy(() => (model.predict(tf.tensor4d(input, [pixels.length, SIZE, SIZE, 3])) as tf.Tensor).dataSync() as Float32Array);

  oldRun = path.join(dir, 'old-run');
  await saveModelDir(model, path.join(oldRun, 'model'));
  writeFileSync(path.join(oldRun, 'finetune.json'), JSON.stringify(runConfig('finetune-model/1', preprocessing)));
  newRun = path.join(dir, 'new-run');
  await saveClassifierModel(model, path.join(newRun, 'model'), { classes: CLASSES, imageSize: SIZE, resize: 'stretch', preprocessing });
  writeFileSync(path.join(newRun, 'finetune.json'), JSON.stringify(runConfig(MODEL_FORMAT, preprocessing)));
  model.dispose();
  server = await serve(dir);
  baseUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}, 120_000);

afterAll(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the model folder (format 2) takes raw RGB pixels', () => {
  it('plain tf.loadLayersModel on model/model.json, fed raw 0–255 values, gives the probabilities of the trained model', async () => {
    expect(MODEL_FORMAT).toBe('finetune-model/2');
    const model = await tf.loadLayersModel(`${baseUrl}/new-run/model/model.json`);
    expect(model.layers[1]!.name).toBe('preprocess');
    expect(model.inputs[0]!.shape).toEqual([null, SIZE, SIZE, 3]);
    const probs = tf.tidy(() => (model.predict(rawBatch()) as tf.Tensor).dataSync());
    model.dispose();
    expect(maxDiff(probs, reference)).toBeLessThan(1e-4);
    // Not a trivially uniform output: the images get different answers.
    expect(Math.max(...probs) - Math.min(...probs)).toBeGreaterThan(0.05);

    const classifier = await loadClassifier(newRun, { backend: 'wasm' });
    expect(classifier.rawInput).toBe(true);
    const viaPredict = await classifier.predictPixels(pixels);
    classifier.dispose();
    expect(maxDiff(viaPredict, probs)).toBeLessThan(1e-4);
  });

  it("writes Teachable Machine's metadata.json beside it", () => {
    const metadata = JSON.parse(readFileSync(path.join(newRun, 'model/metadata.json'), 'utf8'));
    expect(metadata).toMatchObject({
      labels: CLASSES,
      imageSize: SIZE,
      tfjsVersion: tf.version.tfjs,
      packageName: 'finetune',
      modelName: 'finetune-model',
      grayscale: false,
      userMetadata: {},
      finetune: { input: 'rgb-0-255', resize: 'stretch', preprocessing: MOBILENET_PREPROCESSING },
    });
    expect(metadata.packageVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(new Date(metadata.timeStamp).getTime()).toBeGreaterThan(0);
  });

  it('an old format-1 run folder still predicts as before, and a new one the same, through `finetune predict`', async () => {
    const oldClassifier = await loadClassifier(oldRun, { backend: 'wasm' });
    expect(oldClassifier.rawInput).toBe(false);
    expect(maxDiff(await oldClassifier.predictPixels(pixels), reference)).toBeLessThan(1e-5);
    oldClassifier.dispose();

    for (const run of [oldRun, newRun]) {
      const result = await finetuneCli(['predict', run, imageDir, '--format', 'json', '--backend', 'wasm', '-q']);
      expect(result.status, result.stderr).toBe(0);
      const rows = JSON.parse(result.stdout) as { file: string; probabilities: Record<string, number> }[];
      const byFile = new Map(rows.map((r) => [path.basename(r.file), r.probabilities]));
      const got = files.flatMap((f) => CLASSES.map((c) => byFile.get(path.basename(f))![c]!));
      expect(maxDiff(got, reference), run).toBeLessThan(1e-4);
    }
  });

  it('refuses a finetune.json whose format does not match the model (files from two runs)', async () => {
    const mixed = path.join(dir, 'mixed-run');
    mkdirSync(path.join(mixed, 'model'), { recursive: true });
    for (const f of readdirSync(path.join(newRun, 'model'))) copyFileSync(path.join(newRun, 'model', f), path.join(mixed, 'model', f));
    writeFileSync(path.join(mixed, 'finetune.json'), JSON.stringify(runConfig('finetune-model/1', MOBILENET_PREPROCESSING)));
    await expect(loadClassifier(mixed, { backend: 'wasm' })).rejects.toThrow(/format finetune-model\/1 .*has a 'preprocess' layer.*same run/);
  });

  it.each([
    ['mobilenet (x/127.5 − 1)', MOBILENET_PREPROCESSING],
    ['caffe (RGB→BGR minus the ImageNet means)', CAFFE_PREPROCESSING],
    ['dataset-mean (BGR, own means)', withDatasetMean(CAFFE_PREPROCESSING, [101.5, 87.25, 140])],
    ['dataset-mean (RGB, scaled)', withDatasetMean(MOBILENET_PREPROCESSING, [30, 200.5, 99])],
  ])('the preprocess layer computes %s exactly as training does', async (_name, spec) => {
    // A model that tells channels apart (a 3×3 convolution with distinct weights per channel).
    const input = tf.input({ shape: [6, 6, 3] });
    const conv = tf.layers.conv2d({ filters: 4, kernelSize: 3, kernelInitializer: tf.initializers.randomNormal({ seed: 1 }) }).apply(input) as tf.SymbolicTensor;
    const out = tf.layers.globalAveragePooling2d({}).apply(conv) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    const raw = new Uint8Array(2 * 6 * 6 * 3).map((_, i) => (i * 37 + 11) % 256);
    const pre = new Float32Array(raw.length);
    preprocessInto(raw, spec, pre);
    const expected = tf.tidy(() => (model.predict(tf.tensor4d(pre, [2, 6, 6, 3])) as tf.Tensor).dataSync());
    const wrapped = await tf.loadLayersModel(tf.io.fromMemory(withPreprocessingLayer(await modelArtifacts(model), preprocessingAffine(spec))));
    const got = tf.tidy(() => (wrapped.predict(tf.tensor4d(Float32Array.from(raw), [2, 6, 6, 3])) as tf.Tensor).dataSync());
    expect(maxDiff(got, expected)).toBeLessThan(1e-4 * Math.max(1, ...Array.from(expected, Math.abs)));
    model.dispose();
    wrapped.dispose();
  });
});

describe('Teachable Machine', () => {
  it("`--format tm`: tmImage's arithmetic (x/127 − 1 into the model, labels from metadata.json) gives predict's probabilities", async () => {
    const out = path.join(dir, 'tm-export');
    await exportRun({ run: newRun, formats: [exportFormat('tm')], out });
    // What tmImage.load(modelURL, metadataURL) does: tf.loadLayersModel(modelURL), fetch(metadataURL).json().
    const model = await tf.loadLayersModel(`${baseUrl}/tm-export/model.json`);
    const metadata = (await (await fetch(`${baseUrl}/tm-export/metadata.json`)).json()) as { labels: string[]; imageSize: number };
    expect(metadata.labels).toEqual(CLASSES);
    expect(metadata.imageSize).toBe(SIZE);
    // What its predict() does after cropping (our images are already square, at imageSize):
    // capture() = fromPixels(…).toFloat().div(127).sub(1) (libraries/image/src/utils/tf.ts).
    const probs = tf.tidy(() => (model.predict(rawBatch().div(tf.scalar(127)).sub(tf.scalar(1))) as tf.Tensor).dataSync());
    model.dispose();
    expect(maxDiff(probs, reference)).toBeLessThan(1e-4);
  });
});

describe('finetune export', () => {
  it('rejects bad requests in one line with exit status 2, and writes nothing', async () => {
    const existing = path.join(dir, 'existing.h5');
    writeFileSync(existing, 'keep me');
    const cases: [string[], RegExp][] = [
      [[newRun, '--format', 'caffe'], /--format caffe is not a format finetune exports; choose one of tfjs, keras/],
      [[path.join(dir), '--format', 'keras'], /is not a finetune model folder/],
      [[path.join(dir, 'nowhere'), '--format', 'keras'], /model folder not found/],
      [[newRun, '--format', 'keras', '--out', existing], /existing\.h5 exists; pass --overwrite/],
      [[newRun], /say what to write: --format .*, or --all/],
      [[newRun, '--all', '--format', 'keras'], /--format or --all, not both/],
      [[newRun, '--format', 'tfjs', '--out', path.join(newRun, 'model'), '--overwrite'], /would replace the run's own files/],
    ];
    for (const [args, message] of cases) {
      const result = await finetuneCli(['export', ...args]);
      expect(result.status, args.join(' ')).toBe(2);
      expect(result.stderr, args.join(' ')).toMatch(message);
      expect(result.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
    expect(readFileSync(existing, 'utf8')).toBe('keep me');
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('--all writes every format at its default name; tfjs is model/ itself; --overwrite replaces', async () => {
    const out = path.join(dir, 'all');
    const first = await finetuneCli(['export', newRun, '--all', '--out', out, '-q']);
    expect(first.status, first.stderr).toBe(0);
    for (const format of EXPORT_FORMATS) expect(existsSync(path.join(out, format.defaultOut)), format.name).toBe(true);
    expect(first.stdout.trim().split('\n')).toHaveLength(EXPORT_FORMATS.length);
    for (const f of readdirSync(path.join(newRun, 'model'))) {
      expect(readFileSync(path.join(out, 'tfjs', f)).equals(readFileSync(path.join(newRun, 'model', f))), f).toBe(true);
    }
    expect(readdirSync(out).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const again = await finetuneCli(['export', newRun, '--format', 'tfjs', '--out', path.join(out, 'tfjs')]);
    expect(again.status).toBe(2);
    const replaced = await finetuneCli(['export', oldRun, '--format', 'tfjs', '--out', path.join(out, 'tfjs'), '--overwrite']);
    expect(replaced.status, replaced.stderr).toBe(0);
    // The old run's model, exported: it now takes raw pixels too.
    const model = await tf.loadLayersModel(`${baseUrl}/all/tfjs/model.json`);
    const probs = tf.tidy(() => (model.predict(rawBatch()) as tf.Tensor).dataSync());
    model.dispose();
    expect(maxDiff(probs, reference)).toBeLessThan(1e-4);
    expect(JSON.parse(readFileSync(path.join(out, 'tfjs/metadata.json'), 'utf8')).labels).toEqual(CLASSES);
  });
});

/** A Python that can import TensorFlow: $FINETUNE_PYTHON, else python3; or why there is none. */
function pythonWithTensorflow(): { python?: string; reason?: string } {
  const python = process.env.FINETUNE_PYTHON ?? 'python3';
  // find_spec, not import: importing TensorFlow takes seconds, and this runs while tests are collected.
  const probe = spawnSync(python, ['-c', "import importlib.util as u, sys; sys.exit(0 if u.find_spec('tensorflow') and u.find_spec('keras') else 1)"], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (probe.status === 0) return { python };
  return { reason: `${python} cannot import tensorflow and keras (set FINETUNE_PYTHON to a Python with TensorFlow to run this check)` };
}

const KERAS_PREDICT = `
import json, os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np
loader, h5, pixels, n, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if loader == 'tf_keras':
    import tf_keras as k
    load = k.models.load_model
elif loader == 'tf.keras':
    import tensorflow as tf
    load = tf.keras.models.load_model
    k = tf.keras
else:
    import keras as k
    load = k.models.load_model
model = load(h5, compile=False)
x = np.fromfile(pixels, dtype='<f4').reshape(n, size, size, 3)
p = model.predict(x, verbose=0)
print(json.dumps({'version': k.__version__ if hasattr(k, '__version__') else '', 'first': model.layers[1].name,
                  'input': list(model.input_shape), 'probabilities': p.reshape(-1).tolist()}))
`;

describe('keras export', () => {
  const found = pythonWithTensorflow();

  async function kerasRoundTrip(loader: string) {
    const h5 = path.join(dir, 'model.h5');
    if (!existsSync(h5)) {
      const result = await finetuneCli(['export', newRun, '--format', 'keras', '--out', h5]);
      expect(result.status, result.stderr).toBe(0);
    }
    const pixelFile = path.join(dir, 'pixels.f32');
    writeFileSync(pixelFile, Buffer.from(Float32Array.from(pixels.flatMap((p) => [...p])).buffer));
    const script = path.join(dir, 'keras_predict.py');
    writeFileSync(script, KERAS_PREDICT);
    const run = await runCli(found.python!, [script, loader, h5, pixelFile, String(pixels.length), String(SIZE)], { timeout: 300_000 });
    expect(run.status, run.stderr.slice(-3000)).toBe(0);
    return JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { version: string; first: string; input: (number | null)[]; probabilities: number[] };
  }

  it.skipIf(!found.python)(`keras.models.load_model (Keras 3) loads model.h5 and gives predict's probabilities within 1e-3${found.reason ? `: skipped, ${found.reason}` : ''}`, async () => {
    const out = await kerasRoundTrip('keras');
    expect(out.first).toBe('preprocess');
    expect(out.input).toEqual([null, SIZE, SIZE, 3]);
    const classifier = await loadClassifier(newRun, { backend: 'wasm' });
    const viaPredict = await classifier.predictPixels(pixels);
    classifier.dispose();
    const diff = maxDiff(out.probabilities, viaPredict);
    console.log(`keras ${out.version}: largest difference from finetune predict ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-3);
  }, 300_000);

  it.skipIf(!found.python)(`tf.keras.models.load_model loads it the same way${found.reason ? `: skipped, ${found.reason}` : ''}`, async () => {
    const out = await kerasRoundTrip('tf.keras');
    expect(maxDiff(out.probabilities, reference)).toBeLessThan(1e-3);
  }, 300_000);

  it('tf_keras (Keras 2) loads it the same way', async (ctx) => {
    if (!found.python) return ctx.skip(found.reason!);
    const probe = spawnSync(found.python, ['-c', "import importlib.util as u, sys; sys.exit(0 if u.find_spec('tf_keras') else 1)"], { encoding: 'utf8', timeout: 60_000 });
    if (probe.status !== 0) return ctx.skip(`${found.python} cannot import tf_keras (pip install tf_keras to run this check)`);
    const out = await kerasRoundTrip('tf_keras');
    expect(maxDiff(out.probabilities, reference)).toBeLessThan(1e-3);
  }, 300_000);
});
