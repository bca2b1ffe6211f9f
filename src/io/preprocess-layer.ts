/**
 * The backbone's preprocessing as the first layer of a saved model, so the model takes raw RGB
 * values (0–255, float32) and anyone can load it with plain `tf.loadLayersModel` or Keras.
 *
 * Every finetune preprocessing is one affine map per channel plus a channel permutation
 * (src/backbones/preprocess.ts), which is exactly a fixed 1×1 Conv2D: kernel = permutation × scale,
 * bias = offset. A standard layer, so no custom code is needed wherever the model goes.
 */
import * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import { FinetuneError } from '../errors.js';
import { concatWeightData } from './model-io.js';

/** The name of the preprocessing layer in every model finetune saves (format 2 on). */
export const PREPROCESS_LAYER = 'preprocess';

/** A 1×1 convolution from 3 channels to 3: kernel [1, 1, 3, 3] (input channel major), bias [3]. */
export interface ChannelAffine {
  kernel: Float32Array;
  bias: Float32Array;
}

/**
 * How the values fed to the model relate to raw pixels: raw = fed × scale + offset. Raw pixels
 * themselves are { scale: 1, offset: 0 }; Teachable Machine's library feeds x/127 − 1, which is
 * { scale: 127, offset: 127 }.
 */
export interface InputScaling {
  scale: number;
  offset: number;
}

export const RAW_PIXELS: InputScaling = { scale: 1, offset: 0 };

/**
 * The 1×1 convolution that turns model inputs (raw pixels, or `input`-scaled values) into what the
 * backbone was trained on:  out[o] = (raw[src(o)] − mean[src(o)]) × scale, with src(o) = o for RGB
 * and 2 − o for BGR.
 */
export function preprocessingAffine(spec: Preprocessing, input: InputScaling = RAW_PIXELS): ChannelAffine {
  const kernel = new Float32Array(9);
  const bias = new Float32Array(3);
  for (let o = 0; o < 3; o++) {
    const i = spec.channelOrder === 'rgb' ? o : 2 - o;
    kernel[i * 3 + o] = input.scale * spec.scale;
    bias[o] = (input.offset - spec.mean[i]!) * spec.scale;
  }
  return { kernel, bias };
}

type LayerJson = { name: string; class_name: string; config: Record<string, unknown>; inbound_nodes: unknown[] };
type ModelConfigJson = { name?: string; layers: LayerJson[]; input_layers: [string, number, number][]; output_layers: unknown[] };

/** The Functional model config inside tfjs's modelTopology (tfjs writes it Keras-style). */
export function functionalConfig(topology: unknown): ModelConfigJson {
  const t = topology as { class_name?: string; config?: ModelConfigJson; model_config?: { class_name?: string; config?: ModelConfigJson } };
  const inner = t.model_config ?? t;
  if (!inner.config || !Array.isArray(inner.config.layers) || !Array.isArray(inner.config.input_layers)) {
    throw new FinetuneError(`the model is a ${inner.class_name ?? 'model of unknown kind'}, not a functional model with named layers; finetune cannot rewrite it.`);
  }
  return inner.config;
}

/** Replaces references to layer `from` by `to` in a (nested) inbound_nodes structure. */
function renameInbound(nodes: unknown, from: string, to: string): unknown {
  if (!Array.isArray(nodes)) return nodes;
  if (nodes.length >= 3 && nodes[0] === from && typeof nodes[1] === 'number') return [to, ...nodes.slice(1)];
  return nodes.map((n) => renameInbound(n, from, to));
}

/** The Keras/tfjs config of the fixed preprocessing convolution. */
function preprocessLayerJson(inputName: string): LayerJson {
  return {
    name: PREPROCESS_LAYER,
    class_name: 'Conv2D',
    config: {
      filters: 3,
      kernel_initializer: { class_name: 'Zeros', config: {} },
      kernel_regularizer: null,
      kernel_constraint: null,
      kernel_size: [1, 1],
      strides: [1, 1],
      padding: 'valid',
      data_format: 'channels_last',
      dilation_rate: [1, 1],
      activation: 'linear',
      use_bias: true,
      bias_initializer: { class_name: 'Zeros', config: {} },
      bias_regularizer: null,
      activity_regularizer: null,
      bias_constraint: null,
      name: PREPROCESS_LAYER,
      // Fixed arithmetic, not a feature: training must never move it.
      trainable: false,
    },
    inbound_nodes: [[[inputName, 0, 0, {}]]],
  };
}

