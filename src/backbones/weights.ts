/**
 * Reading pretrained weights from the files people have (Keras .h5, tfjs layers exports) and writing
 * them into a built backbone by layer name, all or nothing.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type H5Wasm from 'h5wasm/node';
import { FinetuneError } from '../errors.js';
import { mobileNetV2AlphaForProjectChannels } from './mobilenet_v2.js';

/** One weight tensor of a file, keyed the way Keras names it: `layer/name`. */
export interface WeightTensor {
  /** Layer name, e.g. `block_16_project_BN`. */
  layer: string;
  /** Short weight name: kernel, bias, gamma, beta, moving_mean, moving_variance, depthwise_kernel. */
  name: string;
  shape: number[];
  values: Float32Array;
}

export interface AssignReport {
  /** Where the weights came from (a path). */
  source: string;
  /** Model weights written (all of them: a load is all or nothing). */
  matched: number;
  /** `layer/name` of file weights the model has no place for (a classifier top, a Teachable Machine head). */
  ignored: string[];
}

const EXPECTED =
  'a Keras weights file (.h5 from model.save_weights or model.save) or a TensorFlow.js layers model (a folder with model.json)';

const SHORT_NAMES = new Set(['kernel', 'bias', 'gamma', 'beta', 'moving_mean', 'moving_variance', 'depthwise_kernel', 'pointwise_kernel']);

/** `model5/Conv1/kernel:0` → `kernel`; `kernel_1` (tfjs/TF1 uniquified) → `kernel`; other names stay. */
function shortWeightName(fullName: string): string {
  const last = fullName.replace(/:\d+$/, '').split('/').pop()!;
  const base = last.replace(/_\d+$/, '');
  return !SHORT_NAMES.has(last) && SHORT_NAMES.has(base) ? base : last;
}

/** The layer part of `outer/Conv1/kernel:0` → `Conv1`; undefined when the name has no layer part. */
function layerOfWeightName(fullName: string): string | undefined {
  const parts = fullName.replace(/:\d+$/, '').split('/');
  return parts.length >= 2 ? parts[parts.length - 2] : undefined;
}

/**
 * Reads every weight tensor of a Keras 2 .h5 (weights-only, or a full model with its `model_weights`
 * group) or of a tfjs layers model (its folder or its model.json). Nested-model prefixes and `:0`
 * suffixes are stripped, so names read `layer` + `kernel` whatever saved them.
 */
export async function readWeightFile(file: string): Promise<WeightTensor[]> {
  let stat;
  try {
    stat = await fs.stat(file);
  } catch (e) {
    throw new FinetuneError(`cannot read weights: ${file} does not exist (expected ${EXPECTED})`, { cause: e });
  }
  if (stat.isDirectory()) {
    const modelJson = path.join(file, 'model.json');
    if (!(await fs.stat(modelJson).catch(() => undefined))) {
      throw new FinetuneError(`cannot read weights: the folder ${file} has no model.json (expected ${EXPECTED})`);
    }
    return readTfjsModel(modelJson);
  }
  const head = Buffer.alloc(8);
  const fh = await fs.open(file, 'r');
  try {
    await fh.read(head, 0, 8, 0);
  } finally {
    await fh.close();
  }
  if (head.equals(HDF5_SIGNATURE)) return readKerasH5(file);
  if (head.toString('latin1').trimStart().startsWith('{')) return readTfjsModel(file);
  if (head.subarray(0, 4).toString('latin1') === 'PK\x03\x04') {
    throw new FinetuneError(
      `cannot read weights from ${file}: it is a zip archive (a Keras 3 .keras file?), which finetune does not read. ` +
        `Expected ${EXPECTED}; in Keras, save the weights with model.save_weights('weights.h5') (Keras 2) or convert with tensorflowjs_converter.`,
    );
  }
  throw new FinetuneError(`cannot read weights from ${file}: not an HDF5 file nor a model.json (expected ${EXPECTED})`);
}

// ---------------------------------------------------------------------------------------------- HDF5

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

type H5Module = typeof H5Wasm;
let h5Ready: Promise<H5Module> | undefined;
/** Loads and initialises h5wasm once, with errors thrown (not printed to stderr). Loaded only when an
 * .h5 file is read: importing it costs ~0.2 CPU s, which every other command and a cached run skip. */
