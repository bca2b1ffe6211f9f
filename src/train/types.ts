/**
 * The vocabulary of the training loop, shared by the Trainer, its TrainStep and ActivationCache, the
 * callbacks and checkpoints (its own module, so none of them imports another for a type).
 */
import type * as tf from '@tensorflow/tfjs';
import type { Trainer } from './trainer.js';

/** A tensor with a name, as optimizers list their slots (not re-exported by @tensorflow/tfjs). */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

/** One row of the training history (history.csv). */
export interface EpochLogs {
  /** 1: head on a frozen backbone; 2: fine-tuning the top blocks. */
  stage: number;
  /** 1-based, within the stage. */
  epoch: number;
  loss: number;
  accuracy: number;
  valLoss?: number;
  valAccuracy?: number;
  /** Learning rate used during the epoch. */
  lr: number;
  seconds: number;
}

export interface BatchLogs {
  batch: number;
  batches: number;
  loss: number;
  accuracy: number;
}

/** What callbacks see; setting `stopTraining` ends the current stage after this epoch. */
export interface TrainingContext {
  trainer: Trainer;
  /** The same trainer, by its former name (kept for callbacks written against `Learner`). */
  learner: Trainer;
  stage: number;
  epoch: number;
  epochs: number;
  stopTraining: boolean;
}

/** Hooks into the training loop (Keras callbacks / fastai callbacks). Every hook may be async. */
export interface Callback {
  /** Callbacks with state that a resumed run must get back name themselves and implement get/setState. */
  readonly name?: string;
  getState?(): unknown;
  setState?(state: unknown): void;
  /**
   * Weights a callback keeps besides the model's (EarlyStopping's best epoch), in
   * `stableWeights(model)` order, to be saved with a checkpoint; undefined when it has none yet.
   */
  checkpointWeights?(model: tf.LayersModel): tf.Tensor[] | undefined;
  /** Takes back what `checkpointWeights` gave, read from a checkpoint (it keeps copies). */
  restoreCheckpointWeights?(model: tf.LayersModel, values: tf.Tensor[]): void;
  onStageBegin?(ctx: TrainingContext): void | Promise<void>;
  onEpochBegin?(ctx: TrainingContext): void | Promise<void>;
  /** Before the step on batch `batch` (1-based) of about `batches`; synchronous, as it runs per step. */
  onBatchBegin?(ctx: TrainingContext, batch: number, batches: number): void;
  onBatchEnd?(ctx: TrainingContext, logs: BatchLogs): void | Promise<void>;
  onEpochEnd?(ctx: TrainingContext, logs: EpochLogs): void | Promise<void>;
  onStageEnd?(ctx: TrainingContext): void | Promise<void>;
}

/** How stage 1 trains the head: epochs of Adam, or solved to convergence as a linear probe (L-BFGS). */
export type Stage1Method = 'adam' | 'lbfgs';
export const STAGE1_METHODS: readonly Stage1Method[] = ['adam', 'lbfgs'];

/** What a later stage unfreezes: the top `blocks` backbone blocks, or every layer from `fromLayer` up. */
export type UnfreezeSpec = { blocks: number } | { fromLayer: string };
