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
import { RESIZE_MODES, type ResizeMode } from '../data/types.js';
import { fasterBackendInstalled, initEngine, wasmThreads, type BackendRequest, type EngineInfo } from '../engine/backend.js';
import { FusedInference } from '../engine/fused-inference.js';
import { FinetuneError, UsageError } from '../errors.js';
import { loadModelDir } from '../io/model-io.js';
import { PREPROCESS_LAYER } from '../io/preprocess-layer.js';
import { silentReporter, type Reporter } from '../reporter.js';
import { OnnxModel, ORT_INSTALL, ORT_PACKAGE, probeOnnxRuntime, type InferenceEngineName, type InferenceEngineRequest } from './onnx-engine.js';

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
  /** tfjs compute backend (default 'auto'). Naming one (not 'auto') means engine tfjs. */
  backend?: BackendRequest;
  /**
   * What runs the model (default 'auto'): 'onnx' ONNX Runtime (onnxruntime-node, which must be
   * installed), 'tfjs' tfjs on `backend`, 'auto' ONNX Runtime where it is installed and tfjs would
   * run on WebAssembly (no GPU through WebGPU, no native TensorFlow), else tfjs.
   */
  engine?: InferenceEngineRequest;
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
  if (!RESIZE_MODES.includes(input.resize as ResizeMode)) throw bad('has no valid "input.resize" (stretch, crop or pad)');
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

/** What runs a Classifier's model, and why that one. */
export interface InferenceInfo {
  engine: InferenceEngineName;
  /** What it is, e.g. "onnxruntime-node 1.16.3 (CPU, 2 threads; converted in 0.4 s)" or "tfjs wasm, SIMD, 2 threads". */
  detail: string;
  /** Why this engine, e.g. "--engine onnx", "auto: onnxruntime-node is installed", or why auto fell back to tfjs. */
  reason: string;
}

/** The model, loaded for one engine or the other. */
export type ClassifierRuntime = { engine: 'tfjs'; model: tf.LayersModel; backend: EngineInfo } | { engine: 'onnx'; model: OnnxModel };

/**
 * A loaded model and its recipe. Create with `loadClassifier`; call `dispose()` when done (it frees
 * the model's weights).
 */
export class Classifier {
  /** The reusable input buffer: one batch of model inputs (raw or preprocessed pixels, as the format says). */
  private buffer = new Float32Array(0);
  /** tfjs only; undefined where the model can't be planned: it then runs through predict(). */
  private readonly fused: FusedInference | undefined;

  constructor(
    private readonly runtime: ClassifierRuntime,
    readonly config: ModelConfig,
    readonly location: ModelLocation,
    readonly inference: InferenceInfo,
  ) {
    this.fused = runtime.engine === 'tfjs' ? FusedInference.forModel(runtime.model)?.prepare() : undefined;
  }

  /** The tfjs model (engine tfjs; undefined on ONNX Runtime). */
  get model(): tf.LayersModel | undefined {
    return this.runtime.engine === 'tfjs' ? this.runtime.model : undefined;
  }

