/**
 * `finetune export --format onnx`: the ONNX file, run by a real runtime (onnxruntime-node), gives
 * the probabilities the tfjs model gives (the numbers `finetune predict` prints) for the same
 * decoded images, for MobileNetV2 and VGG16 and for every layer form the converter handles.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine } from '../src/engine/backend.js';
import { onnxFormat, ONNX_METADATA_KEYS } from '../src/export/onnx.js';
import { decodeOnnxModel, OPSET } from '../src/export/onnx/builder.js';
import { layersModelToOnnx, ONNX_INPUT, ONNX_OUTPUT } from '../src/export/onnx/convert.js';
import { FinetuneError } from '../src/errors.js';
import { modelArtifacts } from '../src/io/model-io.js';
import { loadClassifier } from '../src/predict/classifier.js';
import { buildBackbone, writeExportRun, type ExportRunOptions } from './helpers/export-run.js';
import { needShared, repoRoot, sharedPath, TM_WEIGHTS, tmWeightsDir } from './helpers/shared.js';

let tmp: string;
beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-onnx-'));
  await initEngine('wasm');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const shapesImages = () => {
  const dir = path.join(repoRoot, 'fixtures/shapes/test/unknown');
  return readdirSync(dir)
    .sort()
    .slice(0, 8)
    .map((f) => path.join(dir, f));
};

const hymenopteraImages = () =>
  ['ants', 'bees'].flatMap((c) => {
    const dir = sharedPath(`datasets/hymenoptera_data/val/${c}`);
    return readdirSync(dir)
      .sort()
      .slice(0, 6)
      .map((f) => path.join(dir, f));
  });

interface Comparison {
  maxDifference: number;
  sameLabels: boolean;
  onnxDims: readonly number[];
}

/** Exports a run as ONNX and labels `files` with it and with the tfjs model (as predict does), from the same decoded pixels. */
async function exportAndCompare(name: string, options: ExportRunOptions, files: string[]): Promise<Comparison & { onnxFile: string }> {
  const run = await writeExportRun(path.join(tmp, name), options);
  const onnxFile = path.join(run, 'export', 'model.onnx');
  const written = await onnxFormat.export({ runDir: run, out: onnxFile, log: () => undefined });
  expect(written).toEqual(['model.onnx']);

  const classifier = await loadClassifier(run, { backend: 'wasm' });
  const pixels = await Promise.all(files.map((f) => classifier.decode(f)));
  const expected = await classifier.predictPixels(pixels);
  classifier.dispose();

  const size = options.imageSize;
  const input = new Float32Array(files.length * size * size * 3);
  pixels.forEach((p, i) => input.set(p, i * size * size * 3));
  const session = await ort.InferenceSession.create(onnxFile);
  const result = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', input, [files.length, size, size, 3]) });
  const output = result[ONNX_OUTPUT]!;
  return { ...compare(expected, output.data as Float32Array, options.classes.length), onnxDims: output.dims, onnxFile };
}

function compare(expected: Float32Array, actual: Float32Array, k: number): Comparison {
  expect(actual.length).toBe(expected.length);
  let maxDifference = 0;
  for (let i = 0; i < expected.length; i++) maxDifference = Math.max(maxDifference, Math.abs(expected[i]! - actual[i]!));
  const argmax = (a: Float32Array, row: number) => {
    const r = Array.from(a.subarray(row * k, (row + 1) * k));
    return r.indexOf(Math.max(...r));
  };
  const rows = expected.length / k;
  const sameLabels = Array.from({ length: rows }, (_, r) => argmax(expected, r) === argmax(actual, r)).every(Boolean);
  return { maxDifference, sameLabels, onnxDims: [] };
}

