/**
 * What one training step costs the WebGPU backend beyond arithmetic: shader dispatches, GPU→CPU
 * reads and buffers taken from the pool, counted on a real step of the product's Trainer.
 *
 * The Trainer trains MobileNetV2 (random weights, finetune's head, dropout 0.2, Adam) on a
 * synthetic set of exactly 3 batches of random pixels (`augment: 'none'`, the loss read back only at
 * the epoch's end): batch 1 warms up (shaders, Adam's moments), batch 2 is counted — from the end of
 * batch 1 to the end of batch 2, so the batch's assembly (gathered from the activation cache, or
 * the images preprocessed) is in it — and batch 3 ends the epoch, whose reads (the loss and
 * accuracy sums) are counted apart. Two trainable sets: every layer (`full`), and stage 2's
 * default (the top 2 blocks and the head).
 *
 * None of these counts depends on the adapter's speed, so a CPU adapter (lavapipe) counts exactly.
 * They can depend on the input size where a kernel picks its shader by shape; `countsAtSizes`
 * measures several sizes so that a report says whether they do.
 */
import * as tf from '@tensorflow/tfjs';
import { mobileNetV2, mobileNetV2Blocks } from '../src/backbones/mobilenet_v2.js';
import { MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import type { ImageSet } from '../src/data/batches.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { Rng } from '../src/data/rng.js';
import { DEFAULTS } from '../src/defaults.js';
import { topCounts, WebGPUWorkCounter, type WebGPUWorkCounts } from '../src/engine/webgpu-counts.js';
import { attachHead } from '../src/train/head.js';
import { opsSoftmaxCrossEntropy } from '../src/train/loss.js';
import { fusedAdam } from '../src/train/train-step.js';
import { Trainer } from '../src/train/trainer.js';
import type { Callback, UnfreezeSpec } from '../src/train/types.js';
import { withSeparateOpsRunTop } from './separate-ops-top.js';

export type CountsStage = 'full' | 'stage2';
/**
 * 'shipped': the Trainer as it is (on WebGPU: Conv → BN → ReLU6 units as one op, WebGPUAdam, the
 * loss as two shaders).
 * 'separate-ops': the step as it was before those, every layer its own op, FusedAdam and the loss as
 * tfjs ops (the optimizer and loss as Trainer options; SplitModel.run's old loop from
 * bench/separate-ops-top.ts).
 */
export type CountsVariant = 'shipped' | 'separate-ops';

export interface CountsOptions {
  alpha: number;
  imageSize: number;
  batch: number;
  stage: CountsStage;
  /** Default 'shipped'. */
  variant?: CountsVariant;
  /** Top rows of the per-kernel and per-shader tables (default 15). */
  top?: number;
}

export interface CountsResult {
  measurement: 'counts';
  model: string;
  alpha: number;
  imageSize: number;
  batch: number;
  stage: CountsStage;
  variant: CountsVariant;
  /** What trains in this step. */
  trains: string;
  /** Layers of the model (backbone + head). */
  layers: number;
  /** Layers the step runs with the gradient tape on (above the frozen part). */
  stepLayers: number;
  dispatchesPerStep: number;
  /** GPU→CPU reads inside the counted step (the loss is read back only at the epoch's end). */
  readsPerStep: number;
  allocationsPerStep: number;
  /** Of the allocations, those the buffer pool could not serve (new GPU buffers). */
  newBuffersPerStep: number;
  /** Dispatches per layer in the step (`stepLayers`). */
  dispatchesPerLayer: number;
  /** Reads when the epoch ended (the Trainer's loss and metric sums). */
  epochEndReads: number;
  /** Dispatches by tfjs kernel or custom op (the outermost running), largest first. */
  topKernels: Array<{ name: string; count: number }>;
  /** Dispatches by shader class, largest first. */
  topPrograms: Array<{ name: string; count: number }>;
  /** Dispatches by kernel and shader class, largest first. */
  topKernelPrograms: Array<{ name: string; count: number }>;
  seconds: number;
  notes: string[];
}

const CLASSES = 2;

/** Counts one training step; the webgpu backend must be active. */
export async function measureCounts(options: CountsOptions, log: (line: string) => void = () => {}): Promise<CountsResult> {
  if (tf.getBackend() !== 'webgpu') throw new Error(`counts need the webgpu backend, not ${tf.getBackend()}`);
  const { alpha, imageSize, batch, stage } = options;
  const variant = options.variant ?? 'shipped';
  const started = performance.now();
  const model = attachHead(mobileNetV2({ alpha, imageSize }), { numClasses: CLASSES, dropout: DEFAULTS.dropout, seed: 1 });
  const blocks = mobileNetV2Blocks(alpha);
  const what: UnfreezeSpec = stage === 'full' ? { blocks: blocks.length } : { blocks: DEFAULTS.unfreeze };

  const windows: WebGPUWorkCounts[] = [];
  let counter: WebGPUWorkCounter | undefined;
  const perBatch: Callback = {
    onBatchEnd: () => {
      if (!counter) counter = new WebGPUWorkCounter(); // after the warm-up batch
      else windows.push(counter.take());
    },
  };
  const trainer = new Trainer(model, blocks, { train: syntheticSet(3 * batch, imageSize) }, MOBILENET_PREPROCESSING, {
    augment: 'none',
    batchSize: batch,
    seed: 1,
    // Read the loss only at the epoch's end, so the counted step holds no read the Trainer chose.
    readbackSeconds: 1e9,
    callbacks: [perBatch],
    ...(variant === 'separate-ops' ? { optimizer: fusedAdam, loss: opsSoftmaxCrossEntropy() } : {}),
  });
  try {
    trainer.unfreeze(what);
    const stepLayers = model.layers.length - 1 - trainer.layers.split.boundary;
    log(`counts: MobileNetV2 α=${alpha} ${imageSize} px, batch ${batch}, ${stage}, ${variant}: 3 steps (${stepLayers} of ${model.layers.length} layers in the step)…`);
    if (variant === 'separate-ops') await withSeparateOpsRunTop(() => trainer.fit(1, 1e-4));
    else await trainer.fit(1, 1e-4);
    const [step, last] = windows;
    if (!step || !last) throw new Error(`expected 3 batches, saw ${windows.length + 1}`);
    const top = options.top ?? 15;
    return {
      measurement: 'counts',
      model: `MobileNetV2 α=${Number.isInteger(alpha) ? alpha.toFixed(1) : alpha} ${imageSize} px`,
      alpha,
      imageSize,
      batch,
      stage,
      variant,
      trains: stage === 'full' ? 'every layer' : `the top ${DEFAULTS.unfreeze} blocks and the head, stage 2's default`,
      layers: model.layers.length,
      stepLayers,
      dispatchesPerStep: step.dispatches,
      readsPerStep: step.reads,
      allocationsPerStep: step.allocations,
      newBuffersPerStep: step.newBuffers,
      dispatchesPerLayer: Math.round((100 * step.dispatches) / stepLayers) / 100,
      epochEndReads: last.reads,
      topKernels: topCounts(step.byKernel, top),
      topPrograms: topCounts(step.byProgram, top),
      topKernelPrograms: topCounts(step.byKernelProgram, 2 * top),
      seconds: Math.round((performance.now() - started) / 100) / 10,
      notes: [],
    };
  } finally {
    counter?.stop();
    trainer.dispose();
    model.dispose();
  }
}

/** `n` images of random pixels, alternating between the classes. */
function syntheticSet(n: number, size: number): ImageSet {
  const rng = new Rng(7);
  const images = Array.from({ length: n }, () => Uint8Array.from({ length: size * size * 3 }, () => rng.int(256)));
  return {
    images: new MemoryPixelStore(images),
    labels: Int32Array.from({ length: n }, (_, i) => i % CLASSES),
    paths: images.map((_, i) => `synthetic-${i}.png`),
  };
}

/**
 * The counts at each size (same model, batch and stage), with a note on each result saying whether
 * they all agree, so a count measured small can stand for a size too slow to step through here.
 */
export async function countsAtSizes(
  base: Omit<CountsOptions, 'imageSize'>,
  sizes: number[],
  log: (line: string) => void = () => {},
): Promise<CountsResult[]> {
  const results: CountsResult[] = [];
  for (const imageSize of sizes) results.push(await measureCounts({ ...base, imageSize }, log));
  const key = (r: CountsResult) => `${r.dispatchesPerStep}/${r.readsPerStep}/${r.allocationsPerStep}`;
  if (results.length > 1) {
    const same = results.every((r) => key(r) === key(results[0]!));
    const note = same
      ? `dispatches, reads and allocations are the same at ${sizes.join(', ')} px`
      : `the counts differ between ${sizes.join(', ')} px (${results.map((r) => `${r.imageSize}: ${key(r)}`).join('; ')})`;
    for (const r of results) r.notes.push(note);
  }
  return results;
}

// ── As a benchmark measurement (npm run bench -- --backends webgpu --only counts) ───────────────

/** One counts job: a stage and variant, counted at each size (in its own process). */
export interface CountsJobSpec {
  alpha: number;
  batch: number;
  stage: CountsStage;
  variant: CountsVariant;
  /** Sizes to count at; default: 224 on a GPU, else COUNTS_CPU_SIZES (a 224 px step takes minutes on a CPU adapter). */
  sizes?: number[];
}

/**
 * Sizes counted on a CPU adapter instead of 224 (which lavapipe cannot even run at batch 32: a
 * 112×112×96 activation of 32 images is 154 MB, over its 128 MiB storage-binding limit). The counts depend on the input size only where a
 * kernel picks its shaders by shape, and those thresholds are on N·H·W per layer (tfjs's split-K
 * matrix product from 2000 pixels, finetune's split batch-norm sums from 32768, its split filter
 * gradients from 64 or 256): at batch 32, every MobileNetV2 layer is on the same side of them at
 * 128, 160 and 224 px (at 224: 7²·32 = 1568 < 2000 ≤ 14²·32, 28²·32 = 25088 < 32768 ≤ 56²·32; at
 * 128: 4²·32 < 2000 ≤ 8²·32, 16²·32 < 32768 ≤ 32²·32), not necessarily at 32 or 64 px. Counting at
 * two of them shows it.
 */
export const COUNTS_CPU_SIZES = [128, 160];

/** The sizes a job counts at, and why, given the adapter the job runs on. */
export function countsSizes(spec: CountsJobSpec, backendDetail: string): { sizes: number[]; note?: string } {
  if (spec.sizes) return { sizes: spec.sizes };
  if (!/CPU fallback|llvmpipe|lavapipe|swiftshader/i.test(backendDetail)) return { sizes: [224] };
  return {
    sizes: COUNTS_CPU_SIZES,
    note:
      `counted at ${COUNTS_CPU_SIZES.join(' and ')} px, not 224: a 224 px step takes minutes on a CPU adapter, and lavapipe cannot bind ` +
      `its largest activations at batch 32 (154 MB; its limit is 128 MiB); at batch ${spec.batch} ` +
      'every layer is on the same side of the shape thresholds where kernels change shaders at these sizes as at 224 px, so 224 px dispatches the same counts',
  };
}

/** Runs a counts job (in the job process, webgpu active). */
export async function countsJob(spec: CountsJobSpec, backendDetail: string, log: (line: string) => void): Promise<CountsResult[]> {
  const { sizes, note } = countsSizes(spec, backendDetail);
  const results = await countsAtSizes({ alpha: spec.alpha, batch: spec.batch, stage: spec.stage, variant: spec.variant }, sizes, log);
  for (const r of results) {
    if (note) r.notes.push(note);
    log(`  ${r.model} ${r.stage} ${r.variant}: ${r.dispatchesPerStep} dispatches (${r.dispatchesPerLayer} per layer), ${r.readsPerStep} reads, ${r.allocationsPerStep} allocations per step`);
  }
  return results;
}

/** The jobs `--only counts` runs: every layer and stage 2, as shipped and with separate ops (as before). */
export function countsJobSpecs(quick: boolean, sizes: number[] | undefined): CountsJobSpec[] {
  const specs: CountsJobSpec[] = [];
  for (const stage of ['full', 'stage2'] as const) {
    for (const variant of ['shipped', 'separate-ops'] as const) {
      specs.push({ alpha: 1, batch: quick ? 4 : 32, stage, variant, ...(quick ? { sizes: sizes ?? [32] } : sizes ? { sizes } : {}) });
    }
  }
  return specs;
}
