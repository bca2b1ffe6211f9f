import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import h5wasm from 'h5wasm/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2 } from '../src/backbones/mobilenet_v2.js';
import { vgg16 } from '../src/backbones/vgg16.js';
import { assignWeights, loadBackboneWeights, readWeightFile, seedRandomWeights, type WeightTensor } from '../src/backbones/weights.js';
import { FinetuneError } from '../src/errors.js';
import { needShared, sharedPath, TM_WEIGHTS } from './helpers/shared.js';

const V1_H5 = 'weights/mobilenet_2_5_224_tf_no_top.h5';
const V1_FOLDER = 'weights/mobilenet_v1_0.25_224';
const tmFolder = sharedPath(TM_WEIGHTS);
const v1H5 = sharedPath(V1_H5);
const v1Folder = sharedPath(V1_FOLDER);

let tmp: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  await h5wasm.ready;
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'finetune-weights-'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------ helpers

/** Keras 2 `save_weights` layout of a tfjs model's weights (or, with nestAs, one nested-model group). */
function writeKerasGroup(root: InstanceType<typeof h5wasm.Group>, model: tf.LayersModel, nestAs?: string): void {
  // Fixed-length ASCII like h5py writes numpy 'S' arrays; an empty float array for weightless layers.
  const setStrings = (g: InstanceType<typeof h5wasm.Group>, name: string, list: string[]) => {
    if (list.length === 0) g.create_attribute(name, new Float64Array(0), [0], '<f8');
    else g.create_attribute(name, list, [list.length], `A${Math.max(...list.map((s) => s.length))}`);
  };
  const layers = nestAs ? [{ name: nestAs, weights: model.weights, nested: true }] : model.layers.map((l) => ({ name: l.name, weights: l.weights, nested: false }));
  setStrings(root, 'layer_names', layers.map((l) => l.name));
  root.create_attribute('backend', 'tensorflow');
  root.create_attribute('keras_version', '2.15.0');
  const values = new Map(model.weights.map((w, i) => [w, model.getWeights()[i]!]));
  for (const layer of layers) {
    const g = root.create_group(layer.name);
    const names: string[] = [];
    for (const w of layer.weights) {
      // Keras names a weight `<layer>/<short>:0`; for a nested model that is the inner layer's name.
      const [owner, short] = w.originalName.split('/').slice(-2) as [string, string];
      const weightName = `${owner}/${short}:0`;
      names.push(weightName);
      const sub = g.keys().includes(owner) ? (g.get(owner) as InstanceType<typeof h5wasm.Group>) : g.create_group(owner);
      const t = values.get(w)!;
      sub.create_dataset({ name: `${short}:0`, data: t.dataSync() as Float32Array, shape: t.shape, dtype: '<f4' });
    }
    setStrings(g, 'weight_names', names);
  }
}

function writeKerasH5(file: string, model: tf.LayersModel, layout: 'weights' | 'model' | 'nested-model' = 'weights'): void {
  const f = new h5wasm.File(file, 'w');
  try {
    if (layout === 'weights') writeKerasGroup(f, model);
    else {
      f.create_attribute('model_config', JSON.stringify({ class_name: 'Functional' }));
      f.create_attribute('keras_version', '2.15.0');
      writeKerasGroup(f.create_group('model_weights'), model, layout === 'nested-model' ? model.name : undefined);
    }
  } finally {
    f.close();
  }
}

/** tfjs layers export (model.json + weights.bin) written by hand from model.save's artifacts. */
async function writeTfjsFolder(dir: string, model: tf.LayersModel, rename?: (name: string) => string): Promise<void> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  await fs.mkdir(dir, { recursive: true });
  const specs = artifacts!.weightSpecs!.map((s) => ({ ...s, name: rename ? rename(s.name) : s.name }));
  const modelJson = { modelTopology: artifacts!.modelTopology, weightsManifest: [{ paths: ['weights.bin'], weights: specs }] };
  await fs.writeFile(path.join(dir, 'model.json'), JSON.stringify(modelJson));
  await fs.writeFile(path.join(dir, 'weights.bin'), new Uint8Array(artifacts!.weightData as ArrayBuffer));
}

