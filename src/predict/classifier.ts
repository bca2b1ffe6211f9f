/**
 * A trained model folder, ready to label images: the tfjs model plus what finetune.json says about
 * its input (size, resize mode, preprocessing) and its classes, so prediction always repeats what
 * training did.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { preprocessInto, type Preprocessing } from '../backbones/preprocess.js';
import { decodeImage } from '../data/decode.js';
import type { ResizeMode } from '../data/types.js';
import { initEngine, type BackendRequest, type EngineInfo } from '../engine/backend.js';
import { FusedInference } from '../engine/fused-inference.js';
import { FinetuneError } from '../errors.js';
import { loadModelDir } from '../io/model-io.js';
import { PREPROCESS_LAYER } from '../io/preprocess-layer.js';
import { silentReporter, type Reporter } from '../reporter.js';

/**
 * The finetune.json format this version writes. Format 2: model/ takes raw RGB values (0–255) and
 * holds the preprocessing as its first layer (`preprocess`). Format 1: model/ takes preprocessed
 * input; prediction still preprocesses outside for those folders.
 */
export const MODEL_FORMAT = 'finetune-model/2';
const FORMAT_VERSION = 2;
/** Every format this version reads. */
const READABLE_FORMAT_VERSIONS = [1, 2];

/** The part of finetune.json that prediction needs (the file holds more: training options, data counts, …). */
export interface ModelConfig {
  format: string;
  classes: string[];
  input: { size: number; channels: 3; resize: ResizeMode; preprocessing: Preprocessing };
  backbone?: { name?: string; alpha?: number; weights?: string };
  versions?: { finetune?: string; tfjs?: string; [name: string]: string | undefined };
  /** Present while training is still running (or when it stopped early): the epoch last saved. */
  checkpoint?: { stage: number; epoch: number };
  [key: string]: unknown;
}

/** Where a model's files are. */
export interface ModelLocation {
  /** The run folder, holding finetune.json. */
  runDir: string;
  /** The tfjs layers model folder (model.json + weights). */
  modelDir: string;
  configFile: string;
}

export interface LoadClassifierOptions {
  /** Compute backend (default 'auto'). */
  backend?: BackendRequest;
  /** Where warnings go (e.g. "this run did not finish"). Default: nowhere. */
  reporter?: Reporter;
}

const exists = (p: string) =>
  fs.stat(p).then(
    (s) => s,
    () => undefined,
  );

/**
 * Finds finetune.json and model/ from what a user passes: the run folder (the --out of training),
 * its model/ folder, or either JSON file itself.
 */
export async function locateModel(input: string): Promise<ModelLocation> {
  let dir = path.resolve(input);
  const stat = await exists(dir);
  if (stat === undefined) {
    throw new FinetuneError(`model folder not found: ${dir}. Pass the folder a training run wrote (the --out of \`finetune <data>\`).`);
  }
  if (stat.isFile()) {
    const base = path.basename(dir);
    if (base !== 'finetune.json' && base !== 'model.json') {
      throw new FinetuneError(`${dir} is a file: pass the model folder (the one holding finetune.json and model/).`);
    }
    dir = path.dirname(dir);
  }
  const here = path.join(dir, 'finetune.json');
  if (await exists(here)) return { runDir: dir, modelDir: path.join(dir, 'model'), configFile: here };
  const up = path.join(path.dirname(dir), 'finetune.json');
  if ((await exists(path.join(dir, 'model.json'))) && (await exists(up))) {
    return { runDir: path.dirname(dir), modelDir: dir, configFile: up };
  }
  if (await exists(path.join(dir, 'model.json'))) {
    throw new FinetuneError(
      `${dir} holds a tfjs model but no finetune.json (neither here nor one level up). finetune needs the finetune.json ` +
        `that training writes beside model/: it records the classes and the preprocessing. Copy the whole run folder.`,
    );
  }
  throw new FinetuneError(
    `${dir} is not a finetune model folder: it has no finetune.json. Pass the folder a training run wrote ` +
      `(the --out of \`finetune <data>\`, holding finetune.json and model/).`,
  );
}

/**
 * Reads and checks finetune.json. Throws a FinetuneError naming the file and what is wrong with it
 * (unreadable, from a newer finetune, a field missing or out of range).
 */
export async function readModelConfig(configFile: string): Promise<ModelConfig> {
  let json: unknown;
  try {
    json = JSON.parse(await fs.readFile(configFile, 'utf8'));
  } catch (error) {
    throw new FinetuneError(`cannot read ${configFile}: ${(error as Error).message}`, { cause: error });
  }
  return checkModelConfig(json, configFile);
}

