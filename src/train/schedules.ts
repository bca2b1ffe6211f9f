import type { Callback, TrainingContext } from './types.js';

export type ScheduleName = 'plateau' | 'cosine' | 'one-cycle';

export interface ScheduleOptions {
  /** Epochs of linear warm-up from lr/25 at the start of each stage (cosine; one-cycle has its own). */
  warmupEpochs?: number;
}

/**
 * A learning rate that follows a curve over each stage, set before every batch: `cosine` decays
 * from the stage's rate to 0 along a half cosine (Loshchilov & Hutter's SGDR without restarts),
 * after an optional linear warm-up; `one-cycle` (Smith; fastai's `fit_one_cycle`) rises from
 * lr/25 to lr over the first 25 % of the steps, then follows a cosine down to lr/1e4. The curve is
 * laid over the stage's planned epochs; early stopping may end it sooner.
 */
export class LearningRateSchedule implements Callback {
  readonly name = 'learningRateSchedule';
  /** The stage's rate, as the optimizer started it (kept in checkpoints: a resumed run restarts from the last rate). */
  private base = Number.NaN;

  constructor(
    readonly schedule: Exclude<ScheduleName, 'plateau'>,
    readonly options: ScheduleOptions = {},
  ) {}

  onStageBegin(ctx: TrainingContext): void {
    this.base = ctx.trainer.learningRate;
  }

  onBatchBegin(ctx: TrainingContext, batch: number, batches: number): void {
    const progress = ((ctx.epoch - 1) * batches + (batch - 1)) / Math.max(1, ctx.epochs * batches);
    ctx.trainer.learningRate = this.rateAt(progress, ctx.epochs);
  }

  /** The rate at `progress` ∈ [0, 1) of a stage of `epochs` epochs. */
  rateAt(progress: number, epochs: number): number {
    const cosine = (from: number, to: number, t: number) => to + ((from - to) * (1 + Math.cos(Math.PI * Math.min(1, t)))) / 2;
    if (this.schedule === 'one-cycle') {
      const peak = 0.25;
      if (progress < peak) return cosine(this.base / 25, this.base, progress / peak);
      return cosine(this.base, this.base / 1e4, (progress - peak) / (1 - peak));
    }
    const warmup = Math.min(1, (this.options.warmupEpochs ?? 0) / Math.max(1, epochs));
    if (progress < warmup) return this.base / 25 + ((this.base - this.base / 25) * progress) / warmup;
    return cosine(this.base, 0, (progress - warmup) / Math.max(1e-9, 1 - warmup));
  }

  getState(): { base: number } {
    return { base: this.base };
  }

  setState(state: unknown): void {
    this.base = (state as { base: number }).base;
  }
}
