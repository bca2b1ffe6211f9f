import type * as tf from '@tensorflow/tfjs';
import { UsageError } from '../errors.js';
import { SplitModel, splittableAfter } from './graph.js';
import { HEAD_LAYERS } from './head.js';
import type { UnfreezeSpec } from './types.js';

/**
 * Which layers of a backbone + head model train, and where the model is split because of it: the
 * frozen bottom below the lowest trainable layer runs without the gradient tape (and can be cached),
 * the top is differentiated. `blocks` are the backbone's blocks in order (the registry's spec), the
 * units that `unfreeze({ blocks })` counts from the top.
 */
export class TrainableLayers {
  private names = new Set<string>();
  /** The split for the current trainable set (first set by the constructor, through freeze()). */
  split!: SplitModel;

  constructor(
    readonly model: tf.LayersModel,
    private readonly blocks: string[][],
  ) {
    this.freeze();
  }

  /** Only the classifier head trains. */
  freeze(): void {
    this.set([HEAD_LAYERS.logits]);
  }

  /** Makes the layers `what` names trainable (plus the head); returns the backbone layers with weights among them. */
  unfreeze(what: UnfreezeSpec): string[] {
    const layers = this.layersFor(what);
    this.set([...layers, HEAD_LAYERS.logits]);
    return layers.filter((name) => this.model.getLayer(name).weights.length > 0);
  }

  /** Names of the layers whose weights train now. */
  get trainable(): string[] {
    return [...this.names];
  }

  /** True when only the classifier head trains (as after `freeze()`). */
  get headOnly(): boolean {
    return this.names.size === 1 && this.names.has(HEAD_LAYERS.logits);
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** The backbone layers `what` unfreezes (see `unfreezeLayers`). */
  layersFor(what: UnfreezeSpec): string[] {
    return unfreezeLayers(this.model, this.blocks, what);
  }

  /** The split index for a lowest trainable layer: everything up to it is frozen. */
  boundaryBelow(lowestTrainable: number): number {
    return boundaryBelow(this.model, lowestTrainable);
  }

  /** The split that training `what` (plus the head) would use. */
  boundaryFor(what: UnfreezeSpec): number {
    const names = this.model.layers.map((l) => l.name);
    return this.boundaryBelow(Math.min(...this.layersFor(what).map((name) => names.indexOf(name))));
  }

  /** Trainable variables in a stable order. */
  variables(): tf.Variable[] {
    return this.model.layers
      .filter((l) => this.names.has(l.name))
      .flatMap((l) => l.trainableWeights.map((w) => w.read() as tf.Variable));
  }

  /**
   * For each of `variables` (trainable, as `variables()` lists them): how many trainable backbone
   * blocks lie above its layer's block — 0 for the top trainable block and for the head, 1 for the
   * block below, … (discriminative learning rates scale by a factor per step down).
   */
  blockDepths(variables: tf.Variable[] = this.variables()): number[] {
    const blockOf = new Map<string, number>();
    this.blocks.forEach((names, b) => names.forEach((name) => blockOf.set(name, b)));
    const trainableBlocks = [...this.names].map((name) => blockOf.get(name)).filter((b): b is number => b !== undefined);
    const top = Math.max(-1, ...trainableBlocks);
    const depthOfVariable = new Map<tf.Variable, number>();
    for (const layer of this.model.layers) {
      if (!this.names.has(layer.name)) continue;
      const block = blockOf.get(layer.name);
      for (const w of layer.trainableWeights) depthOfVariable.set(w.read() as tf.Variable, block === undefined ? 0 : top - block);
    }
    return variables.map((v) => depthOfVariable.get(v) ?? 0);
  }

  /** Variables training can change: the trainable weights, plus BN statistics when BN trains. */
  mutableVariables(trainBatchNorm: boolean): tf.Variable[] {
    const variables = this.variables();
    if (trainBatchNorm) {
      for (const layer of this.model.layers) {
        if (this.names.has(layer.name) && layer.getClassName() === 'BatchNormalization') {
          variables.push(...layer.nonTrainableWeights.map((w) => w.read() as tf.Variable));
        }
      }
    }
    return variables;
  }

  /** Frees the split's folded weights. */
  dispose(): void {
    this.split.dispose();
  }

  private set(names: string[]): void {
    this.names = new Set(names);
    for (const layer of this.model.layers) layer.trainable = this.names.has(layer.name);
    const boundary = this.boundaryBelow(this.model.layers.findIndex((l) => this.names.has(l.name)));
    const previous = this.split as SplitModel | undefined;
    this.split = new SplitModel(this.model, boundary);
    previous?.dispose();
  }
}

/**
 * The backbone layers of `model` (a backbone, or a backbone + head) that `what` unfreezes. Throws a
 * UsageError — before any work, since the backbone alone is enough to check — when `fromLayer` is
 * not a backbone layer or cuts through a residual connection (the frozen part's output would not
 * be one tensor), listing the layers that can start the trainable part.
 */
export function unfreezeLayers(model: tf.LayersModel, blocks: string[][], what: UnfreezeSpec): string[] {
  if ('blocks' in what) {
    const n = Math.max(0, Math.min(what.blocks, blocks.length));
    return blocks.slice(blocks.length - n).flat();
  }
  const names = model.layers.map((l) => l.name);
  const end = backboneEnd(model);
  const start = names.indexOf(what.fromLayer);
  if (start <= 0 || start >= end || !splittableAfter(model)[boundaryBelow(model, start)]) {
    const why = start <= 0 || start >= end ? 'is not a layer of the backbone' : 'is inside a residual block (a connection skips over it)';
    throw new UsageError(`--unfreeze-from ${what.fromLayer} ${why}. Layers that can start the fine-tuned part: ${validUnfreezeStarts(model).join(', ')}.`);
  }
  return names.slice(start, end);
}

/** Backbone layers (with weights) that `unfreeze({ fromLayer })` accepts, bottom to top. */
export function validUnfreezeStarts(model: tf.LayersModel): string[] {
  const ok = splittableAfter(model);
  const layers = model.layers;
  const starts: string[] = [];
  for (let i = 1; i < backboneEnd(model); i++) if (ok[boundaryBelow(model, i)] && layers[i]!.weights.length > 0) starts.push(layers[i]!.name);
  return starts;
}

/** Index of the head's first layer, or the layer count for a backbone alone. */
function backboneEnd(model: tf.LayersModel): number {
  const head = model.layers.findIndex((l) => l.name === HEAD_LAYERS.pool);
  return head < 0 ? model.layers.length : head;
}

function boundaryBelow(model: tf.LayersModel, lowestTrainable: number): number {
  // Dropout must stay above the split because it behaves differently in training.
  let boundary = lowestTrainable - 1;
  while (boundary > 0 && model.layers[boundary]!.getClassName() === 'Dropout') boundary--;
  return boundary;
}
