/**
 * The shape of a run's finetune.json as the report and `finetune runs` read it. Every field is
 * optional: runs written by older versions, runs still training (no `results` yet) and hand-edited
 * files must still list and render.
 */

/** A run's finetune.json (see runConfig in src/finetune.ts for the writer). */
export interface RunConfig {
  format?: string;
  created?: string;
  classes?: string[];
  backbone?: { name?: string; alpha?: number; weights?: string };
  input?: { size?: number; channels?: number; resize?: string; preprocessing?: unknown };
  /** Every resolved training option, by its FineTuneOptions name. */
  training?: Record<string, unknown>;
  data?: {
    root?: string;
    fingerprint?: string;
    validSource?: string;
    train?: Record<string, number>;
    valid?: Record<string, number>;
    test?: number;
    skipped?: number;
    ignored?: { hidden?: number; notImage?: number };
  };
  engine?: { backend?: string; detail?: string };
  versions?: Record<string, string | undefined>;
  results?: {
    bestEpoch?: { stage: number; epoch: number } | null;
    valAccuracy?: number | null;
    valLoss?: number | null;
    /** On test/<class>/, when the data had a labelled test set. */
    testAccuracy?: number | null;
    testLoss?: number | null;
    /** With --folds: valAccuracy and valLoss are the folds' means; these their k and sample sd. */
    folds?: { k: number; sd?: { accuracy?: number; loss?: number } };
    stageSeconds?: number[];
    seconds?: number;
  };
  /** Present while training: the last checkpointed epoch. */
  checkpoint?: { stage: number; epoch: number };
}

/** True for a parsed finetune.json written by training (its format names a finetune model). */
export function isRunConfig(value: unknown): value is RunConfig {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const format = (value as RunConfig).format;
  return typeof format === 'string' && format.startsWith('finetune-model/');
}

/** A finite number, or undefined (JSON null, a string, NaN). */
export function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** An option name as its command-line flag is spelled: fineTuneLr → fine-tune-lr, trainBatchNorm → train-bn. */
export function flagName(key: string): string {
  if (key === 'trainBatchNorm') return 'train-bn';
  return key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

/** An option value in one short line: numbers as written, everything else as JSON-ish text. */
export function formatOptionValue(value: unknown): string {
  if (value === undefined) return '—';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value) ?? String(value);
}
