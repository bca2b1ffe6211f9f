/**
 * planTrainableUnits / runTrainableUnit (src/engine/trainable-units.ts) on a real MobileNetV2: every
 * Conv → BN (→ ReLU6) chain is found, and a unit's output and gradients (input, kernel, γ, β) equal
 * those of its Keras layers applied one after the other in inference mode — on cpu, and on WebGPU
 * when there is an adapter (skipped without one, failing under CI).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2 } from '../src/backbones/mobilenet_v2.js';
import { planTrainableUnits, runTrainableUnit, type TrainableUnit } from '../src/engine/trainable-units.js';
import { randoms, relativeError } from './helpers/kernel-check.js';
import { needWebgpu, startWebgpu } from './helpers/webgpu.js';

let unavailable: string | undefined;
beforeAll(async () => {
  unavailable = await startWebgpu();
});

/** MobileNetV2 α=0.35 at 32 px with moving statistics that are not 0 and 1 (so they matter). */
function model(): tf.LayersModel {
  const m = mobileNetV2({ alpha: 0.35, imageSize: 32 });
  let seed = 1;
  for (const layer of m.layers) {
    if (layer.getClassName() !== 'BatchNormalization') continue;
    const c = layer.getWeights()[0]!.shape[0]!; // the variables themselves: not to dispose
    layer.setWeights([
      tf.tensor1d(randoms(c, seed++).map((v) => 1 + 2 * v)),
      tf.tensor1d(randoms(c, seed++)),
      tf.tensor1d(randoms(c, seed++).map((v) => 0.3 * v)),
      tf.tensor1d(randoms(c, seed++).map((v) => 0.5 + Math.abs(v))),
    ]);
  }
  return m;
}

/** Output and gradients (input, kernel, γ, β) of a unit, as one op or as its layers. */
async function unitResults(unit: TrainableUnit, how: 'op' | 'layers'): Promise<Float32Array[]> {
  const inputShape = [2, ...(unit.conv.input as tf.SymbolicTensor).shape.slice(1)] as number[];
  const x = tf.tensor(randoms(tf.util.sizeFromShape(inputShape), 77), inputShape);
  const variables = [unit.conv.weights[0]!, unit.bn.weights[0]!, unit.bn.weights[1]!].map((w) => w.read() as tf.Variable);
  const forward = (input: tf.Tensor) =>
    how === 'op'
      ? runTrainableUnit(unit, input, true)
      : unit.layers.reduce((t, layer) => layer.apply(t, { training: false }) as tf.Tensor, input);
  const outShape = forward(x).shape;
  const dy = tf.tensor(randoms(tf.util.sizeFromShape(outShape), 78), outShape);
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(forward(x), dy)), variables);
  const dx = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(forward(input), dy)))(x);
  const out = forward(x);
  const results = await Promise.all([out, dx, ...variables.map((v) => grads[v.name]!)].map(async (t) => (await t.data()) as Float32Array));
  tf.dispose([x, dy, value, dx, out, ...Object.values(grads)]);
  return results;
}

describe('planTrainableUnits', () => {
  it("finds MobileNetV2's 52 Conv → BN units: 35 with ReLU6, 17 without (the projections)", async () => {
    await tf.setBackend('cpu');
    const m = mobileNetV2({ alpha: 0.35, imageSize: 32 });
    const units = planTrainableUnits(m).filter((u): u is TrainableUnit => u !== undefined);
    expect(units.length).toBe(52);
    expect(units.filter((u) => u.activation === 'relu6').length).toBe(35);
    expect(units.filter((u) => u.activation === 'linear').every((u) => u.conv.name.endsWith('_project'))).toBe(true);
    for (const u of units) expect(u.layers.map((l) => m.layers.indexOf(l))).toEqual(Array.from({ length: u.last - u.first + 1 }, (_, k) => u.first + k));
    // A unit never reaches past `to`: up to block_16_expand_BN, that unit has no ReLU6.
    const to = m.layers.findIndex((l) => l.name === 'block_16_expand_BN');
    const cut = planTrainableUnits(m, to).find((u) => u?.conv.name === 'block_16_expand');
    expect(cut?.activation).toBe('linear');
    m.dispose();
  });
});

describe('runTrainableUnit', () => {
  const picks = ['Conv1', 'block_2_depthwise', 'block_5_project', 'Conv_1'];
  for (const backend of ['cpu', 'webgpu'] as const) {
    it(`equals the Keras layers in inference mode, output and gradients, on ${backend} (${picks.join(', ')})`, async (ctx) => {
      if (backend === 'webgpu') needWebgpu(ctx, unavailable);
      await tf.setBackend(backend);
      const m = model();
      const units = planTrainableUnits(m);
      for (const name of picks) {
        const unit = units.find((u) => u?.conv.name === name)!;
        const want = await unitResults(unit, 'layers');
        const got = await unitResults(unit, 'op');
        ['output', 'dx', 'dkernel', 'dgamma', 'dbeta'].forEach((what, k) =>
          expect(relativeError(got[k]!, want[k]!), `${name} ${what}`).toBeLessThan(backend === 'cpu' ? 1e-5 : 1e-4),
        );
      }
      m.dispose();
    });
  }
});
