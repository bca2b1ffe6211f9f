/**
 * How fast a backend runs a model here: a short, time-bounded forward-pass probe of MobileNetV2 with
 * random weights on random images (what `finetune doctor` reports, and what bench scripts can reuse).
 *
 * The probe never starts a call it expects to end past its time budget, except the least that gives
 * a figure at all: one warm-up call (for backends that compile on first use) and one timed call, both
 * of a single image. Within the budget it then moves up to the full batch size. A compiling backend's
 * first call at each batch size is a warm-up and is left out of the figure when later calls exist.
 */
import * as tf from '@tensorflow/tfjs';
import { mobileNetV2 } from '../backbones/mobilenet_v2.js';
import { initEngine, type BackendName, type EngineInfo } from './backend.js';
import { FusedInference } from './fused-inference.js';
import { silenceCpuBanner } from './tfjs-internals.js';

export interface SpeedProbeOptions {
  /** MobileNetV2 width multiplier. Default 1.0. */
  alpha?: number;
  /** Square input size in pixels. Default 224. */
  imageSize?: number;
  /** Images per call once the budget allows it. Default 8. */
  batchSize?: number;
  /** Time budget in seconds, counting the model build and warm-up. Default 5. */
  seconds?: number;
}

/** What one backend's probe measured. */
export interface SpeedProbeResult {
  backend: BackendName;
  /** The backend as `initEngine` describes it, e.g. "wasm, SIMD, 1 thread". */
  detail: string;
  alpha: number;
  imageSize: number;
  /** Images per second over the calls the figure is made from. */
  imagesPerSecond: number;
  /** The batch size of those calls: the requested one, or 1 where the budget allowed no more. */
  batchSize: number;
  /** Images and seconds behind `imagesPerSecond`. */
  images: number;
  seconds: number;
  /** Seconds of the first call (compilation or setup included); undefined where none was made apart. */
  firstCallSeconds?: number;
  /** Seconds to build the model. */
  buildSeconds: number;
  /** Seconds of the whole probe, start of the backend included. */
  totalSeconds: number;
  /** Every model call made: batch size and seconds, in order (warm-ups included). */
  calls: { batchSize: number; seconds: number }[];
}

export const SPEED_PROBE_DEFAULTS = { alpha: 1.0, imageSize: 224, batchSize: 8, seconds: 5 } as const;

/** Backends whose first call costs about what later ones do (no shader or kernel compilation). */
const NO_WARM_UP: ReadonlySet<BackendName> = new Set(['cpu']);

/**
 * Starts `backend` (`initEngine(backend)`: it stays the active backend afterwards) and measures
 * MobileNetV2 forward passes on it for about `seconds`. Every tensor made is disposed. Throws what
 * `initEngine` throws when the backend can't be started.
 */