function weightArrays(model: tf.LayersModel): Float32Array[] {
  return model.getWeights().map((t) => t.dataSync() as Float32Array);
}

function expectBitIdentical(a: tf.LayersModel, b: tf.LayersModel): void {
  const wa = weightArrays(a);
  const wb = weightArrays(b);
  expect(wb.length).toBe(wa.length);
  wa.forEach((x, i) => {
    const y = wb[i]!;
    expect(y.length).toBe(x.length);
    expect(Buffer.from(y.buffer, y.byteOffset, y.byteLength).equals(Buffer.from(x.buffer, x.byteOffset, x.byteLength))).toBe(true);
  });
}

/** Randomises BN statistics too (fresh models have mean 0 / variance 1 everywhere, which hides mix-ups). */
function randomize(model: tf.LayersModel): tf.LayersModel {
  model.setWeights(model.weights.map((w, i) => tf.randomUniform(w.shape as number[], 0.1, 1, 'float32', i + 1)));
  return model;
}

async function thrown(p: Promise<unknown> | (() => unknown)): Promise<FinetuneError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(FinetuneError);
    return e as FinetuneError;
  }
  throw new Error('expected a FinetuneError');
}

// ------------------------------------------------------------------------------------------ Keras .h5

describe('seedRandomWeights (--weights none)', () => {
  it('draws the same kernels from the same seed, other kernels from another, and leaves constants alone', () => {
    const build = (seed: number) => {
      const model = mobileNetV2({ alpha: 0.35, imageSize: 32 });
      seedRandomWeights(model, seed);
      return model;
    };
    const [a, b, c] = [build(7), build(7), build(8)];
    const values = (m: tf.LayersModel, layer: string) => Array.from(m.getLayer(layer).getWeights()[0]!.dataSync());
    for (const layer of ['Conv1', 'block_3_depthwise', 'block_16_project', 'Conv_1']) {
      expect(values(a, layer)).toEqual(values(b, layer));
      expect(values(a, layer)).not.toEqual(values(c, layer));
    }
    // Glorot-uniform bounds: ±√(6 / (fan in + fan out)); Conv1 is 3×3×3 → 16 at α 0.35.
    const limit = Math.sqrt(6 / (3 * 3 * 3 + 3 * 3 * 16));
    expect(Math.max(...values(a, 'Conv1').map(Math.abs))).toBeLessThanOrEqual(limit);
    expect(values(a, 'bn_Conv1')).toEqual(values(c, 'bn_Conv1')); // γ = 1
    for (const m of [a, b, c]) m.dispose();
  });
});

