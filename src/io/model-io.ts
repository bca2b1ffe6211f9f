import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FinetuneError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

/**
 * Saves a LayersModel as a tfjs layers model folder (model.json + one weights file), loadable by
 * `tf.loadLayersModel('file://…/model.json')` with tfjs-node or by `loadModelDir` here.
 */
export async function saveModelDir(model: tf.LayersModel, dir: string): Promise<void> {
  await writeArtifactsDir(await modelArtifacts(model), dir);
}

/** A model's topology and weights, as `model.save` would write them. */
export async function modelArtifacts(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts;
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  if (saved === undefined) throw new Error('model.save did not hand over its artifacts');
  return saved;
}

/**
 * Writes ModelArtifacts as a tfjs layers model folder.
 *
 * Crash-safe without a directory swap: the weights file is named by its content hash and written
 * first; model.json is then replaced atomically; only then are older weights files removed. At
 * every instant model.json names a complete weights file.
 */
export async function writeArtifactsDir(artifacts: tf.io.ModelArtifacts, dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const weightData = concatWeightData(artifacts.weightData);
  const hash = createHash('sha256').update(weightData).digest('hex').slice(0, 16);
  const weightsFile = `weights-${hash}.bin`;
  await writeFileAtomic(path.join(dir, weightsFile), weightData);
  const modelJson = {
    format: 'layers-model',
    generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
    convertedBy: 'finetune',
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: [weightsFile], weights: artifacts.weightSpecs ?? [] }],
  };
  await writeFileAtomic(path.join(dir, 'model.json'), JSON.stringify(modelJson));
  for (const name of await fs.readdir(dir)) {
    if (/^weights-[0-9a-f]+\.bin$/.test(name) && name !== weightsFile) {
      await fs.rm(path.join(dir, name), { force: true });
    }
  }
}

/** The weights of ModelArtifacts as one byte array (tfjs may hand them over in several buffers). */
export function concatWeightData(data: tf.io.WeightData | undefined): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  const buffers = Array.isArray(data) ? data : [data];
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const b of buffers) {
    out.set(new Uint8Array(b), offset);
    offset += b.byteLength;
  }
  return out;
}

/** Reads a tfjs layers model folder (or its model.json) into ModelArtifacts. */
export async function readModelArtifacts(dirOrJson: string): Promise<tf.io.ModelArtifacts> {
  const jsonPath = dirOrJson.endsWith('.json') ? dirOrJson : path.join(dirOrJson, 'model.json');
  let json: {
    modelTopology?: object;
    weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  };
  try {
    json = JSON.parse(await fs.readFile(jsonPath, 'utf8'));
  } catch (error) {
    throw new FinetuneError(`cannot read the model at ${jsonPath}: ${(error as Error).message}`, { cause: error });
  }
  if (json.modelTopology === undefined || json.weightsManifest === undefined) {
    throw new FinetuneError(`${jsonPath} is not a tfjs layers model (it has no modelTopology or weightsManifest).`);
  }
  const base = path.dirname(jsonPath);
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const parts: Uint8Array[] = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) {
      try {
        parts.push(new Uint8Array(await fs.readFile(path.join(base, p))));
      } catch (error) {
        throw new FinetuneError(`the model at ${jsonPath} is incomplete: cannot read ${p} (${(error as Error).message}).`, {
          cause: error,
        });
      }
    }
  }
  const weightData = concatWeightData(parts.map((p) => p.buffer.slice(p.byteOffset, p.byteOffset + p.byteLength) as ArrayBuffer));
  return { modelTopology: json.modelTopology, weightSpecs, weightData: weightData.buffer as ArrayBuffer };
}

/** Loads a model folder written by `saveModelDir` (or any tfjs layers model) without tfjs-node's file:// handler. */
export async function loadModelDir(dirOrJson: string): Promise<tf.LayersModel> {
  const artifacts = await readModelArtifacts(dirOrJson);
  return tf.loadLayersModel({ load: async () => artifacts });
}