function initH5(): Promise<H5Module> {
  h5Ready ??= import('h5wasm/node').then(async ({ default: h5wasm }) => {
    const module = await h5wasm.ready;
    module.activate_throwing_error_handler();
    return h5wasm;
  });
  return h5Ready;
}

/** HDF5's error stack is long; its last "minor:" line says what happened ("File has been truncated"). */
function hdf5Reason(e: unknown): string {
  const text = String(e instanceof Error ? e.message : e);
  const minors = [...text.matchAll(/minor:\s*(.+)/g)].map((m) => m[1]!.trim());
  return minors.length > 0 ? minors[minors.length - 1]! : text.split('\n')[0]!;
}

type H5Group = InstanceType<H5Module['Group']>;

/** Keras splits attributes over 64 KiB into `name0`, `name1`, … (save_attributes_to_hdf5_group). */
function stringListAttr(group: H5Group, name: string): string[] | undefined {
  const attrs = group.attrs;
  const read = (key: string): string[] => {
    const v = attrs[key]!.value;
    // A layer without weights has an empty numeric array here (numpy's default float64).
    if (v === null || (ArrayBuffer.isView(v) && !(v instanceof Uint8Array))) return [];
    const list = Array.isArray(v) ? v : [v];
    return list.map((s) => (s instanceof Uint8Array ? Buffer.from(s).toString('utf8') : String(s)));
  };
  if (name in attrs) return read(name);
  if (!(`${name}0` in attrs)) return undefined;
  const out: string[] = [];
  for (let i = 0; `${name}${i}` in attrs; i++) out.push(...read(`${name}${i}`));
  return out;
}

function toFloat32(v: unknown, where: string): Float32Array {
  if (v instanceof Float32Array) return v;
  if (v instanceof Float64Array) return Float32Array.from(v);
  throw new FinetuneError(`cannot read ${where}: its data type is not float32 or float64`);
}

async function readKerasH5(file: string): Promise<WeightTensor[]> {
  const h5wasm = await initH5();
  let h5: InstanceType<H5Module['File']>;
  try {
    h5 = new h5wasm.File(file, 'r');
  } catch (e) {
    throw new FinetuneError(`cannot read weights from ${file}: the HDF5 file is damaged (${hdf5Reason(e)}); download or export it again`, {
      cause: e,
    });
  }
  try {
    // Weights-only files keep `layer_names` at the root; full-model files under `model_weights`.
    let root: H5Group = h5;
    let layerNames = stringListAttr(root, 'layer_names');
    if (!layerNames && h5.keys().includes('model_weights')) {
      root = h5.get('model_weights') as H5Group;
      layerNames = stringListAttr(root, 'layer_names');
    }
    if (!layerNames) {
      const keras3 = h5.keys().includes('layers') || h5.keys().includes('_layer_checkpoint_dependencies');
      throw new FinetuneError(
        `cannot read weights from ${file}: it is an HDF5 file but not in the Keras 2 layout (no layer_names attribute)` +
          (keras3 ? '; it looks like a Keras 3 .weights.h5, which finetune does not read' : '') +
          `. Expected ${EXPECTED}.`,
      );
    }
    const out: WeightTensor[] = [];
    for (const groupName of layerNames) {
      const group = root.get(groupName);
      if (!(group instanceof h5wasm.Group)) {
        throw new FinetuneError(`cannot read weights from ${file}: layer '${groupName}' is listed but has no group; the file is damaged`);
      }
      const weightNames = stringListAttr(group, 'weight_names') ?? [];
      // A nested model (e.g. MobileNetV2 inside a Sequential) is one group whose weights span many
      // layers: their own names (`Conv1/kernel:0`) say which. A plain layer's group name is the truth
      // (TF1 Keras could save `Conv1_1/kernel:0` for a layer named Conv1).
      const prefixes = new Set(weightNames.map(layerOfWeightName));
      const nested = prefixes.size > 1;
      for (const weightName of weightNames) {
        const ds = group.get(weightName);
        if (!(ds instanceof h5wasm.Dataset)) {
          throw new FinetuneError(`cannot read weights from ${file}: weight '${groupName}/${weightName}' is listed but missing; the file is damaged`);
        }
        const where = `${file}: /${groupName}/${weightName}`;
        out.push({
          layer: nested ? (layerOfWeightName(weightName) ?? groupName) : groupName,
          name: shortWeightName(weightName),
          shape: [...(ds.shape ?? [])],
          values: toFloat32(ds.value, where),
        });
      }
    }
    return out;
  } catch (e) {
    if (e instanceof FinetuneError) throw e;
    throw new FinetuneError(`cannot read weights from ${file}: the HDF5 file is damaged (${hdf5Reason(e)}); download or export it again`, {
      cause: e,
    });
  } finally {
    h5.close();
  }
}

