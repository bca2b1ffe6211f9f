/**
 * ONNX Runtime (`onnxruntime-node`) as the inference engine of `predict` and `evaluate`: the run's
 * model converted to ONNX (the same converter as `finetune export --format onnx`), run on the CPU.
 * `finetune predict` labels 1.5–2.2× faster with it than on tfjs WebAssembly, same cores (README, "Labelling images").
 *
 * onnxruntime-node is optional: finetune works without it. It is imported only here, only when
 * asked for, and its types stay private, so nothing else depends on it being installed.
 */
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { FinetuneError } from '../errors.js';
import { ONNX_METADATA_KEYS, runModelToOnnx } from '../export/onnx.js';
import { decodeOnnxModel } from '../export/onnx/builder.js';
import { ONNX_INPUT, ONNX_OUTPUT } from '../export/onnx/convert.js';
import { readRunModel } from '../export/run-model.js';
import { functionalConfig, PREPROCESS_LAYER } from '../io/preprocess-layer.js';
import { finetuneVersion } from '../io/teachable-machine.js';
import type { ModelConfig, ModelLocation } from './classifier.js';

/** `--engine`: what runs the model. auto: ONNX Runtime when it is installed and tfjs would run on WebAssembly, else tfjs. */
export const INFERENCE_ENGINES = ['auto', 'tfjs', 'onnx'] as const;
export type InferenceEngineRequest = (typeof INFERENCE_ENGINES)[number];
export type InferenceEngineName = Exclude<InferenceEngineRequest, 'auto'>;

export const ORT_PACKAGE = 'onnxruntime-node';
/** The command that makes `--engine onnx` (and auto's faster choice) available. */
export const ORT_INSTALL = `npm install ${ORT_PACKAGE}`;

// The few parts of onnxruntime-node used here (its own types would make finetune's depend on it).
interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
}
interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface OrtModule {
  InferenceSession: {
    create(model: Uint8Array, options: Record<string, unknown>): Promise<OrtSession>;
  };
  Tensor: new (type: 'float32', data: Float32Array, dims: number[]) => OrtTensor;
}

/** onnxruntime-node, or why it can't be used. */
export type OnnxRuntimeProbe = { available: true; version: string; ort: OrtModule } | { available: false; reason: string };

let probed: Promise<OnnxRuntimeProbe> | undefined;

