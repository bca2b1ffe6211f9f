/**
 * `--engine`: predict and evaluate on tfjs and on ONNX Runtime (the real onnxruntime-node) give the
 * same labels and probabilities for the same images; auto takes ONNX Runtime where it is installed;
 * without it, `--engine onnx` says how to install it and auto falls back to tfjs.
 */
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../src/cli/doctor.js';
import { initEngine } from '../src/engine/backend.js';
import { onnxFormat } from '../src/export/onnx.js';
import { saveModelDir } from '../src/io/model-io.js';
import { silentReporter } from '../src/reporter.js';
import { loadClassifier, type Classifier } from '../src/predict/classifier.js';
import { evaluate } from '../src/predict/evaluate.js';
import type { InferenceEngineRequest } from '../src/predict/onnx-engine.js';
import { predict, type LabelledPrediction } from '../src/predict/predict.js';
import { writeExportRun } from './helpers/export-run.js';
import { runCli } from './helpers/run-cli.js';
import { repoRoot } from './helpers/shared.js';

const CLASSES = ['circle', 'square', 'triangle'];
let tmp: string;
/** A format-2 run (MobileNetV2 α=0.35, 64 px, seeded weights) and a format-1 one (preprocessing outside model/). */
let run2: string;
let run1: string;
const images = () => {
  const dir = path.join(repoRoot, 'fixtures/shapes/test/unknown');
  return readdirSync(dir)
    .sort()
    .slice(0, 11)
    .map((f) => path.join(dir, f));
};

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-engine-'));
  await initEngine('wasm'); // to build the test models
  run2 = await writeExportRun(path.join(tmp, 'run2'), { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 64, classes: CLASSES, seed: 4 });
  run1 = await writeExportRun(path.join(tmp, 'run1'), { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 64, classes: CLASSES, seed: 6, format: 1 });
}, 120_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Labels the images with one engine (batches of 4: the last one partial), returning the predictions and what ran them. */
async function labelWith(run: string, engine: InferenceEngineRequest, tta = false): Promise<{ rows: LabelledPrediction[]; classifier: Classifier }> {
  const classifier = await loadClassifier(run, { engine });
  const rows: LabelledPrediction[] = [];
  try {
    for await (const p of predict(classifier, images(), { batchSize: 4, tta })) {
      expect(p.error).toBeUndefined();
      rows.push(p as LabelledPrediction);
    }
  } finally {
    classifier.dispose();
  }
  return { rows, classifier };
}

function expectSame(a: LabelledPrediction[], b: LabelledPrediction[]): void {
  expect(b.map((p) => p.file)).toEqual(a.map((p) => p.file));
  expect(b.map((p) => p.label)).toEqual(a.map((p) => p.label));
  let maxDifference = 0;
  a.forEach((p, i) => CLASSES.forEach((c) => (maxDifference = Math.max(maxDifference, Math.abs(p.probabilities[c]! - b[i]!.probabilities[c]!)))));
  expect(maxDifference).toBeLessThan(1e-3);
}