  /** The tfjs backend (engine tfjs; undefined on ONNX Runtime). */
  get engine(): EngineInfo | undefined {
    return this.runtime.engine === 'tfjs' ? this.runtime.backend : undefined;
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

  /**
   * True when the model takes raw pixels: format 2 on, and every model on ONNX Runtime (the
   * conversion adds the preprocessing to format-1 models). Else it gets preprocessed input.
   */
  get rawInput(): boolean {
    return this.runtime.engine === 'onnx' || takesRawPixels(this.config);
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
    if (this.runtime.engine === 'onnx') return this.predictOnnx(this.runtime.model, n, options.tta ?? false);
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

  /** ONNX Runtime on the first `n` images in the buffer; with `tta`, averaged with their mirror images. */
  private async predictOnnx(model: OnnxModel, n: number, tta: boolean): Promise<Float32Array> {
    const input = this.buffer.subarray(0, n * this.size * this.size * 3);
    const probs = await model.run(input, n);
    if (!tta) return probs;
    const mirrored = await model.run(mirrorImages(input, n, this.size), n);
    for (let i = 0; i < probs.length; i++) probs[i] = (probs[i]! + mirrored[i]!) / 2;
    return probs;
  }

  /** The model's output, with batch norms folded into convolutions where the model allows it. */
  private forward(x: tf.Tensor): tf.Tensor {
    if (this.runtime.engine !== 'tfjs') throw new Error('forward() is the tfjs path');
    return this.fused ? this.fused.run(x) : (this.runtime.model.predict(x) as tf.Tensor);
  }

  /** Frees the model's weights. */
  dispose(): void {
    this.fused?.dispose();
    this.runtime.model.dispose();
  }
}

/** `n` NHWC images of `size`², each mirrored left–right (as tf.reverse on the width axis does). */
function mirrorImages(images: Float32Array, n: number, size: number): Float32Array {
  const out = new Float32Array(images.length);
  const row = size * 3;
  for (let r = 0; r < n * size; r++) {
    const base = r * row;
    for (let x = 0; x < size; x++) {
      const from = base + x * 3;
      const to = base + (size - 1 - x) * 3;
      out[to] = images[from]!;
      out[to + 1] = images[from + 1]!;
      out[to + 2] = images[from + 2]!;
    }
  }
  return out;
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
  const choice = await chooseEngine(options.engine ?? 'auto', options.backend ?? 'auto');
  if (choice.engine === 'onnx') {
    try {
      const model = await OnnxModel.load(choice.ort, location, config, wasmThreads());
      const from = model.source.file
        ? `from ${path.relative(location.runDir, model.source.file)}`
        : `converted in ${model.source.convertSeconds!.toFixed(1)} s`;
      const detail = `${ORT_PACKAGE} ${choice.version} (CPU, ${model.threads} thread${model.threads === 1 ? '' : 's'}; ${from})`;
      return new Classifier({ engine: 'onnx', model }, config, location, { engine: 'onnx', detail, reason: choice.reason });
    } catch (error) {
      if (options.engine === 'onnx' || !(error instanceof FinetuneError)) throw error;
      choice.reason = `ONNX Runtime cannot run this model (${error.message}); using tfjs`;
      reporter.warn(choice.reason);
    }
  }
  const backend = (choice.engine === 'tfjs' ? choice.backend : undefined) ?? (await initEngine(options.backend ?? 'auto'));
  const model = await loadTfjsModel(location, config);
  return new Classifier({ engine: 'tfjs', model, backend }, config, location, { engine: 'tfjs', detail: `tfjs ${backend.detail}`, reason: choice.reason });
}

type EngineChoice =
  | { engine: 'onnx'; reason: string; ort: Parameters<typeof OnnxModel.load>[0]; version: string }
  | { engine: 'tfjs'; reason: string; backend?: EngineInfo };

/**
 * Which engine runs the model. auto: ONNX Runtime where onnxruntime-node loads and tfjs would
 * run on WASM, which ONNX Runtime beats 1.5–2.2× (README); tfjs where tfjs gets a GPU or native
 * TensorFlow (2.5–3× WASM even on a CPU; not measured against ONNX Runtime), or when --backend
 * names a tfjs backend.
 */
async function chooseEngine(request: InferenceEngineRequest, backend: BackendRequest): Promise<EngineChoice> {
  if (request === 'tfjs') return { engine: 'tfjs', reason: '--engine tfjs' };
  if (request === 'onnx' && backend !== 'auto') {
    throw new UsageError(`--backend ${backend} picks a tfjs backend; it does not go with --engine onnx (ONNX Runtime runs on the CPU). Drop one of them.`);
  }
  if (request === 'auto' && backend !== 'auto') return { engine: 'tfjs', reason: `--backend ${backend} asks for tfjs` };
  const ort = await probeOnnxRuntime();
  if (!ort.available) {
    if (request === 'onnx') throw new UsageError(`--engine onnx needs ONNX Runtime: ${ort.reason.replace(` (${ORT_INSTALL})`, '')}. Install it with \`${ORT_INSTALL}\`, or use --engine tfjs.`);
    return { engine: 'tfjs', reason: `auto: ${ort.reason}` };
  }
  if (request === 'onnx') return { engine: 'onnx', reason: '--engine onnx', ort: ort.ort, version: ort.version };
  // Only where a GPU or native TensorFlow may be there is it worth starting tfjs to see what it gets.
  if (fasterBackendInstalled() !== undefined) {
    const started = await initEngine('auto');
    if (started.backend === 'tensorflow' || started.backend === 'webgpu') {
      return { engine: 'tfjs', reason: `auto: tfjs has ${started.detail}`, backend: started };
    }
  }
  return { engine: 'onnx', reason: `auto: ${ORT_PACKAGE} is installed`, ort: ort.ort, version: ort.version };
}

/** The tfjs model, checked against finetune.json. */
async function loadTfjsModel(location: ModelLocation, config: ModelConfig): Promise<tf.LayersModel> {
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
  return model;
}