describe('Keras .h5 weights', () => {
  it('loads save_weights layout bit-identically, names stripped of :0', async () => {
    const source = randomize(mobileNetV2({ alpha: 0.35, imageSize: 96 }));
    const file = path.join(tmp, 'weights_only.h5');
    writeKerasH5(file, source);

    const read = await readWeightFile(file);
    expect(read).toHaveLength(260);
    expect(read[0]).toMatchObject({ layer: 'Conv1', name: 'kernel', shape: [3, 3, 3, 16] });
    expect(read.find((w) => w.layer === 'Conv_1_bn' && w.name === 'moving_variance')?.shape).toEqual([1280]);

    const target = mobileNetV2({ alpha: 0.35, imageSize: 96 });
    const report = await loadBackboneWeights(target, file);
    expect(report).toEqual({ source: file, matched: 260, ignored: [] });
    expectBitIdentical(source, target);
  });

  it('loads the full-model layout (model_weights group), plain and with the backbone nested as one layer', async () => {
    const source = randomize(mobileNetV2({ alpha: 0.35, imageSize: 96 }));
    for (const layout of ['model', 'nested-model'] as const) {
      const file = path.join(tmp, `${layout}.h5`);
      writeKerasH5(file, source, layout);
      const target = mobileNetV2({ alpha: 0.35, imageSize: 96 });
      expect((await loadBackboneWeights(target, file)).matched).toBe(260);
      expectBitIdentical(source, target);
    }
  });

  it('loads legacy per-layer names (block1_conv1_W_1:0) by position, as Keras does', async () => {
    const file = path.join(tmp, 'legacy.h5');
    const f = new h5wasm.File(file, 'w');
    f.create_attribute('layer_names', ['dense_a'], [1], 'A7');
    const g = f.create_group('dense_a');
    g.create_attribute('weight_names', ['dense_a_W_1:0', 'dense_a_b_1:0'], [2], 'A13');
    g.create_dataset({ name: 'dense_a_W_1:0', data: new Float32Array([1, 2, 3, 4, 5, 6]), shape: [2, 3], dtype: '<f4' });
    g.create_dataset({ name: 'dense_a_b_1:0', data: new Float64Array([7, 8, 9]), shape: [3], dtype: '<f8' });
    f.close();
    const input = tf.input({ shape: [2] });
    const model = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 3, name: 'dense_a' }).apply(input) as tf.SymbolicTensor });
    expect(assignWeights(model, await readWeightFile(file), file).matched).toBe(2);
    expect(Array.from(model.getWeights()[1]!.dataSync())).toEqual([7, 8, 9]);
  });

  it('wrong alpha: names the first mis-shaped weight, suggests the alpha, writes nothing', async () => {
    const file = path.join(tmp, 'alpha1.h5');
    writeKerasH5(file, mobileNetV2({ alpha: 1.0, imageSize: 96 }));
    const target = mobileNetV2({ alpha: 0.35, imageSize: 96 });
    const before = weightArrays(target).map((a) => a.slice());
    const err = await thrown(loadBackboneWeights(target, file));
    const lines = err.message.split('\n');
    expect(lines[0]).toMatch(/of 260 weights match/);
    expect(lines[1]).toBe('  Conv1/kernel: model expects [3, 3, 3, 16], file has [3, 3, 3, 32]');
    expect(err.message).toContain('MobileNetV2 alpha=1.0; pass --alpha 1.0');
    weightArrays(target).forEach((a, i) => expect(a).toEqual(before[i]));
  });

  it('VGG16 weights into MobileNetV2: "another architecture"', async () => {
    const file = path.join(tmp, 'vgg16.h5');
    writeKerasH5(file, vgg16({ imageSize: 32 }));
    const read = await readWeightFile(file);
    expect(read.map((w) => `${w.layer}/${w.name}`).slice(0, 2)).toEqual(['block1_conv1/kernel', 'block1_conv1/bias']);
    const err = await thrown(() => assignWeights(mobileNetV2({ alpha: 0.35, imageSize: 96 }), read, file));
    expect(err.message).toMatch(/^cannot load weights from .*vgg16\.h5 into mobilenetv2_0\.35_96: 0 of 260 weights match/);
    expect(err.message).toContain('Conv1/kernel: model expects [3, 3, 3, 16], file has no such weight');
    expect(err.message).toContain('another architecture');
    expect(err.message).toContain('block1_conv1');
  });

  it('a truncated, a foreign, a non-Keras HDF5 and a missing file each get a clear error', async () => {
    const good = path.join(tmp, 'good.h5');
    writeKerasH5(good, mobileNetV2({ alpha: 0.35, imageSize: 96 }));
    const bytes = await fs.readFile(good);
    const truncated = path.join(tmp, 'truncated.h5');
    await fs.writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    expect((await thrown(readWeightFile(truncated))).message).toMatch(/truncated\.h5: the HDF5 file is damaged \(File has been truncated\)/);

    const text = path.join(tmp, 'notes.txt');
    await fs.writeFile(text, 'just some text');
    expect((await thrown(readWeightFile(text))).message).toMatch(/not an HDF5 file nor a model\.json \(expected a Keras weights file/);

    const plain = path.join(tmp, 'plain.h5');
    const f = new h5wasm.File(plain, 'w');
    f.create_dataset({ name: 'data', data: new Float32Array([1, 2]), shape: [2], dtype: '<f4' });
    f.close();
    expect((await thrown(readWeightFile(plain))).message).toMatch(/HDF5 file but not in the Keras 2 layout/);

    expect((await thrown(readWeightFile(path.join(tmp, 'nope.h5')))).message).toMatch(/nope\.h5 does not exist/);
    expect((await thrown(readWeightFile(tmp))).message).toMatch(/has no model\.json/);
  });
});