/** Validates a parsed finetune.json (exported for tests and for tools that build one). */
export function checkModelConfig(json: unknown, where = 'finetune.json'): ModelConfig {
  const bad = (what: string) => new FinetuneError(`${where} ${what}. Was it edited by hand? Retrain, or restore it from the training run.`);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('does not hold a JSON object');
  const c = json as Record<string, unknown>;
  const format = c.format;
  const match = typeof format === 'string' ? /^finetune-model\/(\d+)$/.exec(format) : null;
  if (match === null) {
    throw new FinetuneError(`${where} is not a finetune model description: its "format" is ${JSON.stringify(format)}, expected "${MODEL_FORMAT}".`);
  }
  if (!READABLE_FORMAT_VERSIONS.includes(Number(match[1]))) {
    const newer = Number(match[1]) > FORMAT_VERSION;
    throw new FinetuneError(
      `${where} has format ${format}; this finetune reads ${READABLE_FORMAT_VERSIONS.map((v) => `finetune-model/${v}`).join(' and ')}. ` +
        (newer ? 'The model comes from a newer finetune: upgrade finetune to use it.' : 'Retrain the model with this finetune.'),
    );
  }
  const classes = c.classes;
  if (!Array.isArray(classes) || classes.length < 2 || !classes.every((x) => typeof x === 'string' && x !== '')) {
    throw bad('has no valid "classes" (a list of at least 2 class names)');
  }
  if (new Set(classes).size !== classes.length) throw bad('lists a class twice in "classes"');
  const input = c.input as Record<string, unknown> | undefined;
  if (typeof input !== 'object' || input === null) throw bad('has no "input" section');
  if (!Number.isInteger(input.size) || (input.size as number) < 1 || (input.size as number) > 4096) throw bad('has no valid "input.size"');
  if (input.channels !== 3) throw bad(`has "input.channels" ${JSON.stringify(input.channels)}; finetune models take 3 (RGB)`);
  if (!['stretch', 'crop', 'pad'].includes(input.resize as string)) throw bad('has no valid "input.resize" (stretch, crop or pad)');
  const p = input.preprocessing as Record<string, unknown> | undefined;
  const okMean = Array.isArray(p?.mean) && p.mean.length === 3 && p.mean.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (!p || !okMean || typeof p.scale !== 'number' || !Number.isFinite(p.scale) || !['rgb', 'bgr'].includes(p.channelOrder as string)) {
    throw bad('has no valid "input.preprocessing" (mean: 3 numbers, scale: a number, channelOrder: rgb or bgr)');
  }
  return json as ModelConfig;
}

/** The version number in a checked config's format ('finetune-model/2' → 2). */
export function modelFormatVersion(config: Pick<ModelConfig, 'format'>): number {
  return Number(config.format.split('/')[1]);
}

/** True when the config's model takes raw pixels (format 2 on): its preprocessing is its first layer. */
export function takesRawPixels(config: Pick<ModelConfig, 'format'>): boolean {
  return modelFormatVersion(config) >= 2;
}

/**
 * A loaded model and its recipe. Create with `loadClassifier`; call `dispose()` when done (it frees
 * the model's weights).
 */
export class Classifier {
  /** The reusable input buffer: one batch of model inputs (raw or preprocessed pixels, as the format says). */
  private buffer = new Float32Array(0);
  /** Undefined where the model can't be planned; it then runs through predict(). */
  private readonly inference: FusedInference | undefined;

  constructor(
    readonly model: tf.LayersModel,
    readonly config: ModelConfig,
    readonly location: ModelLocation,
    readonly engine: EngineInfo,
  ) {
    this.inference = FusedInference.forModel(model)?.prepare();
  }

  get classes(): readonly string[] {
    return this.config.classes;
  }

  get size(): number {
    return this.config.input.size;
  }

  get resize(): ResizeMode {
    return this.config.input.resize;
  }

  get preprocessing(): Preprocessing {
    return this.config.input.preprocessing;
  }

  /** True when the model takes raw pixels (format 2 on); format-1 models get preprocessed input. */
  get rawInput(): boolean {
    return takesRawPixels(this.config);
  }

  /** Decodes a file the way training did. Throws an Error whose message is a short reason. */
  decode(file: string): Promise<Uint8Array> {
    return decodeImage(file, { size: this.size, resize: this.resize });
  }