describe('ONNX export, run by onnxruntime', () => {
  it('MobileNetV2 α=0.35 with ImageNet weights: the probabilities tfjs gives on real photos, within 1e-3', async (ctx) => {
    needShared(ctx, 'the ONNX check on real photos', TM_WEIGHTS, 'datasets/hymenoptera_data');
    const files = hymenopteraImages();
    const r = await exportAndCompare('mobilenet-real', { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 224, classes: ['ants', 'bees'], weights: tmWeightsDir }, files);
    expect(r.onnxDims).toEqual([files.length, 2]);
    expect(r.maxDifference).toBeLessThan(1e-3);
    expect(r.sameLabels).toBe(true);
  });

  it('MobileNetV2 α=0.35 with seeded weights and batch-norm statistics, on generated images, within 1e-3', async () => {
    const files = shapesImages();
    const r = await exportAndCompare('mobilenet-seeded', { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 96, classes: ['circle', 'square', 'triangle'], seed: 3 }, files);
    expect(r.onnxDims).toEqual([files.length, 3]);
    expect(r.maxDifference).toBeLessThan(1e-3);
    expect(r.sameLabels).toBe(true);
  });

  it('VGG16 at 32 px, from a format-1 run folder (preprocessing outside model/), within 1e-3', async () => {
    const files = shapesImages();
    const r = await exportAndCompare('vgg16', { backbone: 'vgg16', imageSize: 32, classes: ['circle', 'square', 'triangle'], seed: 5, format: 1 }, files);
    expect(r.onnxDims).toEqual([files.length, 3]);
    expect(r.maxDifference).toBeLessThan(1e-3);
    expect(r.sameLabels).toBe(true);
  });

  it('the file says what it takes and gives: opset, NHWC raw-pixel input with a free batch, class names in its metadata', async () => {
    const run = await writeExportRun(path.join(tmp, 'described'), { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 96, classes: ['cat', 'dog'], resize: 'crop' });
    const out = path.join(run, 'model.onnx');
    await onnxFormat.export({ runDir: run, out, log: () => undefined });
    const model = decodeOnnxModel(readFileSync(out));
    const graph = model.graph!;
    expect(model.opsetImport.map((o) => Number(o.version))).toEqual([OPSET]);
    const dims = (info: { type?: { tensorType?: { shape?: { dim?: { dimParam?: string | null; dimValue?: unknown }[] | null } | null } | null } | null }) =>
      info.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue));
    expect(graph.input!.map((i) => i.name)).toEqual([ONNX_INPUT]);
    expect(dims(graph.input![0]!)).toEqual(['batch', 96, 96, 3]);
    expect(dims(graph.output![0]!)).toEqual(['batch', 2]);
    const meta = Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value]));
    expect(JSON.parse(meta[ONNX_METADATA_KEYS.classes]!)).toEqual(['cat', 'dog']);
    expect(meta[ONNX_METADATA_KEYS.imageSize]).toBe('96');
    expect(meta[ONNX_METADATA_KEYS.resize]).toBe('crop');
    // Every batch norm of MobileNetV2 follows a convolution: all fold away.
    expect(graph.node!.filter((n) => n.opType === 'BatchNormalization')).toHaveLength(0);
    expect(graph.node!.filter((n) => n.opType === 'Pad')).toHaveLength(0);
  });
});

describe('the convolutional stacks alone', () => {
  // A seeded head's probabilities barely move between images; the backbones' feature maps show any
  // misplaced pixel or channel. The 4-D output also checks the transpose back to NHWC.
  it.each([
    { backbone: 'mobilenetv2' as const, alpha: 0.35, imageSize: 96 },
    { backbone: 'mobilenetv2' as const, alpha: 0.5, imageSize: 75 },
    { backbone: 'vgg16' as const, imageSize: 48 },
  ])('$backbone α=$alpha at $imageSize px: feature maps equal tfjs\'s to 1e-4 of their range', async (options) => {
    const base = await buildBackbone({ ...options, seed: 9 });
    const bytes = layersModelToOnnx(await modelArtifacts(base), { graphName: 'features', producerVersion: 'test', docString: '', metadata: {} });
    const s = options.imageSize;
    const x = tf.randomUniform([2, s, s, 3], -1, 1, 'float32', 13);
    const expected = base.predict(x) as tf.Tensor;
    const session = await ort.InferenceSession.create(bytes);
    const output = (await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x.dataSync() as Float32Array, [2, s, s, 3]) }))[ONNX_OUTPUT]!;
    expect(output.dims).toEqual(expected.shape);
    const e = expected.dataSync();
    const a = output.data as Float32Array;
    let range = 0;
    let maxDifference = 0;
    for (let i = 0; i < e.length; i++) {
      range = Math.max(range, Math.abs(e[i]!));
      maxDifference = Math.max(maxDifference, Math.abs(e[i]! - a[i]!));
    }
    expect(range).toBeGreaterThan(0);
    expect(maxDifference / range).toBeLessThan(1e-4);
  });
});