describe('predict on tfjs and on ONNX Runtime', () => {
  it('same labels and probabilities (within 1e-3), with and without --tta; the images are told apart', async () => {
    const tfjs = await labelWith(run2, 'tfjs');
    const onnx = await labelWith(run2, 'onnx');
    expect(tfjs.classifier.inference.engine).toBe('tfjs');
    expect(onnx.classifier.inference).toMatchObject({ engine: 'onnx', reason: '--engine onnx' });
    expect(onnx.classifier.inference.detail).toMatch(/^onnxruntime-node \d+\.\d+\.\d+ \(CPU, \d+ threads?; converted in \d+\.\d s\)$/);
    expectSame(tfjs.rows, onnx.rows);
    // A model that answered the same for every image would agree trivially.
    expect(new Set(tfjs.rows.map((p) => p.confidence.toFixed(4))).size).toBeGreaterThan(5);

    const tfjsTta = await labelWith(run2, 'tfjs', true);
    const onnxTta = await labelWith(run2, 'onnx', true);
    expectSame(tfjsTta.rows, onnxTta.rows);
    expect(onnxTta.rows.some((p, i) => Math.abs(p.confidence - onnx.rows[i]!.confidence) > 1e-4)).toBe(true);
  });

  it('an old run folder (finetune-model/1, preprocessed input) labels the same on both engines', async () => {
    const tfjs = await labelWith(run1, 'tfjs');
    const onnx = await labelWith(run1, 'onnx');
    expect(onnx.classifier.inference.engine).toBe('onnx');
    expectSame(tfjs.rows, onnx.rows);
  });

  it('auto takes ONNX Runtime here (onnxruntime-node is installed); --backend <name> means tfjs', async () => {
    const auto = await loadClassifier(run2);
    expect(auto.inference).toMatchObject({ engine: 'onnx', reason: 'auto: onnxruntime-node is installed' });
    expect(auto.model).toBeUndefined();
    auto.dispose();
    const wasm = await loadClassifier(run2, { backend: 'wasm' });
    expect(wasm.inference).toMatchObject({ engine: 'tfjs', reason: '--backend wasm asks for tfjs' });
    wasm.dispose();
    await expect(loadClassifier(run2, { engine: 'onnx', backend: 'wasm' })).rejects.toThrow(/--backend wasm .* does not go with --engine onnx/);
  });

  it("uses the run's export/model.onnx when it is newer than the model, else converts in memory", async () => {
    const run = await writeExportRun(path.join(tmp, 'exported'), { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 64, classes: CLASSES, seed: 4 });
    const file = path.join(run, 'export', 'model.onnx');
    await onnxFormat.export({ runDir: run, out: file, log: () => undefined });
    const fromFile = await labelWith(run, 'onnx');
    expect(fromFile.classifier.inference.detail).toMatch(/; from export\/model\.onnx\)$/);
    expectSame((await labelWith(run2, 'tfjs')).rows, fromFile.rows);

    // Retrained since (the model is newer than the export): the export is stale.
    const later = new Date(Date.now() + 60_000);
    utimesSync(path.join(run, 'model', 'model.json'), later, later);
    const stale = await loadClassifier(run, { engine: 'onnx' });
    expect(stale.inference.detail).toMatch(/converted in/);
    stale.dispose();
  });

  it('auto falls back to tfjs, with a warning saying why, for a model the ONNX conversion cannot take', async () => {
    // A format-1 run whose model has a layer the converter lacks (Conv2DTranspose).
    const run = path.join(tmp, 'unconvertible');
    const input = tf.input({ shape: [16, 16, 3] });
    const up = tf.layers.conv2dTranspose({ filters: 4, kernelSize: 3, strides: 2, padding: 'same' }).apply(input) as tf.SymbolicTensor;
    const pooled = tf.layers.globalAveragePooling2d({}).apply(up) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 3, activation: 'softmax' }).apply(pooled) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    await saveModelDir(model, path.join(run, 'model'));
    model.dispose();
    const preprocessing = { mean: [127.5, 127.5, 127.5], scale: 1 / 127.5, channelOrder: 'rgb' };
    writeFileSync(
      path.join(run, 'finetune.json'),
      JSON.stringify({ format: 'finetune-model/1', classes: CLASSES, input: { size: 16, channels: 3, resize: 'stretch', preprocessing }, results: {} }),
    );
    const warnings: string[] = [];
    const auto = await loadClassifier(run, { reporter: { ...silentReporter, warn: (m: string) => warnings.push(m) } });
    expect(auto.inference.engine).toBe('tfjs');
    expect(auto.inference.reason).toMatch(/^ONNX Runtime cannot run this model \(cannot convert the model to ONNX: .*Conv2DTranspose.*\); using tfjs$/);
    expect(warnings).toEqual([auto.inference.reason]);
    expect(await auto.predictPixels([new Uint8Array(16 * 16 * 3).fill(90)])).toHaveLength(3);
    auto.dispose();
    // Asked for by name, it is an error instead.
    await expect(loadClassifier(run, { engine: 'onnx' })).rejects.toThrow(/cannot convert the model to ONNX: .*Conv2DTranspose/);
  });

  it('evaluate records the engine in its result (metrics.json)', async () => {
    const result = await evaluate(run2, path.join(repoRoot, 'fixtures/shapes/valid'), { engine: 'onnx' });
    expect(result.inference.engine).toBe('onnx');
    expect(result.files.length).toBeGreaterThan(0);
  });
});

describe('without onnxruntime-node (an install that lacks it)', () => {
  /** bin/, dist/ and package.json copied, node_modules/ linking every package but onnxruntime-node's. */
  let install: string;
  beforeAll(() => {
    install = path.join(tmp, 'install');
    mkdirSync(path.join(install, 'node_modules'), { recursive: true });
    cpSync(path.join(repoRoot, 'bin'), path.join(install, 'bin'), { recursive: true });
    cpSync(path.join(repoRoot, 'dist'), path.join(install, 'dist'), { recursive: true });
    cpSync(path.join(repoRoot, 'package.json'), path.join(install, 'package.json'));
    const modules = path.join(repoRoot, 'node_modules');
    for (const name of readdirSync(modules)) {
      if (name.startsWith('onnxruntime-') || name === '.bin') continue;
      symlinkSync(path.join(modules, name), path.join(install, 'node_modules', name));
    }
    writeFileSync(path.join(install, 'README.md'), 'finetune without onnxruntime-node (test copy)\n');
  });
  const finetune = (...args: string[]) => runCli(process.execPath, [path.join(install, 'bin/finetune.js'), ...args], { cwd: tmp, timeout: 120_000 });

  it('--engine onnx: one line saying how to install it, exit status 2', async () => {
    const run = await finetune('predict', run2, images()[0]!, '--engine', 'onnx');
    expect(run.status, run.stderr).toBe(2);
    expect(run.stdout).toBe('');
    const lines = run.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/--engine onnx needs ONNX Runtime: onnxruntime-node is not installed\. Install it with `npm install onnxruntime-node`, or use --engine tfjs\./);
  });

  it('auto labels with tfjs and says why; doctor says ONNX Runtime is not available', async () => {
    const run = await finetune('predict', run2, ...images().slice(0, 3));
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(4);
    expect(run.stderr).toMatch(/engine: tfjs wasm.*\[auto: onnxruntime-node is not installed \(npm install onnxruntime-node\)\]/);
    expect(run.stderr).toMatch(/images\/s on tfjs/);

    const doctor = await finetune('doctor', '--no-speed', '--json');
    expect(doctor.status, doctor.stderr).toBe(0);
    const report = JSON.parse(doctor.stdout) as DoctorReport;
    expect(report.predict.engine).toBe('tfjs');
    expect(report.predict.onnxRuntime).toEqual({ available: false, reason: 'onnxruntime-node is not installed (npm install onnxruntime-node)' });
  }, 60_000);
});