  /**
   * Class probabilities for decoded images (`size × size × 3` RGB bytes each): N × K, row-major.
   * With `tta`, the average of the image's and its horizontal mirror's predictions.
   * Leaves no tensors behind.
   */
  async predictPixels(images: readonly Uint8Array[], options: { tta?: boolean } = {}): Promise<Float32Array> {
    const n = images.length;
    const k = this.classes.length;
    if (n === 0) return new Float32Array(0);
    const s = this.size;
    const per = s * s * 3;
    if (this.buffer.length < n * per) this.buffer = new Float32Array(n * per);
    images.forEach((pixels, i) => {
      if (pixels.length !== per) throw new RangeError(`predictPixels: image ${i} has ${pixels.length} bytes, expected ${s}×${s}×3 = ${per}`);
      if (this.rawInput) this.buffer.set(pixels, i * per);
      else preprocessInto(pixels, this.preprocessing, this.buffer, i * per);
    });
    const probs = tf.tidy(() => {
      const x = tf.tensor4d(this.buffer.subarray(0, n * per), [n, s, s, 3]);
      const p = this.forward(x);
      if (!options.tta) return p;
      // Axis 2 of NHWC is the width: reversing it mirrors each image left–right.
      const mirrored = this.forward(tf.reverse(x, 2));
      return tf.div(tf.add(p, mirrored), 2);
    });
    try {
      // data(), not dataSync(): WebGPU can't read back synchronously in Node.
      const out = (await probs.data()) as Float32Array;
      if (out.length !== n * k) throw new FinetuneError(`the model gave ${out.length / n} outputs per image, but finetune.json lists ${k} classes.`);
      return out;
    } finally {
      probs.dispose();
    }
  }

  /** The model's output, with batch norms folded into convolutions where the model allows it. */
  private forward(x: tf.Tensor): tf.Tensor {
    return this.inference ? this.inference.run(x) : (this.model.predict(x) as tf.Tensor);
  }

  /** Frees the model's weights. */
  dispose(): void {
    this.inference?.dispose();
    this.model.dispose();
  }
}

/**
 * Format 2 models start with the `preprocess` layer and format 1 models have none: a model from one
 * with the finetune.json of the other would be fed the wrong values and answer wrongly, silently.
 */
function preprocessingProblem(model: tf.LayersModel, config: ModelConfig): string | undefined {
  const hasLayer = model.layers.some((l) => l.name === PREPROCESS_LAYER);
  if (takesRawPixels(config) && !hasLayer) {
    return `finetune.json has format ${config.format} (the model takes raw pixels), but the model has no '${PREPROCESS_LAYER}' layer`;
  }
  if (!takesRawPixels(config) && hasLayer) {
    return `finetune.json has format ${config.format} (the model takes preprocessed pixels), but the model has a '${PREPROCESS_LAYER}' layer`;
  }
  return undefined;
}

/**
 * Loads a model folder written by `finetune <data>` (the run folder, or its model/ folder), checks
 * that finetune.json and the model agree, and starts the compute backend.
 */
export async function loadClassifier(modelDir: string, options: LoadClassifierOptions = {}): Promise<Classifier> {
  const reporter = options.reporter ?? silentReporter;
  const location = await locateModel(modelDir);
  const config = await readModelConfig(location.configFile);
  if (!(await exists(path.join(location.modelDir, 'model.json')))) {
    throw new FinetuneError(
      `${path.join(location.modelDir, 'model.json')} is missing: the model folder is incomplete. ` +
        `Copy the whole run folder (finetune.json and model/ with model.json and its weights-*.bin).`,
    );
  }
  if (config.checkpoint !== undefined && config.results === undefined) {
    reporter.warn(
      `${location.configFile} describes a checkpoint (stage ${config.checkpoint.stage}, epoch ${config.checkpoint.epoch}): ` +
        `that training run has not finished (or was stopped); using the best weights it saved.`,
    );
  }
  const trainedWith = config.versions?.tfjs;
  if (trainedWith !== undefined && trainedWith.split('.')[0] !== tf.version.tfjs.split('.')[0]) {
    reporter.warn(`the model was trained with tfjs ${trainedWith}, this is tfjs ${tf.version.tfjs}; predictions may differ slightly.`);
  }
  const engine = await initEngine(options.backend ?? 'auto');
  const model = await loadModelDir(location.modelDir);
  const inShape = model.inputs[0]?.shape ?? [];
  const outShape = model.outputs[0]?.shape ?? [];
  const { size } = config.input;
  const k = config.classes.length;
  const problem =
    model.inputs.length !== 1 || model.outputs.length !== 1
      ? `it has ${model.inputs.length} inputs and ${model.outputs.length} outputs, expected 1 and 1`
      : inShape.length !== 4 || inShape[1] !== size || inShape[2] !== size || inShape[3] !== 3
        ? `its input shape is [${inShape.join(', ')}], but finetune.json says ${size}×${size}×3`
        : outShape.length !== 2 || outShape[1] !== k
          ? `its output shape is [${outShape.join(', ')}], but finetune.json lists ${k} classes`
          : preprocessingProblem(model, config);
  if (problem !== undefined) {
    model.dispose();
    throw new FinetuneError(
      `the model in ${location.modelDir} does not match ${location.configFile}: ${problem}. ` +
        `Were files from two runs mixed? Copy model/ and finetune.json from the same run.`,
    );
  }
  return new Classifier(model, config, location, engine);
}
