import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../src/errors.js';
import {
  MOBILENET_V2_ALPHAS,
  correctPad,
  makeDivisible,
  mobileNetV2,
  mobileNetV2Spec,
} from '../src/backbones/mobilenet_v2.js';
import { CAFFE_PREPROCESSING, MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import { backbones, getBackbone, validateBackboneOptions } from '../src/backbones/registry.js';
import type { BackboneSpec } from '../src/backbones/types.js';
import { vgg16, vgg16Spec } from '../src/backbones/vgg16.js';
import { needShared, sharedPath, TM_WEIGHTS } from './helpers/shared.js';

const TM_MODEL_JSON = `${TM_WEIGHTS}/model.json`;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const layerNames = (m: tf.LayersModel) => m.layers.map((l) => l.name);
const weighted = (m: tf.LayersModel) => m.layers.filter((l) => l.weights.length > 0).map((l) => l.name);

/** Every layer but the input appears in exactly one block; blocks list only real layers. */
function expectBlocksPartition(model: tf.LayersModel, blocks: string[][]): void {
  const flat = blocks.flat();
  expect(new Set(flat).size).toBe(flat.length);
  expect(flat.sort()).toEqual(layerNames(model).slice(1).sort());
  for (const name of weighted(model)) expect(blocks.filter((b) => b.includes(name))).toHaveLength(1);
}

describe('MobileNetV2', () => {
  it('_make_divisible and correct_pad agree with Keras', () => {
    // first_block_filters = _make_divisible(32 * alpha, 8) for each published alpha
    expect(MOBILENET_V2_ALPHAS.map((a) => makeDivisible(32 * a, 8))).toEqual([16, 16, 24, 32, 40, 48]);
    expect(makeDivisible(1280 * 1.4, 8)).toBe(1792);
    expect(makeDivisible(Math.trunc(320 * 0.35), 8)).toBe(112);
    expect(makeDivisible(3, 8)).toBe(8); // never below the divisor
    expect(correctPad(224, 3)).toEqual([0, 1]);
    expect(correctPad(7, 3)).toEqual([1, 1]);
  });

  it('α=1.0: Keras layer names, 2,257,984 params (Keras no-top), out_relu output', () => {
    const m = mobileNetV2({ alpha: 1.0, imageSize: 96 });
    expect(m.name).toBe('mobilenetv2_1.00_96');
    expect(m.countParams()).toBe(2_257_984);
    const names = layerNames(m);
    expect(names).toHaveLength(154); // input + 153 (Keras ≥ 2.3, without the old Conv1_pad)
    expect(names.slice(0, 10)).toEqual([
      'input_1', 'Conv1', 'bn_Conv1', 'Conv1_relu',
      'expanded_conv_depthwise', 'expanded_conv_depthwise_BN', 'expanded_conv_depthwise_relu',
      'expanded_conv_project', 'expanded_conv_project_BN', 'block_1_expand',
    ]);
    expect(names.slice(-4)).toEqual(['block_16_project_BN', 'Conv_1', 'Conv_1_bn', 'out_relu']);
    expect(names.filter((n) => n.endsWith('_pad'))).toEqual(['block_1_pad', 'block_3_pad', 'block_6_pad', 'block_13_pad']);
    expect(names.filter((n) => n.endsWith('_add'))).toEqual(
      [2, 4, 5, 7, 8, 9, 11, 12, 14, 15].map((i) => `block_${i}_add`),
    );
    expect(weighted(m)).toHaveLength(2 + 4 + 16 * 6 + 2);
    expect(m.outputs[0]!.shape).toEqual([null, 3, 3, 1280]);

    const layer = (n: string) => m.getLayer(n).getConfig() as Record<string, unknown>;
    expect(layer('bn_Conv1')).toMatchObject({ epsilon: 1e-3, momentum: 0.999 });
    expect(layer('block_5_expand_relu')).toMatchObject({ maxValue: 6 });
    expect(layer('block_13_pad')).toMatchObject({ padding: [[0, 1], [0, 1]] });
    expect(layer('block_13_depthwise')).toMatchObject({ strides: [2, 2], padding: 'valid', useBias: false });
    expect(layer('block_16_expand')).toMatchObject({ filters: 960, useBias: false });
  });

  it('α=0.35: 410,208 params in 260 tensors; α>1 widens the last conv', () => {
    const m = mobileNetV2({ alpha: 0.35, imageSize: 96 });
    expect(m.countParams()).toBe(410_208);
    expect(m.weights).toHaveLength(260);
    expect(m.getLayer('Conv_1').getConfig()).toMatchObject({ filters: 1280 });
    expect(mobileNetV2({ alpha: 1.4, imageSize: 96 }).outputs[0]!.shape).toEqual([null, 3, 3, 1792]);
  });

  it('layer names and weight shapes equal the Keras-exported Teachable Machine MobileNetV2 0.35/224', (ctx) => {
    needShared(ctx, 'comparing layer names with the real Keras export', TM_MODEL_JSON);
    const json = JSON.parse(readFileSync(sharedPath(TM_MODEL_JSON), 'utf8'));
    const model5 = json.modelTopology.config.layers[0].config.layers[0].config;
    const theirs = (model5.layers as { name: string }[]).map((l) => l.name).filter((n) => n !== 'Conv1_pad');
    const m = mobileNetV2({ alpha: 0.35, imageSize: 224 });
    expect(layerNames(m)).toEqual(theirs); // also input_1
    const specs = new Map<string, number[]>(
      (json.weightsManifest as { weights: { name: string; shape: number[] }[] }[]).flatMap((g) => g.weights.map((w) => [w.name, w.shape])),
    );
    expect(m.weights).toHaveLength(260);
    for (const w of m.weights) expect(specs.get(w.originalName), w.originalName).toEqual(w.shape);
  });

  it('odd and small sizes pad like TensorFlow "same"', () => {
    const m = mobileNetV2({ alpha: 0.35, imageSize: 33 });
    expect(m.getLayer('block_1_pad').getConfig()).toMatchObject({ padding: [[1, 1], [1, 1]] });
    expect(m.outputs[0]!.shape).toEqual([null, 2, 2, 1280]);
    expect(() => mobileNetV2({ imageSize: 31 })).toThrow(RangeError);
  });

  it('blocks: stem, expanded_conv, block_1 … block_16, top; each layer in exactly one', () => {
    for (const alpha of MOBILENET_V2_ALPHAS) {
      const blocks = mobileNetV2Spec.blocks({ alpha, imageSize: 96 });
      expect(blocks).toHaveLength(19);
      expectBlocksPartition(mobileNetV2({ alpha, imageSize: 96 }), blocks);
    }
    const blocks = mobileNetV2Spec.blocks({ alpha: 1.0, imageSize: 224 });
    expect(blocks[0]).toEqual(['Conv1', 'bn_Conv1', 'Conv1_relu']);
    expect(blocks.at(-1)).toEqual(['Conv_1', 'Conv_1_bn', 'out_relu']); // --unfreeze 1
    expect(blocks.at(-2)).toEqual([
      'block_16_expand', 'block_16_expand_BN', 'block_16_expand_relu', 'block_16_depthwise', 'block_16_depthwise_BN',
      'block_16_depthwise_relu', 'block_16_project', 'block_16_project_BN',
    ]);
    expect(blocks[2]).toContain('block_1_pad');
    expect(blocks[2]!.at(-1)).toBe('block_1_project_BN');
    expect(blocks[16]!.at(-1)).toBe('block_15_add'); // blocks[i + 1] is block_i
  });

  it('ImageNet files: Keras names with str(float(alpha)), no invented checksum', () => {
    const base = 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/';
    expect(mobileNetV2Spec.imagenetWeights({ alpha: 1.0, imageSize: 224 })).toEqual({
      fileName: 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5',
      url: `${base}mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`,
    });
    expect(mobileNetV2Spec.imagenetWeights({ alpha: 0.35, imageSize: 96 })?.fileName).toBe(
      'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5',
    );
    expect(mobileNetV2Spec.imagenetWeights({ alpha: 0.5, imageSize: 128 })?.fileName).toContain('_0.5_128_no_top.h5');
    expect(mobileNetV2Spec.imagenetWeights({ alpha: 1.4, imageSize: 160 })?.fileName).toContain('_1.4_160_no_top.h5');
    // Unpublished sizes get the 224 file, as Keras does, with a note saying so.
    const at320 = mobileNetV2Spec.imagenetWeights({ alpha: 1.0, imageSize: 320 });
    expect(at320?.fileName).toBe('mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5');
    expect(at320?.note).toMatch(/224 ones for 320/);
    expect(mobileNetV2Spec.imagenetWeights({ alpha: 0.6, imageSize: 224 })).toBeUndefined();
    expect(mobileNetV2Spec.preprocessing).toBe(MOBILENET_PREPROCESSING);
  });

  it('saves and re-loads through tfjs serialization with the same names and outputs', async () => {
    const m = mobileNetV2({ alpha: 0.35, imageSize: 64 });
    let artifacts: tf.io.ModelArtifacts | undefined;
    await m.save(
      tf.io.withSaveHandler(async (a) => {
        artifacts = a;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const loaded = await tf.loadLayersModel({ load: async () => artifacts! });
    expect(layerNames(loaded)).toEqual(layerNames(m));
    const diff = tf.tidy(() => {
      const x = tf.randomUniform([1, 64, 64, 3], -1, 1, 'float32', 7);
      return (m.predict(x) as tf.Tensor).sub(loaded.predict(x) as tf.Tensor).abs().max().dataSync()[0];
    });
    expect(diff).toBe(0);
  });
});

describe('VGG16', () => {
  it('Keras layer names, 14,714,688 params (Keras no-top), block5_pool output', () => {
    const m = vgg16({ imageSize: 32 });
    expect(m.name).toBe('vgg16');
    expect(m.countParams()).toBe(14_714_688);
    expect(layerNames(m)).toEqual([
      'input_1',
      'block1_conv1', 'block1_conv2', 'block1_pool',
      'block2_conv1', 'block2_conv2', 'block2_pool',
      'block3_conv1', 'block3_conv2', 'block3_conv3', 'block3_pool',
      'block4_conv1', 'block4_conv2', 'block4_conv3', 'block4_pool',
      'block5_conv1', 'block5_conv2', 'block5_conv3', 'block5_pool',
    ]);
    expect(m.outputs[0]!.shape).toEqual([null, 1, 1, 512]);
    expect(m.getLayer('block3_conv2').getConfig()).toMatchObject({ filters: 256, kernelSize: [3, 3], padding: 'same', activation: 'relu' });
    expectBlocksPartition(m, vgg16Spec.blocks({ imageSize: 32 }));
    expect(vgg16Spec.blocks({ imageSize: 224 }).at(-1)).toEqual(['block5_conv1', 'block5_conv2', 'block5_conv3', 'block5_pool']);
    expect(vgg16Spec.build({ imageSize: 224 }).outputs[0]!.shape).toEqual([null, 7, 7, 512]);
  });

  it('ImageNet file with the md5 Keras publishes; caffe preprocessing', () => {
    expect(vgg16Spec.imagenetWeights({ imageSize: 224 })).toEqual({
      fileName: 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
      url: 'https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
      checksum: { algorithm: 'md5', hex: '6d6bbae143d832006294945121d1f1fc' },
    });
    expect(vgg16Spec.preprocessing).toBe(CAFFE_PREPROCESSING);
  });
});

describe('registry', () => {
  it('lists both backbones under their names', () => {
    expect(Object.keys(backbones)).toEqual(['mobilenetv2', 'vgg16']);
    expect(getBackbone('vgg16')).toBe(vgg16Spec);
    for (const spec of Object.values(backbones) as BackboneSpec[]) {
      expect(spec.defaultImageSize).toBeGreaterThanOrEqual(spec.minImageSize);
      if (spec.alphas) expect(spec.alphas).toContain(spec.defaultAlpha);
    }
  });

  it('unknown names and bad options are usage errors naming the flag and the allowed values', () => {
    expect(() => getBackbone('resnet50')).toThrow(UsageError);
    expect(() => getBackbone('resnet50')).toThrow(/unknown backbone 'resnet50'.*mobilenetv2, vgg16/);
    expect(() => getBackbone('toString')).toThrow(UsageError);

    const mnv2 = getBackbone('mobilenetv2');
    expect(validateBackboneOptions(mnv2, {})).toEqual({ alpha: 1.0, imageSize: 224 });
    expect(validateBackboneOptions(mnv2, { alpha: 0.35, imageSize: 96 })).toEqual({ alpha: 0.35, imageSize: 96 });
    expect(() => validateBackboneOptions(mnv2, { alpha: 0.6 })).toThrow(/--alpha 0\.6 .* one of 0\.35, 0\.5, 0\.75, 1, 1\.3, 1\.4/);
    expect(validateBackboneOptions(mnv2, { imageSize: 200 }).imageSize).toBe(200);
    expect(() => validateBackboneOptions(mnv2, { imageSize: 20 })).toThrow(/--image-size 20 .*≥ 32/);
    expect(() => validateBackboneOptions(mnv2, { imageSize: 16 })).toThrow(UsageError);

    expect(validateBackboneOptions(vgg16Spec, {})).toEqual({ alpha: 1, imageSize: 224 });
    expect(validateBackboneOptions(vgg16Spec, { imageSize: 200 })).toEqual({ alpha: 1, imageSize: 200 });
    expect(() => validateBackboneOptions(vgg16Spec, { imageSize: 31 })).toThrow(/--image-size 31 .*≥ 32/);
    expect(() => validateBackboneOptions(vgg16Spec, { imageSize: 100.5 })).toThrow(UsageError);
    expect(() => validateBackboneOptions(vgg16Spec, { alpha: 0.5 })).toThrow(/--alpha does not apply to vgg16.*mobilenetv2/);
  });
});
