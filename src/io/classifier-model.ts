/**
 * The model folder a training run leaves (run format finetune-model/2): a tfjs layers model that
 * takes raw RGB values (0–255, float32, at the model's input size) and returns class
 * probabilities, plus metadata.json in Teachable Machine's format. Resizing stays outside the
 * model: finetune.json (input.size, input.resize) and metadata.json say how.
 */
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from '../backbones/preprocess.js';
import type { ResizeMode } from '../data/types.js';
import { writeFileAtomic } from './atomic.js';
import { modelArtifacts, writeArtifactsDir } from './model-io.js';
import { preprocessingAffine, withPreprocessingLayer } from './preprocess-layer.js';
import { teachableMachineMetadata } from './teachable-machine.js';

export interface ClassifierModelInfo {
  classes: readonly string[];
  imageSize: number;
  resize: ResizeMode;
  /** The preprocessing the model was trained on; it becomes the saved model's first layer. */
  preprocessing: Preprocessing;
  /** metadata.json's modelName (default 'finetune-model'). */
  modelName?: string;
}

/**
 * Saves a trained model (which takes preprocessed input) as a self-contained model folder: the
 * preprocessing becomes a fixed 1×1 Conv2D named `preprocess` in front of it, so the saved model
 * takes raw pixels. The in-memory model is not changed. Crash-safe like saveModelDir (weights file
 * by content hash, then model.json, then metadata.json, each renamed into place).
 */
export async function saveClassifierModel(model: tf.LayersModel, dir: string, info: ClassifierModelInfo): Promise<void> {
  const artifacts = withPreprocessingLayer(await modelArtifacts(model), preprocessingAffine(info.preprocessing));
  await writeArtifactsDir(artifacts, dir);
  await writeMetadataJson(dir, info);
}

/** Writes `<dir>/metadata.json` (Teachable Machine's format) for a raw-pixel model folder. */
export async function writeMetadataJson(dir: string, info: ClassifierModelInfo): Promise<void> {
  const metadata = teachableMachineMetadata({ ...info, input: 'rgb-0-255' });
  await writeFileAtomic(path.join(dir, 'metadata.json'), JSON.stringify(metadata, null, 2) + '\n');
}