export async function speedProbe(backend: BackendName, options: SpeedProbeOptions = {}): Promise<SpeedProbeResult> {
  const alpha = options.alpha ?? SPEED_PROBE_DEFAULTS.alpha;
  const imageSize = options.imageSize ?? SPEED_PROBE_DEFAULTS.imageSize;
  const fullBatch = Math.max(1, Math.floor(options.batchSize ?? SPEED_PROBE_DEFAULTS.batchSize));
  const budget = Math.max(0, options.seconds ?? SPEED_PROBE_DEFAULTS.seconds);

  const start = performance.now();
  const elapsed = () => (performance.now() - start) / 1000;
  const engine: EngineInfo = await initEngine(backend);
  quietCpuBanner(backend);

  const t = performance.now();
  const model = mobileNetV2({ alpha, imageSize, name: 'speed_probe' });
  // As finetune runs a frozen backbone and predicts: batch norms folded into the convolutions.
  const plan = FusedInference.forModel(model)!.prepare();
  const buildSeconds = (performance.now() - t) / 1000;

  const calls: { batchSize: number; seconds: number }[] = [];
  const inputs = new Map<number, tf.Tensor>();
  const run = async (batch: number): Promise<number> => {
    let x = inputs.get(batch);
    if (!x) {
      x = tf.randomUniform([batch, imageSize, imageSize, 3], -1, 1);
      inputs.set(batch, x);
    }
    const t0 = performance.now();
    const input = x;
    const y = tf.tidy(() => plan.run(input));
    try {
      await y.data();
    } finally {
      y.dispose();
    }
    const seconds = (performance.now() - t0) / 1000;
    calls.push({ batchSize: batch, seconds });
    return seconds;
  };

  try {
    const warmsUp = !NO_WARM_UP.has(backend);
    let firstCallSeconds: number | undefined;
    if (warmsUp) firstCallSeconds = await run(1);
    await run(1); // the one timed call every probe makes
    // Then as many calls as fit: at the full batch size once one is expected to fit (a guess from the
    // single-image time, pessimistic since batches run faster per image), else single images.
    for (;;) {
      const atFull = calls.filter((c) => c.batchSize === fullBatch);
      const timedAtOne = calls.filter((c, i) => c.batchSize === 1 && !(warmsUp && i === 0));
      const perImageAtOne = timedAtOne.at(-1)!.seconds;
      const left = budget - elapsed();
      if (fullBatch > 1 && (atFull.length > 0 ? atFull.at(-1)!.seconds : fullBatch * perImageAtOne) <= left) {
        await run(fullBatch);
      } else if ((fullBatch === 1 || atFull.length === 0) && perImageAtOne <= left) {
        await run(1); // no room for a full batch: more single images make the figure steadier
      } else {
        break;
      }
    }
    const figure = figureCalls(calls, fullBatch, warmsUp);
    const images = figure.reduce((n, c) => n + c.batchSize, 0);
    const seconds = figure.reduce((s, c) => s + c.seconds, 0);
    return {
      backend,
      detail: engine.detail,
      alpha,
      imageSize,
      imagesPerSecond: seconds > 0 ? images / seconds : 0,
      batchSize: figure[0]!.batchSize,
      images,
      seconds,
      ...(firstCallSeconds !== undefined ? { firstCallSeconds } : {}),
      buildSeconds,
      totalSeconds: elapsed(),
      calls,
    };
  } finally {
    for (const x of inputs.values()) x.dispose();
    plan.dispose();
    model.dispose();
  }
}

/**
 * The calls the figure comes from: those at the full batch size if any were made, else the timed
 * single-image ones; a compiling backend's first call at a size is dropped where there are others.
 */
function figureCalls(
  calls: { batchSize: number; seconds: number }[],
  fullBatch: number,
  warmsUp: boolean,
): { batchSize: number; seconds: number }[] {
  const size = calls.some((c) => c.batchSize === fullBatch) ? fullBatch : 1;
  const at = calls.filter((c) => c.batchSize === size);
  return warmsUp && at.length > 1 ? at.slice(1) : at;
}

export interface SpeedProbesOptions extends SpeedProbeOptions {
  /** Called before each backend is probed (for progress output). */
  onStart?: (backend: BackendName) => void;
}

/** One backend's outcome in `speedProbes`: its figures, or why it could not be measured. */
export type SpeedProbeOutcome = { backend: BackendName; result: SpeedProbeResult } | { backend: BackendName; error: string };

/**
 * Probes each backend in turn (switching with `initEngine`), then makes the backend that was active
 * before active again. A backend that fails to start or run is reported with its error; the others
 * still run.
 */
export async function speedProbes(backends: readonly BackendName[], options: SpeedProbesOptions = {}): Promise<SpeedProbeOutcome[]> {
  const before = activeBackend();
  const outcomes: SpeedProbeOutcome[] = [];
  try {
    for (const backend of backends) {
      options.onStart?.(backend);
      try {
        outcomes.push({ backend, result: await speedProbe(backend, options) });
      } catch (e) {
        outcomes.push({ backend, error: e instanceof Error ? e.message : String(e) });
      }
    }
  } finally {
    if (before !== undefined && activeBackend() !== before) await initEngine(before as BackendName).catch(() => tf.setBackend(before));
  }
  return outcomes;
}

/** The active tfjs backend's name; undefined where none was started yet. */
function activeBackend(): string | undefined {
  return tf.getBackend() || undefined;
}

/**
 * tfjs-backend-cpu prints "looks like you are running TensorFlow.js in Node.js…" on its first use;
 * a probe is not that first use in any sense a user cares about (and doctor says it better).
 */
function quietCpuBanner(backend: BackendName): void {
  if (backend === 'cpu') silenceCpuBanner();
}
