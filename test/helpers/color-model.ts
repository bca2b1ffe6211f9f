import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { saveModelDir } from '../../src/io/model-io.js';

/**
 * A hand-made "model folder" whose predictions can be worked out on paper: the input's mean colour
 * (scaled to [0, 1]) times `gain`, through a softmax, one class per colour channel. A solid-colour
 * image (r, g, b) gets p = softmax(gain · (r, g, b) / 255) over the classes given.
 */
export async function writeColorModel(dir: string, options: { classes: string[]; gain?: number; size?: number }): Promise<void> {
  const { classes } = options;
  const gain = options.gain ?? 4;
  const size = options.size ?? 8;
  const k = classes.length;
  const input = tf.input({ shape: [size, size, 3] });
  const pooled = tf.layers.globalAveragePooling2d({}).apply(input) as tf.SymbolicTensor;
  // Class c reads channel c (for 2 classes: red and green).
  const kernel = tf.tidy(() => tf.mul(tf.eye(3, k), gain));
  const dense = tf.layers.dense({ units: k, activation: 'softmax', weights: [kernel, tf.zeros([k])] }).apply(pooled) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: dense });
  await saveModelDir(model, path.join(dir, 'model'));
  model.dispose();
  kernel.dispose();
  writeFileSync(
    path.join(dir, 'finetune.json'),
    JSON.stringify({
      format: 'finetune-model/1',
      classes,
      backbone: { name: 'color-test' },
      input: { size, channels: 3, resize: 'stretch', preprocessing: { name: 'dataset-mean', mean: [0, 0, 0], scale: 1 / 255, channelOrder: 'rgb' } },
      versions: { tfjs: tf.version.tfjs },
      results: {},
    }),
  );
}

/** Writes a solid-colour PNG. */
export async function solidPng(file: string, rgb: [number, number, number], size = 16): Promise<void> {
  mkdirSync(path.dirname(file), { recursive: true });
  await sharp({ create: { width: size, height: size, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } })
    .png()
    .toFile(file);
}

/** softmax(gain · rgb / 255) over the first k channels, in double precision. */
export function colorProbabilities(rgb: [number, number, number], k: number, gain = 4): number[] {
  const logits = rgb.slice(0, k).map((v) => (gain * v) / 255);
  const m = Math.max(...logits);
  const e = logits.map((l) => Math.exp(l - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}