// ------------------------------------------------------------------------------------------ tfjs

describe('tfjs layers models', () => {
  it('loads a folder written from model.save, and its model.json path, bit-identically', async () => {
    const source = randomize(mobileNetV2({ alpha: 0.35, imageSize: 96 }));
    const dir = path.join(tmp, 'tfjs');
    await writeTfjsFolder(dir, source);
    for (const p of [dir, path.join(dir, 'model.json')]) {
      const target = mobileNetV2({ alpha: 0.35, imageSize: 96 });
      expect((await loadBackboneWeights(target, p)).matched).toBe(260);
      expectBitIdentical(source, target);
    }
  });

  it('strips nested-model prefixes and tfjs _1 suffixes', async () => {
    const source = randomize(mobileNetV2({ alpha: 0.35, imageSize: 96 }));
    const dir = path.join(tmp, 'tfjs-nested');
    await writeTfjsFolder(dir, source, (n) => `sequential_3/model5/${n.replace(/kernel$/, 'kernel_1')}`);
    const read = await readWeightFile(dir);
    expect(read[0]).toMatchObject({ layer: 'Conv1', name: 'kernel' });
    const target = mobileNetV2({ alpha: 0.35, imageSize: 96 });
    expect(assignWeights(target, read, dir).matched).toBe(260);
    expectBitIdentical(source, target);
  });

  it('dequantizes uint8-quantized weights and reports a shard that does not match the manifest', async () => {
    const dir = path.join(tmp, 'tfjs-quantized');
    await fs.mkdir(dir);
    const weights = [
      { name: 'dense_q/kernel', shape: [2, 2], dtype: 'float32', quantization: { dtype: 'uint8', scale: 0.5, min: -1 } },
      { name: 'dense_q/bias', shape: [2], dtype: 'float32' },
    ];
    await fs.writeFile(path.join(dir, 'model.json'), JSON.stringify({ modelTopology: {}, weightsManifest: [{ paths: ['w.bin'], weights }] }));
    const bin = new Uint8Array(4 + 8);
    bin.set([0, 1, 2, 4]);
    new Float32Array(bin.buffer, 4, 2).set([0.25, -0.25]);
    await fs.writeFile(path.join(dir, 'w.bin'), bin);
    const read = await readWeightFile(dir);
    expect(read.map((w) => [w.layer, w.name, Array.from(w.values)])).toEqual([
      ['dense_q', 'kernel', [-1, -0.5, 0, 1]],
      ['dense_q', 'bias', [0.25, -0.25]],
    ]);
    await fs.writeFile(path.join(dir, 'w.bin'), bin.subarray(0, 6));
    expect((await thrown(readWeightFile(dir))).message).toMatch(/weight files do not match its manifest/);
    await fs.rm(path.join(dir, 'w.bin'));
    expect((await thrown(readWeightFile(dir))).message).toMatch(/w\.bin, listed in .*model\.json, is missing/);
  });
});

// ------------------------------------------------------------------------------------------ shared

