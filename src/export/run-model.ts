/**
 * What every export format starts from: a finished run's config and its model as ModelArtifacts
 * that take raw RGB pixels (0–255). Format-2 run folders hold such a model already; format-1
 * folders (preprocessing outside the model) get the `preprocess` layer added here, so every export
 * takes raw pixels whatever finetune trained it.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { randomBytes } from 'node:crypto';
import { FinetuneError } from '../errors.js';
import { readModelArtifacts } from '../io/model-io.js';
import { preprocessingAffine, withPreprocessingLayer } from '../io/preprocess-layer.js';
import { locateModel, readModelConfig, takesRawPixels, type ModelConfig, type ModelLocation } from '../predict/classifier.js';

export interface RunModel {
  location: ModelLocation;
  config: ModelConfig;
  /** The model, taking raw RGB values 0–255 (float32 [batch, size, size, 3]), giving class probabilities. */
  artifacts: tf.io.ModelArtifacts;
}

/** Reads a run folder (or its model/ folder) for export. Throws a FinetuneError when it is not a finetune run. */
export async function readRunModel(runDir: string): Promise<RunModel> {
  const location = await locateModel(runDir);
  const config = await readModelConfig(location.configFile);
  const stored = await readModelArtifacts(location.modelDir);
  const artifacts = takesRawPixels(config) ? stored : withPreprocessingLayer(stored, preprocessingAffine(config.input.preprocessing));
  return { location, config, artifacts };
}

/** A temporary name beside `target` (same folder, so the final rename is atomic). */
export function temporaryOutput(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Writes an export atomically: `write` fills a temporary path beside `out` (a file or a folder, as
 * it likes); when it returns, the result is renamed to `out`, replacing what was there (the CLI has
 * refused an existing `out` already unless --overwrite). On failure nothing is left behind.
 */
export async function writeOutputAtomically<T>(out: string, write: (tmp: string) => Promise<T>): Promise<T> {
  await fs.mkdir(path.dirname(out), { recursive: true });
  const tmp = temporaryOutput(out);
  let result: T;
  try {
    result = await write(tmp);
  } catch (error) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw error;
  }
  const old = await fs.stat(out).then(
    (s) => s,
    () => undefined,
  );
  if (old?.isDirectory()) {
    // rename() cannot replace a folder: move the old one aside first, then remove it.
    const aside = temporaryOutput(out);
    await fs.rename(out, aside);
    try {
      await fs.rename(tmp, out);
    } catch (error) {
      await fs.rename(aside, out).catch(() => undefined);
      await fs.rm(tmp, { recursive: true, force: true });
      throw error;
    }
    await fs.rm(aside, { recursive: true, force: true });
  } else {
    try {
      await fs.rename(tmp, out);
    } catch (error) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw new FinetuneError(`cannot write ${out}: ${(error as Error).message}`, { cause: error });
    }
  }
  return result;
}