describe('layer forms beyond MobileNetV2 and VGG16', () => {
  /** A model with every other form the converter handles, against tfjs's own predict. */
  function oddModel(): tf.LayersModel {
    const input = tf.input({ shape: [13, 11, 3] });
    let x = tf.layers.zeroPadding2d({ padding: [[1, 2], [0, 1]] }).apply(input) as tf.SymbolicTensor;
    x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }).apply(x) as tf.SymbolicTensor; // Pad node, then MaxPool
    const a = tf.layers.conv2d({ filters: 6, kernelSize: 3, padding: 'same', activation: 'relu6', dilationRate: 1 }).apply(x) as tf.SymbolicTensor;
    const b = tf.layers.depthwiseConv2d({ kernelSize: [3, 2], depthMultiplier: 2, padding: 'same', useBias: true }).apply(x) as tf.SymbolicTensor;
    let y = tf.layers.add().apply([a, b]) as tf.SymbolicTensor;
    y = tf.layers.batchNormalization().apply(y) as tf.SymbolicTensor; // after an Add: a BatchNormalization node
    y = tf.layers.reLU({ maxValue: 4 }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.averagePooling2d({ poolSize: 2, strides: 2, padding: 'same' }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.activation({ activation: 'tanh' }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.flatten().apply(y) as tf.SymbolicTensor; // Keras order H, W, C
    y = tf.layers.dense({ units: 7, activation: 'sigmoid' }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.batchNormalization().apply(y) as tf.SymbolicTensor; // on a vector
    y = tf.layers.dropout({ rate: 0.5 }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.dense({ units: 4 }).apply(y) as tf.SymbolicTensor;
    const out = tf.layers.softmax().apply(y) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    for (const layer of model.layers) {
      if (layer.getClassName() !== 'BatchNormalization') continue;
      layer.setWeights(layer.getWeights().map((w, j) => (j === 3 ? tf.randomUniform(w.shape, 0.5, 2, 'float32', 7 + j) : tf.randomNormal(w.shape, 0, 0.5, 'float32', 7 + j))));
    }
    return model;
  }

  it('padding, pooling, depthwise with multiplier, Add, unfolded batch norms, ReLU max, Flatten and Dense: tfjs\'s numbers', async () => {
    const model = oddModel();
    const bytes = layersModelToOnnx(await modelArtifacts(model), { graphName: 'odd', producerVersion: 'test', docString: '', metadata: {} });
    const x = tf.randomUniform([3, 13, 11, 3], -2, 2, 'float32', 11);
    const expected = (model.predict(x) as tf.Tensor).dataSync() as Float32Array;
    const session = await ort.InferenceSession.create(bytes);
    const result = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x.dataSync() as Float32Array, [3, 13, 11, 3]) });
    const ops = new Set(decodeOnnxModel(bytes).graph!.node!.map((n) => n.opType));
    expect([...ops]).toEqual(expect.arrayContaining(['Pad', 'MaxPool', 'AveragePool', 'BatchNormalization', 'Clip', 'Flatten', 'Gemm', 'Softmax']));
    const r = compare(expected, result[ONNX_OUTPUT]!.data as Float32Array, 4);
    expect(r.maxDifference).toBeLessThan(1e-5);
  });

  it('a layer it does not convert is named, with the list of those it does', async () => {
    const input = tf.input({ shape: [8, 8, 3] });
    const out = tf.layers.conv2dTranspose({ filters: 2, kernelSize: 3, name: 'upsample' }).apply(input) as tf.SymbolicTensor;
    const artifacts = await modelArtifacts(tf.model({ inputs: input, outputs: out }));
    expect(() => layersModelToOnnx(artifacts, { graphName: 'x', producerVersion: 'test', docString: '', metadata: {} })).toThrow(FinetuneError);
    expect(() => layersModelToOnnx(artifacts, { graphName: 'x', producerVersion: 'test', docString: '', metadata: {} })).toThrow(
      /layer upsample is a Conv2DTranspose, which the ONNX export does not convert \(it converts InputLayer, Conv2D/,
    );
  });
});