// ---------------------------------------------------------------------------------------------- tfjs

interface ModelJson {
  weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
}

async function readTfjsModel(modelJsonPath: string): Promise<WeightTensor[]> {
  let json: ModelJson;
  try {
    json = JSON.parse(await fs.readFile(modelJsonPath, 'utf8')) as ModelJson;
  } catch (e) {
    throw new FinetuneError(`cannot read weights from ${modelJsonPath}: not valid JSON (expected ${EXPECTED})`, { cause: e });
  }
  if (!Array.isArray(json.weightsManifest)) {
    throw new FinetuneError(`cannot read weights from ${modelJsonPath}: it has no weightsManifest, so it is not a tfjs model.json (expected ${EXPECTED})`);
  }
  const dir = path.dirname(modelJsonPath);
  const specs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const shard of group.paths) {
      const shardPath = path.join(dir, shard);
      const bytes = await fs.readFile(shardPath).catch((e: unknown) => {
        throw new FinetuneError(`cannot read weights: ${shardPath}, listed in ${modelJsonPath}, is missing or unreadable`, { cause: e });
      });
      buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
    }
  }
  let named: tf.NamedTensorMap;
  try {
    // decodeWeights also dequantizes (uint8/uint16/float16 exports) to float32.
    named = tf.io.decodeWeights(buffers, specs);
  } catch (e) {
    throw new FinetuneError(
      `cannot read weights from ${modelJsonPath}: its weight files do not match its manifest (truncated or from another export?): ${(e as Error).message}`,
      { cause: e },
    );
  }
  try {
    // data(), not dataSync(): WebGPU can't read back synchronously in Node.
    return await Promise.all(
      specs.map(async (spec) => {
        const t = named[spec.name]!;
        return {
          layer: layerOfWeightName(spec.name) ?? '',
          name: shortWeightName(spec.name),
          shape: [...t.shape],
          // A copy: backends may hand out their own buffer, which dispose() recycles.
          values: Float32Array.from(await t.data()),
        };
      }),
    );
  } finally {
    tf.dispose(named);
  }
}

// ---------------------------------------------------------------------------------------------- assign

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/** Leaf layers, looking inside nested models (a backbone wrapped in a classifier). */
function leafLayers(model: tf.LayersModel | tf.layers.Layer): tf.layers.Layer[] {
  const inner = (model as { layers?: tf.layers.Layer[] }).layers;
  return inner ? inner.flatMap(leafLayers) : [model as tf.layers.Layer];
}

interface Problem {
  key: string;
  expected: number[];
  found?: number[];
}

/**
 * Writes `weights` into `model`, matching each model weight by layer name and short weight name.
 * All or nothing: if any model weight is missing from the file or has another shape, throws a
 * FinetuneError (saying which, and what to do) before changing anything. File weights for layers the
 * model lacks are reported as `ignored`.
 */
