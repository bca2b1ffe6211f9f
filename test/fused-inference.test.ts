/**
 * Folding batch norms into convolutions must not change what a frozen model computes, and must
 * follow any change of the weights it was folded from.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mobileNetV2 } from '../src/backbones/mobilenet_v2.js';
import { vgg16 } from '../src/backbones/vgg16.js';
import { initEngine } from '../src/engine/backend.js';
import { FusedInference } from '../src/engine/fused-inference.js';
import { SplitModel } from '../src/train/graph.js';

beforeAll(async () => {
  await initEngine('wasm');
});

/** Gives every BatchNormalization layer statistics far from the identity, so folding shows. */
function randomiseBatchNorms(model: tf.LayersModel, seed: number): void {
  let s = seed;
  for (const layer of model.layers) {
    if (layer.getClassName() !== 'BatchNormalization') continue;
    const n = layer.weights[0]!.shape[0]!;
    layer.setWeights([
      tf.randomUniform([n], 0.5, 1.5, 'float32', s++),
      tf.randomNormal([n], 0, 0.2, 'float32', s++),
      tf.randomNormal([n], 0, 0.2, 'float32', s++),
      tf.randomUniform([n], 0.5, 1.5, 'float32', s++),
    ]);
  }
}

function relativeError(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]! / Math.max(1e-12, tf.max(tf.abs(a)).dataSync()[0]!));
}

describe('FusedInference', () => {
  it('folds every conv → BN (→ ReLU6) chain of MobileNetV2 and computes what the model computes', () => {
    const model = mobileNetV2({ alpha: 0.35, imageSize: 64 });
    randomiseBatchNorms(model, 1);
    const plan = FusedInference.forModel(model)!;
    // Conv1, block 0's depthwise and project, 16 × (expand, depthwise, project), Conv_1.
    expect(plan.foldedChains).toBe(52);
    const x = tf.randomUniform([3, 64, 64, 3], -1, 1, 'float32', 7);
    const expected = model.predict(x) as tf.Tensor;
    const actual = plan.run(x);
    expect(relativeError(expected, actual)).toBeLessThan(1e-4);
    tf.dispose([x, expected, actual]);
    plan.dispose();
    model.dispose();
  });

  it('follows new weights: assigning a folded layer refolds it', () => {
    const model = mobileNetV2({ alpha: 0.35, imageSize: 32 });
    randomiseBatchNorms(model, 2);
    const plan = FusedInference.forModel(model)!;
    const x = tf.randomUniform([2, 32, 32, 3], -1, 1, 'float32', 8);
    tf.dispose(plan.run(x));
    randomiseBatchNorms(model, 3);
    const conv = model.getLayer('block_5_expand');
    conv.setWeights([tf.randomNormal(conv.weights[0]!.shape as number[], 0, 0.3, 'float32', 9)]);
    const expected = model.predict(x) as tf.Tensor;
    const actual = plan.run(x);
    expect(relativeError(expected, actual)).toBeLessThan(1e-4);
    tf.dispose([x, expected, actual]);
    plan.dispose();
    model.dispose();
  });

  it('runs a model without batch norms (VGG16) unchanged', () => {
    const model = vgg16({ imageSize: 32 });
    const plan = FusedInference.forModel(model)!;
    expect(plan.foldedChains).toBe(0);
    const x = tf.randomUniform([2, 32, 32, 3], -100, 100, 'float32', 10);
    const expected = model.predict(x) as tf.Tensor;
    const actual = plan.run(x);
    expect(relativeError(expected, actual)).toBeLessThan(1e-5);
    tf.dispose([x, expected, actual]);
    model.dispose();
  });

  it('keeps the tensor count flat across calls, and frees its folded weights', () => {
    const model = mobileNetV2({ alpha: 0.35, imageSize: 32 });
    const before = tf.memory().numTensors;
    const plan = FusedInference.forModel(model)!;
    const x = tf.zeros([1, 32, 32, 3]);
    tf.dispose(tf.tidy(() => plan.run(x)));
    const afterFirst = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) tf.dispose(tf.tidy(() => plan.run(x)));
    expect(tf.memory().numTensors).toBe(afterFirst);
    plan.dispose();
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('declines models it cannot plan (Sequential)', () => {
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3] })] });
    expect(FusedInference.forModel(model)).toBeUndefined();
    model.dispose();
  });
});

describe('SplitModel.runTop (trainable layers, batch norms in inference mode)', () => {
  it('gives the values and the γ/β and kernel gradients that the layers themselves give', () => {
    const model = mobileNetV2({ alpha: 0.35, imageSize: 32 });
    randomiseBatchNorms(model, 4);
    const split = new SplitModel(model, 0);
    const x = tf.randomUniform([2, 32, 32, 3], -1, 1, 'float32', 11);
    const bn = model.getLayer('block_16_project_BN');
    const variables = [
      ...bn.trainableWeights,
      ...['Conv1', 'block_3_depthwise', 'block_16_project'].map((name) => model.getLayer(name).trainableWeights[0]!),
    ].map((w) => w.read() as tf.Variable);
    const ours = tf.variableGrads(() => tf.sum(tf.square(split.runTop(x, () => false))) as tf.Scalar, variables);
    const theirs = tf.variableGrads(
      () => tf.sum(tf.square(model.apply(x, { training: false }) as tf.Tensor)) as tf.Scalar,
      variables,
    );
    expect(Math.abs(ours.value.dataSync()[0]! - theirs.value.dataSync()[0]!) / theirs.value.dataSync()[0]!).toBeLessThan(1e-4);
    for (const { name } of variables) expect(relativeError(theirs.grads[name]!, ours.grads[name]!)).toBeLessThan(1e-3);
    tf.dispose([x, ours.value, theirs.value, ...Object.values(ours.grads), ...Object.values(theirs.grads)]);
    model.dispose();
  });

  it("computes no gradient for the lowest convolution's input (the image), which nothing needs", async () => {
    const model = mobileNetV2({ alpha: 0.35, imageSize: 32 });
    const split = new SplitModel(model, 0);
    const x = tf.randomUniform([2, 32, 32, 3], -1, 1, 'float32', 12);
    const kernel = model.getLayer('Conv1').trainableWeights[0]!.read() as tf.Variable;
    const profile = await tf.profile(() => {
      const { value, grads } = tf.variableGrads(() => tf.sum(split.runTop(x, () => false)) as tf.Scalar, [kernel]);
      tf.dispose([value, ...Object.values(grads)]);
    });
    const inputGradients = profile.kernels.filter((k) => k.name === 'Conv2DBackpropInput' && k.outputShapes[0]?.join() === '2,32,32,3');
    expect(profile.kernels.some((k) => k.name === 'Conv2DBackpropFilter')).toBe(true);
    expect(inputGradients).toEqual([]);
    x.dispose();
    model.dispose();
  });
});