/** Imports onnxruntime-node once per process. Never throws: a missing or broken install gives the reason. */
export function probeOnnxRuntime(): Promise<OnnxRuntimeProbe> {
  probed ??= (async (): Promise<OnnxRuntimeProbe> => {
    let ort: OrtModule;
    try {
      const imported = (await import(ORT_PACKAGE)) as OrtModule & { default?: OrtModule };
      ort = imported.InferenceSession ? imported : imported.default!;
    } catch (error) {
      const message = error instanceof Error ? error.message.split('\n')[0]! : String(error);
      const missing = (error as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && message.includes(`'${ORT_PACKAGE}'`);
      return { available: false, reason: missing ? `${ORT_PACKAGE} is not installed (${ORT_INSTALL})` : `${ORT_PACKAGE} failed to load (${message})` };
    }
    return { available: true, version: ortVersion(), ort };
  })();
  return probed;
}

function ortVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    return (require(`${ORT_PACKAGE}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown version';
  }
}

/** Where the ONNX model came from, for the log. */
export interface OnnxSource {
  /** The export file used, or undefined when the model was converted in memory. */
  file?: string;
  /** Seconds the in-memory conversion took. */
  convertSeconds?: number;
}

/** A run's model on ONNX Runtime: raw RGB pixels (0–255, NHWC float32) in, class probabilities out. */
export class OnnxModel {
  private constructor(
    private readonly ort: OrtModule,
    private readonly session: OrtSession,
    readonly size: number,
    readonly classes: number,
    readonly threads: number,
    readonly source: OnnxSource,
  ) {}

  /**
   * Loads a run's model on ONNX Runtime: its `export/model.onnx` when that file is newer than the
   * model and made for the same classes and size, else the model converted in memory (nothing is
   * written: the run folder may be read-only). Checks the model with one image. Throws a
   * FinetuneError saying why when the model can't run here (a layer the converter lacks, …).
   */
  static async load(ort: OrtModule, location: ModelLocation, config: ModelConfig, threads: number): Promise<OnnxModel> {
    const size = config.input.size;
    const classes = config.classes.length;
    const exported = await usableExport(location, config);
    let bytes: Uint8Array;
    let source: OnnxSource;
    if (exported) {
      bytes = exported.bytes;
      source = { file: exported.file };
    } else {
      const started = performance.now();
      const { artifacts } = await readRunModel(location.runDir);
      checkPreprocessing(artifacts.modelTopology, config);
      bytes = runModelToOnnx(artifacts, config, finetuneVersion());
      source = { convertSeconds: (performance.now() - started) / 1000 };
    }
    // Threads as tfjs uses (FINETUNE_THREADS, else every core); one graph runs at a time.
    const session = await ort.InferenceSession
      .create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' })
      .catch((error: unknown) => {
        throw new FinetuneError(`ONNX Runtime cannot load the model: ${(error as Error).message.split('\n')[0]}`, { cause: error });
      });
    const model = new OnnxModel(ort, session, size, classes, threads, source);
    try {
      await model.run(new Float32Array(size * size * 3), 1);
    } catch (error) {
      await session.release();
      throw new FinetuneError(`ONNX Runtime cannot run the model: ${(error as Error).message.split('\n')[0]}`, { cause: error });
    }
    return model;
  }

  /** Probabilities of `n` images (n × size × size × 3 raw pixel values): n × classes, row-major. */
  async run(pixels: Float32Array, n: number): Promise<Float32Array> {
    const s = this.size;
    const input = new this.ort.Tensor('float32', pixels, [n, s, s, 3]);
    const output = (await this.session.run({ [ONNX_INPUT]: input }))[ONNX_OUTPUT];
    const data = output?.data;
    if (!(data instanceof Float32Array) || data.length !== n * this.classes) {
      const per = data instanceof Float32Array ? data.length / n : 0;
      throw new FinetuneError(`the ONNX model gave ${per} outputs per image, but finetune.json lists ${this.classes} classes.`);
    }
    return data;
  }

  dispose(): void {
    void this.session.release();
  }
}

/** Where `finetune export --format onnx` and `--export onnx` put the ONNX model (export/index.ts's DEFAULT_EXPORT_DIR). */
const EXPORT_FILE = path.join('export', 'model.onnx');

/** Newest modification time of the files the model is made of (model/ and finetune.json). */
async function modelTime(location: ModelLocation): Promise<number> {
  const names = await fs.readdir(location.modelDir);
  const times = await Promise.all(
    [...names.map((n) => path.join(location.modelDir, n)), location.configFile].map((f) => fs.stat(f).then((s) => s.mtimeMs)),
  );
  return Math.max(...times);
}

/**
 * `<run>/export/model.onnx` (where `finetune export` and `--export onnx` write it) when it is newer
 * than the model and its metadata names the same classes and size; else undefined.
 */
async function usableExport(location: ModelLocation, config: ModelConfig): Promise<{ file: string; bytes: Uint8Array } | undefined> {
  const file = path.join(location.runDir, EXPORT_FILE);
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat?.isFile() || stat.mtimeMs < (await modelTime(location))) return undefined;
  try {
    const bytes = new Uint8Array(await fs.readFile(file));
    const metadata = new Map(decodeOnnxModel(bytes).metadataProps.map((p) => [p.key, p.value]));
    const same =
      metadata.get(ONNX_METADATA_KEYS.classes) === JSON.stringify(config.classes) &&
      metadata.get(ONNX_METADATA_KEYS.imageSize) === String(config.input.size);
    return same ? { file, bytes } : undefined;
  } catch {
    return undefined; // unreadable or not ONNX: convert instead
  }
}

/**
 * A format-2 model must hold its `preprocess` layer (readRunModel adds it to format-1 models and
 * refuses one that has it already): without it the ONNX model would get raw pixels unprocessed.
 */
function checkPreprocessing(topology: unknown, config: ModelConfig): void {
  const layers = functionalConfig(topology).layers;
  if (!layers.some((l) => l.name === PREPROCESS_LAYER)) {
    throw new FinetuneError(
      `finetune.json has format ${config.format} (the model takes raw pixels), but the model has no '${PREPROCESS_LAYER}' layer. ` +
        `Were files from two runs mixed? Copy model/ and finetune.json from the same run.`,
    );
  }
}
