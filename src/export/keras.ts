/**
 * `finetune export --format keras`: a full-model Keras HDF5 file (`model.h5`) that
 * `keras.models.load_model` (Keras 3) and tf.keras / tf_keras (Keras 2) load with no custom code.
 * Input: raw RGB values 0–255, float32 [batch, size, size, 3] (the preprocessing is its first
 * layer, `preprocess`); output: class probabilities.
 *
 * The layout is the one Keras 2's save_model_to_hdf5 writes, which Keras 3 still reads through its
 * legacy loader (keras/src/legacy/saving/legacy_h5_format.py):
 *   /                      attrs keras_version, backend, model_config (JSON, {"class_name": "Functional", …})
 *   /model_weights         attrs keras_version, backend, layer_names (every layer, in model order)
 *   /model_weights/<layer> attrs weight_names (e.g. "Conv1/kernel:0"; empty for layers without weights)
 *   /model_weights/<layer>/<layer>/<weight>:0   the values, float32
 * Both loaders match weights to layers by position (layers with weights, in order; within a layer,
 * trainable then non-trainable, i.e. creation order), so the order below is Keras's own.
 * tfjs already writes its model topology as Keras-style JSON; it is reused as is.
 */
import * as path from 'node:path';
import type H5Wasm from 'h5wasm/node';
import type * as tf from '@tensorflow/tfjs';
import { FinetuneError } from '../errors.js';
import { concatWeightData } from '../io/model-io.js';
import { functionalConfig } from '../io/preprocess-layer.js';
import { readRunModel, writeOutputAtomically } from './run-model.js';
import type { ExportContext, ExportFormat } from './types.js';

/** The Keras version whose config dialect tfjs writes (Keras 2); Keras 3 converts it on load. */
const KERAS_CONFIG_VERSION = '2.15.0';

/** Each layer class's weights in Keras's creation order (the order both loaders expect). */
const KERAS_WEIGHT_ORDER: Record<string, readonly string[]> = {
  Conv2D: ['kernel', 'bias'],
  DepthwiseConv2D: ['depthwise_kernel', 'bias'],
  SeparableConv2D: ['depthwise_kernel', 'pointwise_kernel', 'bias'],
  BatchNormalization: ['gamma', 'beta', 'moving_mean', 'moving_variance'],
  Dense: ['kernel', 'bias'],
};

export interface KerasLayerWeights {
  layer: string;
  /** In Keras's order, named as Keras names them in the file ("Conv1/kernel:0"). */
  weights: { name: string; shape: number[]; values: Float32Array }[];
}

/** Splits tfjs weights ("Conv1/kernel") by layer, in the model's layer order and Keras's weight order. */
export function kerasLayerWeights(artifacts: tf.io.ModelArtifacts): KerasLayerWeights[] {
  const config = functionalConfig(artifacts.modelTopology);
  const data = concatWeightData(artifacts.weightData);
  const byName = new Map<string, { shape: number[]; values: Float32Array }>();
  let offset = 0;
  for (const spec of artifacts.weightSpecs ?? []) {
    if (spec.dtype !== undefined && spec.dtype !== 'float32') {
      throw new FinetuneError(`weight ${spec.name} is ${spec.dtype}; the Keras export writes float32 weights only.`);
    }
    const count = spec.shape.reduce((a, b) => a * b, 1);
    // slice(): a copy, aligned for Float32Array whatever the offset.
    byName.set(spec.name, { shape: spec.shape, values: new Float32Array(data.slice(offset, offset + count * 4).buffer) });
    offset += count * 4;
  }
  const layers = config.layers.map((layer) => {
    const prefix = `${layer.name}/`;
    const own = [...byName.keys()].filter((name) => name.startsWith(prefix) && !name.slice(prefix.length).includes('/'));
    if (own.length === 0) return { layer: layer.name, weights: [] };
    const order = KERAS_WEIGHT_ORDER[layer.class_name];
    if (order === undefined) {
      throw new FinetuneError(`the Keras export does not know the weights of layer ${layer.name} (${layer.class_name}); it handles ${Object.keys(KERAS_WEIGHT_ORDER).join(', ')}.`);
    }
    const shortNames = own.map((name) => name.slice(prefix.length));
    const unknown = shortNames.filter((n) => !order.includes(n));
    if (unknown.length > 0) throw new FinetuneError(`layer ${layer.name} (${layer.class_name}) has weights the Keras export does not know: ${unknown.join(', ')}.`);
    const weights = order
      .filter((n) => shortNames.includes(n))
      .map((n) => {
        const w = byName.get(prefix + n)!;
        byName.delete(prefix + n);
        return { name: `${layer.name}/${n}:0`, shape: w.shape, values: w.values };
      });
    return { layer: layer.name, weights };
  });
  if (byName.size > 0) throw new FinetuneError(`weights that belong to no layer of the model: ${[...byName.keys()].slice(0, 5).join(', ')}.`);
  return layers;
}

