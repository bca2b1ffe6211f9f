/**
 * Run folders for the export tests, made without training: a real backbone (MobileNetV2 with the
 * shared ImageNet weights where ../shared has them, or seeded random weights; VGG16) with
 * finetune's head, saved as training saves it, plus its finetune.json. The head is seeded, not
 * trained: the exports must reproduce whatever the model computes, trained or not.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { getBackbone } from '../../src/backbones/registry.js';
import { seedRandomWeights, loadBackboneWeights } from '../../src/backbones/weights.js';
import type { ResizeMode } from '../../src/data/types.js';
import { saveClassifierModel } from '../../src/io/classifier-model.js';
import { saveModelDir } from '../../src/io/model-io.js';
import { attachHead } from '../../src/train/head.js';

export interface ExportRunOptions {
  backbone: 'mobilenetv2' | 'vgg16';
  alpha?: number;
  imageSize: number;
  classes: string[];
  resize?: ResizeMode;
  /** A tfjs model or .h5 holding the backbone's weights; seeded random weights without it. */
  weights?: string;
  seed?: number;
  /** finetune-model/1 (model takes preprocessed input) or /2 (model takes raw pixels; what training writes now). */
  format?: 1 | 2;
}

/**
 * Batch-norm statistics measured on a batch of noise images, layer by layer, with gamma and beta
 * drawn around 1 and 0: random kernels with Keras's initial statistics (mean 0, variance 1) let
 * the image's signal fade out within a few blocks (MobileNetV2's output then hardly depends on its
 * input, and no conversion error could show); calibrated, every layer carries it, and folding the
 * statistics into the convolutions is really exercised.
 */
function calibrateBatchNorms(model: tf.LayersModel, seed: number): void {
  const size = model.inputs[0]!.shape.slice(1) as number[];
  // One eager pass, layer by layer: each batch norm is set from its input, then applied.
  const outputs = new Map<string, tf.Tensor>([[model.inputLayers[0]!.name, tf.randomUniform([4, ...size], -1, 1, 'float32', seed)]]);
  model.layers.forEach((layer, i) => {
    const from = layer.inboundNodes[0]?.inboundLayers ?? [];
    if (from.length === 0) return;
    const inputs = from.map((l) => outputs.get(l.name)!);
    if (layer.getClassName() === 'BatchNormalization') {
      const values = tf.tidy(() => {
        const { mean, variance } = tf.moments(inputs[0]!, [0, 1, 2]);
        const channels = mean.shape as [number];
        const gamma = tf.randomUniform(channels, 0.7, 1.3, 'float32', seed * 7919 + i);
        const beta = tf.randomUniform(channels, -0.3, 0.3, 'float32', seed * 7919 + i + 1);
        return [gamma, beta, mean, tf.add(variance, 1e-3)];
      });
      layer.setWeights(values);
      tf.dispose(values);
    }
    outputs.set(layer.name, layer.apply(inputs.length === 1 ? inputs[0]! : inputs) as tf.Tensor);
  });
  tf.dispose([...outputs.values()]);
}

/** The backbone alone (no head), with the weights `options` ask for. */
export async function buildBackbone(options: Omit<ExportRunOptions, 'classes'>): Promise<tf.LayersModel> {
  const seed = options.seed ?? 1;
  const base = getBackbone(options.backbone).build({ imageSize: options.imageSize, alpha: options.alpha ?? 1 });
  if (options.weights !== undefined) {
    await loadBackboneWeights(base, options.weights);
  } else {
    seedRandomWeights(base, seed);
    calibrateBatchNorms(base, seed);
  }
  return base;
}

/** Writes `<dir>/model/` and `<dir>/finetune.json`; returns dir. */
export async function writeExportRun(dir: string, options: ExportRunOptions): Promise<string> {
  const seed = options.seed ?? 1;
  const spec = getBackbone(options.backbone);
  const base = await buildBackbone(options);
  const model = attachHead(base, { numClasses: options.classes.length, dropout: 0.2, seed });
  const resize = options.resize ?? 'stretch';
  const format = options.format ?? 2;
  mkdirSync(dir, { recursive: true });
  if (format === 2) {
    await saveClassifierModel(model, path.join(dir, 'model'), {
      classes: options.classes,
      imageSize: options.imageSize,
      resize,
      preprocessing: spec.preprocessing,
    });
  } else {
    await saveModelDir(model, path.join(dir, 'model'));
  }
  model.dispose();
  writeFileSync(
    path.join(dir, 'finetune.json'),
    JSON.stringify({
      format: `finetune-model/${format}`,
      classes: options.classes,
      backbone: { name: options.backbone, alpha: options.alpha ?? 1 },
      input: { size: options.imageSize, channels: 3, resize, preprocessing: spec.preprocessing },
      versions: { tfjs: tf.version.tfjs },
      results: {},
    }),
  );
  return dir;
}