/**
 * Returns new ModelArtifacts whose model has the preprocessing convolution right after its input:
 * every layer that read the input now reads `preprocess`. The input keeps its name and shape.
 */
export function withPreprocessingLayer(artifacts: tf.io.ModelArtifacts, affine: ChannelAffine): tf.io.ModelArtifacts {
  const topology = structuredClone(artifacts.modelTopology) as object;
  const config = functionalConfig(topology);
  if (config.input_layers.length !== 1) throw new FinetuneError(`the model has ${config.input_layers.length} inputs; finetune models have one.`);
  if (config.layers.some((l) => l.name === PREPROCESS_LAYER)) {
    throw new FinetuneError(`the model already has a layer named '${PREPROCESS_LAYER}': its preprocessing is inside it already.`);
  }
  const inputName = config.input_layers[0]![0];
  const inputIndex = config.layers.findIndex((l) => l.name === inputName);
  if (inputIndex < 0) throw new FinetuneError(`the model's input layer '${inputName}' is not among its layers.`);
  for (const layer of config.layers) layer.inbound_nodes = renameInbound(layer.inbound_nodes, inputName, PREPROCESS_LAYER) as unknown[];
  config.layers.splice(inputIndex + 1, 0, preprocessLayerJson(inputName));
  const weightSpecs: tf.io.WeightsManifestEntry[] = [
    ...(artifacts.weightSpecs ?? []),
    { name: `${PREPROCESS_LAYER}/kernel`, shape: [1, 1, 3, 3], dtype: 'float32' },
    { name: `${PREPROCESS_LAYER}/bias`, shape: [3], dtype: 'float32' },
  ];
  const old = concatWeightData(artifacts.weightData);
  const weightData = new Uint8Array(old.byteLength + 12 * 4);
  weightData.set(old, 0);
  weightData.set(new Uint8Array(affine.kernel.buffer, affine.kernel.byteOffset, 36), old.byteLength);
  weightData.set(new Uint8Array(affine.bias.buffer, affine.bias.byteOffset, 12), old.byteLength + 36);
  return { ...artifacts, modelTopology: topology, weightSpecs, weightData: weightData.buffer };
}

/**
 * The same model with the preprocessing convolution's arithmetic replaced (e.g. for Teachable
 * Machine's input scaling). The model must already have a `preprocess` layer.
 */
export function replacePreprocessingWeights(artifacts: tf.io.ModelArtifacts, affine: ChannelAffine): tf.io.ModelArtifacts {
  const specs = artifacts.weightSpecs ?? [];
  const data = concatWeightData(artifacts.weightData).slice();
  let offset = 0;
  let replaced = 0;
  for (const spec of specs) {
    if (spec.dtype !== undefined && spec.dtype !== 'float32') {
      throw new FinetuneError(`weight ${spec.name} is ${spec.dtype}; finetune models hold float32 weights only.`);
    }
    const bytes = spec.shape.reduce((a, b) => a * b, 1) * 4;
    const values = spec.name === `${PREPROCESS_LAYER}/kernel` ? affine.kernel : spec.name === `${PREPROCESS_LAYER}/bias` ? affine.bias : undefined;
    if (values !== undefined) {
      data.set(new Uint8Array(values.buffer, values.byteOffset, bytes), offset);
      replaced++;
    }
    offset += bytes;
  }
  if (replaced !== 2) throw new FinetuneError(`the model has no '${PREPROCESS_LAYER}' layer to rewrite (is it a format-1 model?).`);
  return { ...artifacts, weightData: data.buffer };
}