describe('shared real weights (../shared/weights)', () => {
  it('Teachable Machine MobileNetV2 0.35/224: all 260 backbone weights match, the head is ignored, outputs agree', async (ctx) => {
    needShared(ctx, 'reading the real Teachable Machine export', TM_WEIGHTS);
    const read = await readWeightFile(tmFolder);
    expect(read).toHaveLength(263);
    const model = mobileNetV2({ alpha: 0.35, imageSize: 224 });
    const report = assignWeights(model, read, tmFolder);
    expect(report.matched).toBe(260);
    expect(report.ignored).toEqual(['dense_Dense9/kernel', 'dense_Dense9/bias', 'dense_Dense10/kernel']);
    // The element count of the 260 tensors is the α=0.35 no-top parameter count.
    const backboneValues = read.filter((w) => !w.layer.startsWith('dense_')).reduce((n, w) => n + w.values.length, 0);
    expect(backboneValues).toBe(model.countParams());

    // Numerics: TM's own graph (Keras 2.2 MobileNetV2 with Conv1_pad + 'valid') vs ours ('same').
    const json = JSON.parse(await fs.readFile(path.join(tmFolder, 'model.json'), 'utf8')) as {
      modelTopology: object;
      weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[];
    };
    const bin = await fs.readFile(path.join(tmFolder, 'weights.bin'));
    const tm = await tf.loadLayersModel({
      load: async () => ({
        modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
        weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength) as ArrayBuffer,
      }),
    });
    const tmFeatures = tm.layers[0] as tf.LayersModel; // Sequential[model5, GlobalAveragePooling2D]
    const [ours, theirs] = tf.tidy(() => {
      const x = tf.randomUniform([2, 224, 224, 3], -1, 1, 'float32', 42);
      return [(model.predict(x) as tf.Tensor).mean([1, 2]), tmFeatures.predict(x) as tf.Tensor];
    });
    expect(ours.shape).toEqual([2, 1280]);
    expect(theirs.shape).toEqual([2, 1280]);
    const maxDiff = tf.tidy(() => ours.sub(theirs).abs().max().dataSync()[0]!);
    const scale = tf.tidy(() => theirs.abs().max().dataSync()[0]!);
    console.log(`TM vs built MobileNetV2 0.35/224 GAP features: max |diff| ${maxDiff.toExponential(2)} (max |feature| ${scale.toFixed(3)})`);
    expect(scale).toBeGreaterThan(0.1); // non-trivial features
    expect(maxDiff).toBeLessThan(1e-4);
    tf.dispose([ours, theirs]);
    tm.dispose();
  });

  it('real Keras 2.0.4 .h5 (MobileNet v1 0.25): 135 tensors, identical to the tfjs export of the same weights', async (ctx) => {
    needShared(ctx, 'reading a real Keras .h5 file', V1_H5, V1_FOLDER);
    const fromH5 = await readWeightFile(v1H5);
    expect(fromH5).toHaveLength(135);
    expect(fromH5[0]).toMatchObject({ layer: 'conv1', name: 'kernel', shape: [3, 3, 3, 8] });
    expect(fromH5.slice(1, 5).map((w) => w.name)).toEqual(['gamma', 'beta', 'moving_mean', 'moving_variance']);
    expect(fromH5.find((w) => w.layer === 'conv_dw_1')).toMatchObject({ name: 'depthwise_kernel', shape: [3, 3, 8, 1] });
    expect(fromH5.reduce((n, w) => n + w.values.length, 0)).toBe(218_544); // SOURCES.txt

    const fromTfjs = new Map((await readWeightFile(v1Folder)).map((w): [string, WeightTensor] => [`${w.layer}/${w.name}`, w]));
    expect(fromTfjs.size).toBe(137); // + the 1000-class conv_preds top
    for (const w of fromH5) {
      const other = fromTfjs.get(`${w.layer}/${w.name}`);
      expect(other?.shape, `${w.layer}/${w.name}`).toEqual(w.shape);
      expect(Buffer.from(other!.values.buffer).equals(Buffer.from(w.values.buffer)), `${w.layer}/${w.name}`).toBe(true);
    }
  });
});