/** model_config as Keras writes it: the functional model's config under "Functional". */
export function kerasModelConfig(artifacts: tf.io.ModelArtifacts): object {
  return { class_name: 'Functional', config: functionalConfig(artifacts.modelTopology), keras_version: KERAS_CONFIG_VERSION, backend: 'tensorflow' };
}

let h5Ready: Promise<typeof H5Wasm> | undefined;
/** Loaded on the first .h5 export only: importing h5wasm costs ~0.2 CPU s at every start otherwise. */
function initH5(): Promise<typeof H5Wasm> {
  h5Ready ??= import('h5wasm/node').then(async ({ default: h5wasm }) => {
    const module = await h5wasm.ready;
    module.activate_throwing_error_handler();
    return h5wasm;
  });
  return h5Ready;
}

/** Writes ModelArtifacts (a functional model of standard layers) as a Keras full-model .h5 file. */
export async function writeKerasH5(artifacts: tf.io.ModelArtifacts, file: string): Promise<void> {
  const h5wasm = await initH5();
  const layers = kerasLayerWeights(artifacts);
  const h5 = new h5wasm.File(file, 'w');
  try {
    // Scalar variable-length strings: h5py reads them as str, as Keras's own files give.
    h5.create_attribute('keras_version', KERAS_CONFIG_VERSION, []);
    h5.create_attribute('backend', 'tensorflow', []);
    h5.create_attribute('model_config', JSON.stringify(kerasModelConfig(artifacts)), []);
    const root = h5.create_group('model_weights');
    root.create_attribute('keras_version', KERAS_CONFIG_VERSION, []);
    root.create_attribute('backend', 'tensorflow', []);
    root.create_attribute('layer_names', layers.map((l) => l.layer), [layers.length]);
    for (const { layer, weights } of layers) {
      const group = root.create_group(layer);
      // Keras writes an empty list for a layer without weights; its loader skips such layers.
      if (weights.length === 0) group.create_attribute('weight_names', [], [0]);
      else group.create_attribute('weight_names', weights.map((w) => w.name), [weights.length]);
      if (weights.length === 0) continue;
      const inner = group.create_group(layer);
      for (const w of weights) {
        inner.create_dataset({ name: w.name.slice(layer.length + 1), data: w.values, shape: w.shape, dtype: '<f' });
      }
    }
  } finally {
    h5.close();
  }
}

export const kerasFormat: ExportFormat = {
  name: 'keras',
  description: 'Keras full-model .h5 (keras.models.load_model, Keras 3 and tf.keras); input raw RGB 0–255',
  defaultOut: 'model.h5',
  async export(context: ExportContext): Promise<string[]> {
    const { artifacts } = await readRunModel(context.runDir);
    await writeOutputAtomically(context.out, (tmp) => writeKerasH5(artifacts, tmp));
    context.log(`wrote ${context.out} (Keras HDF5; input: raw RGB 0–255)`);
    return [path.basename(context.out)];
  },
};
