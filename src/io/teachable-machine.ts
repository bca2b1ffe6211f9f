/**
 * metadata.json in Teachable Machine's image-model format, so code written for Teachable Machine
 * models finds the labels and the input size where it looks for them.
 *
 * What `tmImage.load(modelURL, metadataURL)` (@teachablemachine/image, libraries/image/src/
 * custom-mobilenet.ts) does with it: `fillMetadata` keeps every field and fills in packageVersion,
 * packageName, timeStamp, userMetadata, modelName, labels and imageSize (224) when missing; only
 * `labels` is required (`isMetadata`). `predict(image)` then center-crops the image to a square of
 * `imageSize` (cropTo, on a canvas), reads it with `tf.browser.fromPixels`, and feeds
 * `x / 127 − 1` (utils/tf.ts `capture`) to the model: a TM model expects inputs in [−1, 1].
 * finetune's model/ takes raw 0–255 values instead (its preprocessing is its first layer), so
 * `tmImage`'s own predict() gives wrong answers on it; `finetune export --format tm` writes a copy
 * whose first layer undoes TM's scaling (see src/export/tm.ts).
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import type { ResizeMode } from '../data/types.js';

const require = createRequire(import.meta.url);

/** The fields TM's `Metadata` interface declares, plus finetune's own `finetune` section. */
export interface TeachableMachineMetadata {
  tfjsVersion: string;
  tmVersion?: string;
  packageVersion: string;
  packageName: string;
  modelName: string;
  timeStamp: string;
  labels: string[];
  userMetadata: Record<string, unknown>;
  grayscale: boolean;
  imageSize: number;
  /** Ignored by TM's library: what finetune's model expects, for people and tools that read it. */
  finetune: {
    /** What the model's input holds. */
    input: 'rgb-0-255' | 'teachable-machine';
    inputDescription: string;
    resize: ResizeMode;
    /** The preprocessing inside the model (its first layer, `preprocess`). */
    preprocessing: Preprocessing;
  };
}

export interface MetadataInfo {
  classes: readonly string[];
  imageSize: number;
  resize: ResizeMode;
  preprocessing: Preprocessing;
  modelName?: string;
  /** 'rgb-0-255' (model/): raw pixels. 'teachable-machine': inputs scaled as tmImage does, x/127 − 1. */
  input?: 'rgb-0-255' | 'teachable-machine';
  timeStamp?: string;
}

const INPUT_DESCRIPTIONS = {
  'rgb-0-255':
    'float32 [batch, imageSize, imageSize, 3], RGB values 0–255 (not scaled: the preprocessing is the model\'s first layer, "preprocess"); resize as "resize" says',
  'teachable-machine':
    "float32 [batch, imageSize, imageSize, 3], RGB scaled to x/127 − 1 as @teachablemachine/image's predict() does; center-crop to a square first",
} as const;

export function finetuneVersion(): string {
  return (require('../../package.json') as { version: string }).version;
}

/** metadata.json for a model folder. */
export function teachableMachineMetadata(info: MetadataInfo): TeachableMachineMetadata {
  const input = info.input ?? 'rgb-0-255';
  return {
    tfjsVersion: tf.version.tfjs,
    packageVersion: finetuneVersion(),
    packageName: 'finetune',
    modelName: info.modelName ?? 'finetune-model',
    timeStamp: info.timeStamp ?? new Date().toISOString(),
    labels: [...info.classes],
    userMetadata: {},
    grayscale: false,
    imageSize: info.imageSize,
    finetune: { input, inputDescription: INPUT_DESCRIPTIONS[input], resize: info.resize, preprocessing: info.preprocessing },
  };
}