export function assignWeights(model: tf.LayersModel, weights: WeightTensor[], source: string): AssignReport {
  const byLayer = new Map<string, WeightTensor[]>();
  for (const w of weights) {
    const list = byLayer.get(w.layer) ?? [];
    list.push(w);
    byLayer.set(w.layer, list);
  }

  const used = new Set<WeightTensor>();
  const plan: { layer: tf.layers.Layer; values: WeightTensor[] }[] = [];
  const problems: Problem[] = [];
  let expectedCount = 0;
  let matched = 0;
  let layersFound = 0;
  let weightedLayers = 0;

  for (const layer of leafLayers(model)) {
    const vars = layer.weights;
    if (vars.length === 0) continue;
    weightedLayers++;
    expectedCount += vars.length;
    const candidates = byLayer.get(layer.name) ?? [];
    if (candidates.length > 0) layersFound++;
    // tfjs may suffix `.name` with _1 for duplicates; originalName keeps the name it was built with.
    const wanted = vars.map((v) => ({ short: shortWeightName(v.originalName), shape: v.shape.map((d) => d ?? -1) }));
    let found = wanted.map(({ short }) => candidates.find((c) => c.name === short && !used.has(c)));
    // Legacy Keras files name weights e.g. `block1_conv1_W_1:0`; Keras itself loads a layer's weights
    // by position, so do the same when the names say nothing but the count agrees.
    if (found.some((f) => f === undefined) && candidates.length === vars.length && candidates.every((c) => !SHORT_NAMES.has(c.name))) {
      found = [...candidates];
    }
    const values: WeightTensor[] = [];
    wanted.forEach(({ short, shape }, i) => {
      const f = found[i];
      const key = `${layer.name}/${short}`;
      if (!f) problems.push({ key, expected: shape });
      else if (!sameShape(f.shape, shape)) problems.push({ key, expected: shape, found: f.shape });
      else {
        matched++;
        values.push(f);
      }
      if (f) used.add(f);
    });
    plan.push({ layer, values });
  }

  if (problems.length > 0) {
    const shown = problems.slice(0, 5).map(
      (p) => `  ${p.key}: model expects ${fmt(p.expected)}, ${p.found ? `file has ${fmt(p.found)}` : 'file has no such weight'}`,
    );
    const more = problems.length > shown.length ? [`  … and ${problems.length - shown.length} more`] : [];
    throw new FinetuneError(
      [
        `cannot load weights from ${source} into ${model.name}: ${matched} of ${expectedCount} weights match, ${problems.length} do not:`,
        ...shown,
        ...more,
        hint(weights, layersFound, weightedLayers),
      ].join('\n'),
    );
  }

  tf.tidy(() => {
    for (const { layer, values } of plan) layer.setWeights(values.map((w) => tf.tensor(w.values, w.shape, 'float32')));
  });
  const ignored = weights.filter((w) => !used.has(w)).map((w) => `${w.layer}/${w.name}`);
  return { source, matched, ignored };
}

/** What the user should do about a mismatch, as precisely as the file allows. */
function hint(weights: WeightTensor[], layersFound: number, weightedLayers: number): string {
  const project = weights.find((w) => w.layer === 'block_16_project' && w.name === 'kernel');
  const alpha = project ? mobileNetV2AlphaForProjectChannels(project.shape[3]!) : undefined;
  if (alpha !== undefined && layersFound === weightedLayers) {
    const a = Number.isInteger(alpha) ? alpha.toFixed(1) : String(alpha);
    return `These weights look like MobileNetV2 alpha=${a}; pass --alpha ${a} (or use weights saved from a model with the same settings).`;
  }
  if (layersFound < weightedLayers / 2) {
    const sample = [...new Set(weights.map((w) => w.layer))].slice(0, 3).join(', ');
    return (
      `This file holds weights of another architecture (${layersFound} of ${weightedLayers} layers found by name; ` +
      `its layers start ${sample || '(none)'}): pick the --backbone it was saved from, or pass a file saved from this backbone.`
    );
  }
  return 'The file was saved from a differently configured model: use the same --backbone and --alpha as when it was saved.';
}

/** readWeightFile + assignWeights. */
export async function loadBackboneWeights(model: tf.LayersModel, file: string): Promise<AssignReport> {
  return assignWeights(model, await readWeightFile(file), file);
}

/**
 * Draws every kernel of `model` (convolution, depthwise and dense) again from the Glorot-uniform
 * distribution the builders use, seeded from `seed`, so that a run from random weights
 * (`--weights none`) is as reproducible as the rest of a run. Biases and batch norms start at
 * constants already.
 */
export function seedRandomWeights(model: tf.LayersModel, seed: number): void {
  model.layers.forEach((layer, i) => {
    for (const weight of layer.weights) {
      // originalName: `name` gets a _1, _2 … suffix when a second model is built.
      if (!/(^|_)kernel$/.test(weight.originalName.split('/').pop()!)) continue;
      const value = tf.initializers.glorotUniform({ seed: seed * 1009 + i }).apply(weight.shape);
      weight.write(value);
      value.dispose();
    }
  });
}
