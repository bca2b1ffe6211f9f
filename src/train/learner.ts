/**
 * The former name of the Trainer, kept so that scripts written against `Learner` keep working.
 * New code: `Trainer` (src/train/trainer.ts) and its parts.
 */
export { Trainer as Learner } from './trainer.js';
export type { TrainerData as LearnerData, TrainerOptions as LearnerOptions, FitOptions } from './trainer.js';
export type { BatchLogs, Callback, EpochLogs, NamedTensor, TrainingContext, UnfreezeSpec } from './types.js';
