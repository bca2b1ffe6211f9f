import * as tf from '@tensorflow/tfjs';
import { stableWeights } from './checkpoint.js';
import type { Callback, EpochLogs, TrainingContext } from './types.js';

type Monitor = 'valLoss' | 'loss';

/** The monitored value of an epoch: validation loss when there is a validation set, else training loss. */
function monitored(logs: EpochLogs, monitor: Monitor): number {
  return monitor === 'valLoss' && logs.valLoss !== undefined ? logs.valLoss : logs.loss;
}

/**
 * Stops a stage when the monitored loss has not improved for `patience` epochs, and keeps the best
 * weights seen in the whole run: at the end of every stage the model goes back to them, so stage 2
 * starts from stage 1's best epoch and a fine-tuning stage that only hurts leaves the model as it was.
 */
export class EarlyStopping implements Callback {
  readonly name = 'earlyStopping';
  best = Infinity;
  bestEpoch: { stage: number; epoch: number } | undefined;
  private wait = 0;
  private bestWeights: Map<tf.Variable, tf.Tensor> | undefined;

  constructor(
    readonly options: { patience: number; monitor?: Monitor; minDelta?: number; restoreBestWeights?: boolean },
  ) {}

  onStageBegin(ctx: TrainingContext): void {
    this.wait = 0;
    // Variables that start training now still hold the values they had at the best epoch so far.
    if (this.bestWeights) {
      for (const variable of ctx.trainer.mutableVariables()) {
        if (!this.bestWeights.has(variable)) this.bestWeights.set(variable, ctx.trainer.snapshot([variable]).get(variable)!);
      }
    }
  }

  onEpochEnd(ctx: TrainingContext, logs: EpochLogs): void {
    const value = monitored(logs, this.options.monitor ?? 'valLoss');
    if (value < this.best - (this.options.minDelta ?? 0)) {
      this.best = value;
      this.bestEpoch = { stage: logs.stage, epoch: logs.epoch };
      this.wait = 0;
      if (this.options.restoreBestWeights ?? true) {
        this.disposeWeights();
        this.bestWeights = ctx.trainer.snapshot();
      }
    } else {
      this.wait += 1;
      if (this.wait >= this.options.patience) ctx.stopTraining = true;
    }
  }

  onStageEnd(ctx: TrainingContext): void {
    if (this.bestWeights) ctx.trainer.restore(this.bestWeights);
  }

  getState(): { best: number | null; bestEpoch: { stage: number; epoch: number } | null; wait: number } {
    // JSON has no Infinity: null stands for "nothing seen yet".
    return { best: Number.isFinite(this.best) ? this.best : null, bestEpoch: this.bestEpoch ?? null, wait: this.wait };
  }

  setState(state: unknown): void {
    const s = state as ReturnType<EarlyStopping['getState']>;
    this.best = s.best ?? Infinity;
    this.bestEpoch = s.bestEpoch ?? undefined;
    this.wait = s.wait;
  }

  /**
   * The best epoch's value of every weight of `model`, in `stableWeights` order (weights that never
   * trained since then are their current values), for checkpoints; undefined before the first epoch.
   */
  checkpointWeights(model: tf.LayersModel): tf.Tensor[] | undefined {
    if (!this.bestWeights) return undefined;
    return stableWeights(model).map((w) => this.bestWeights!.get(w.read() as tf.Variable) ?? w.read());
  }

  /** Takes `values` (in `stableWeights(model)` order) as the best weights, e.g. from a checkpoint; keeps copies. */
  restoreCheckpointWeights(model: tf.LayersModel, values: tf.Tensor[]): void {
    this.disposeWeights();
    this.bestWeights = new Map(stableWeights(model).map((w, i) => [w.read() as tf.Variable, tf.keep(values[i]!.clone())]));
  }

  /** Frees the kept copy of the best weights. */
  disposeWeights(): void {
    if (this.bestWeights) for (const t of this.bestWeights.values()) t.dispose();
    this.bestWeights = undefined;
  }
}

/** Divides the learning rate by 1/factor when the monitored loss stalls for `patience` epochs. */
export class ReduceLROnPlateau implements Callback {
  readonly name = 'reduceLROnPlateau';
  private best = Infinity;
  private wait = 0;

  constructor(readonly options: { patience: number; factor?: number; minLr?: number; monitor?: Monitor }) {}

  onStageBegin(): void {
    this.best = Infinity;
    this.wait = 0;
  }

  onEpochEnd(ctx: TrainingContext, logs: EpochLogs): void {
    const value = monitored(logs, this.options.monitor ?? 'valLoss');
    if (value < this.best) {
      this.best = value;
      this.wait = 0;
      return;
    }
    this.wait += 1;
    if (this.wait >= this.options.patience) {
      const lr = ctx.trainer.learningRate;
      ctx.trainer.learningRate = Math.max(this.options.minLr ?? 1e-7, lr * (this.options.factor ?? 0.2));
      this.wait = 0;
    }
  }

  getState(): { best: number | null; wait: number } {
    return { best: Number.isFinite(this.best) ? this.best : null, wait: this.wait };
  }

  setState(state: unknown): void {
    const s = state as ReturnType<ReduceLROnPlateau['getState']>;
    this.best = s.best ?? Infinity;
    this.wait = s.wait;
  }
}

/** Calls `save` whenever the monitored loss reaches a new best over the whole run (the best-model checkpoint). */
export class ModelCheckpoint implements Callback {
  readonly name = 'modelCheckpoint';
  private best = Infinity;

  constructor(
    readonly save: (ctx: TrainingContext, logs: EpochLogs) => Promise<void>,
    readonly options: { monitor?: Monitor } = {},
  ) {}

  async onEpochEnd(ctx: TrainingContext, logs: EpochLogs): Promise<void> {
    const value = monitored(logs, this.options.monitor ?? 'valLoss');
    if (value < this.best) {
      this.best = value;
      await this.save(ctx, logs);
    }
  }

  getState(): { best: number | null } {
    return { best: Number.isFinite(this.best) ? this.best : null };
  }

  setState(state: unknown): void {
    this.best = (state as { best: number | null }).best ?? Infinity;
  }
}

/** Calls `write` with the whole history after every epoch, so a crash loses at most the epoch in flight. */
export class HistoryLogger implements Callback {
  constructor(readonly write: (history: EpochLogs[]) => Promise<void>) {}

  async onEpochEnd(ctx: TrainingContext): Promise<void> {
    await this.write(ctx.trainer.history);
  }
}

/** Balanced class weights (scikit-learn's 'balanced'): n_samples / (n_classes · count_c). */
export function balancedClassWeights(labels: ArrayLike<number>, numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]!]! += 1;
  return counts.map((c) => (c === 0 ? 0 : labels.length / (numClasses * c)));
}
