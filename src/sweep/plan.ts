/**
 * What a sweep will run, worked out (and every run's options checked) before any run starts:
 * `--vary <flag>=<v1>,<v2>,…` parsed through that flag's own parser, one run per value with only
 * that flag changed (or the cross product with --grid), the unchanged baseline once, and each run's
 * folder name. Runs with the same options are one run.
 */
import { InvalidArgumentError, type Option } from 'commander';
import { UsageError } from '../errors.js';
import type { FineTuneOptions, ResolvedOptions } from '../finetune.js';

/** Flags that say where a sweep writes or how it talks, not what a run trains: never varied. */
export const NOT_VARIABLE: Readonly<Record<string, string>> = {
  out: 'it is the sweep folder (each run goes to <out>/<flag>=<value>/)',
  overwrite: 'a sweep skips its complete runs and resumes interrupted ones by itself',
  resume: 'a sweep skips its complete runs and resumes interrupted ones by itself',
  quiet: 'it changes what is printed, not what is trained',
  verbose: 'it changes what is printed, not what is trained',
  json: 'it changes what is printed, not what is trained',
  export: 'give it once as a base option and every run exports',
  vary: 'it says what the sweep varies',
  grid: 'it says how the sweep combines what it varies',
};

/** One `--vary`: the flag (without dashes) and its parsed values, in the order given. */
export interface Vary {
  flag: string;
  /** Commander's name for the option's value (e.g. imageSize, trainBn). */
  attribute: string;
  values: unknown[];
}

/** One training run of the sweep. */
export interface PlannedRun {
  /** Its folder under the sweep folder: 'base', 'image-size=160', or 'image-size=160,lr=0.01' (--grid). */
  name: string;
  /** The flags changed from the base options ([] for the baseline), in --vary order. */
  changes: { flag: string; value: unknown }[];
  /** Every flag's value for this run, by flag (the varied ones and their base values). */
  values: Record<string, unknown>;
  /** fineTune's options for the run (its `out` is set when it runs). */
  options: FineTuneOptions;
  /** The options after defaults: checked, and what the run's finetune.json records. */
  resolved: ResolvedOptions;
}

export interface SweepPlan {
  vary: Vary[];
  grid: boolean;
  /** In order: the baseline first (one-factor sweeps), then each --vary's values in the order given. */
  runs: PlannedRun[];
  /** Values that gave a run already planned (e.g. the base value): its would-be name and the run's. */
  sameAs: { name: string; run: string }[];
}

export interface PlanInput {
  data: string;
  /** Commander's flags for the base run (training options only). */
  baseFlags: Record<string, unknown>;
  /** The `--vary` texts as given. */
  varySpecs: readonly string[];
  grid: boolean;
  /** The options that can vary: those `finetune <data>` trains with (see addTrainingOptions). */
  trainingOptions: readonly Option[];
  toOptions: (data: string, flags: Record<string, unknown>) => FineTuneOptions;
  /** Applies defaults and throws a UsageError for a bad value (resolveOptions). */
  resolve: (options: FineTuneOptions) => ResolvedOptions;
}

/** Parses every --vary and checks every run's options: a UsageError (one line) before any run starts. */
export function planSweep(input: PlanInput): SweepPlan {
  if (input.varySpecs.length === 0) throw new UsageError('finetune sweep needs at least one --vary <flag>=<v1>,<v2>,… (e.g. --vary image-size=160,224).');
  const vary = input.varySpecs.map((spec) => parseVary(spec, input.trainingOptions));
  const seen = new Set<string>();
  for (const v of vary) {
    if (seen.has(v.flag)) throw new UsageError(`--vary ${v.flag} is given twice: list all its values in one --vary ${v.flag}=<v1>,<v2>,…`);
    seen.add(v.flag);
  }
  const base = makeRun(input, vary, []);
  const candidates: PlannedRun[] = input.grid
    ? crossProduct(vary).map((changes) => makeRun(input, vary, changes))
    : [base, ...vary.flatMap((v) => v.values.map((value) => makeRun(input, vary, [{ flag: v.flag, value }])))];
  // A value equal to the base value (or two spellings of one value) is the same run: run it once.
  const runs: PlannedRun[] = [];
  const byIdentity = new Map<string, PlannedRun>();
  const byFolder = new Map<string, PlannedRun>();
  const sameAs: { name: string; run: string }[] = [];
  for (const run of candidates) {
    const identity = runIdentity(run.resolved);
    const earlier = byIdentity.get(identity);
    if (earlier) {
      sameAs.push({ name: run.name, run: earlier.name });
      continue;
    }
    const clash = byFolder.get(run.name);
    if (clash) throw new UsageError(`two runs of the sweep would share the folder ${run.name}: give values that differ in their names.`);
    byIdentity.set(identity, run);
    byFolder.set(run.name, run);
    runs.push(run);
  }
  return { vary, grid: input.grid, runs, sameAs };
}

/** Parses `<flag>=<v1>,<v2>,…` (the flag with or without its dashes) through the flag's own parser. */
export function parseVary(spec: string, options: readonly Option[]): Vary {
  const match = /^(?:--)?([a-z][a-z0-9-]*)=(.*)$/i.exec(spec.trim());
  if (!match) throw new UsageError(`--vary ${spec}: write it as <flag>=<v1>,<v2>,… (e.g. --vary image-size=160,224,288).`);
  const flag = match[1]!;
  const option = options.find((o) => o.long === `--${flag}`);
  if (!option) {
    const attribute = flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (NOT_VARIABLE[attribute] !== undefined) throw new UsageError(`--vary ${flag}: --${flag} cannot vary: ${NOT_VARIABLE[attribute]}.`);
    throw new UsageError(`--vary ${flag}: there is no training flag --${flag} (finetune --help lists them).`);
  }
  const attribute = option.attributeName();
  if (NOT_VARIABLE[attribute] !== undefined) throw new UsageError(`--vary ${flag}: --${flag} cannot vary: ${NOT_VARIABLE[attribute]}.`);
  const texts = match[2]!.split(',').map((t) => t.trim());
  if (texts.length === 0 || texts.some((t) => t === '')) {
    throw new UsageError(`--vary ${spec}: give values separated by commas, none empty (e.g. --vary ${flag}=<v1>,<v2>).`);
  }
  return { flag, attribute, values: texts.map((text) => parseValue(option, flag, text)) };
}

/** One value as the flag's parser reads it on the command line; a flag without a value takes true/false. */
function parseValue(option: Option, flag: string, text: string): unknown {
  const takesValue = option.required || option.optional;
  if (!takesValue) {
    if (/^(true|on|yes|1)$/i.test(text)) return true;
    if (/^(false|off|no|0)$/i.test(text)) return false;
    throw new UsageError(`--vary ${flag}=${text}: --${flag} is on or off: vary it as ${flag}=true,false.`);
  }
  if (option.argChoices && !option.argChoices.includes(text)) {
    throw new UsageError(`--vary ${flag}=${text}: --${flag} ${text} is not valid: use one of ${option.argChoices.join(', ')}.`);
  }
  try {
    return option.parseArg ? option.parseArg(text, undefined) : text;
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(`--vary ${flag}=${text}: ${error.message}`);
    throw error;
  }
}

function crossProduct(vary: readonly Vary[]): { flag: string; value: unknown }[][] {
  return vary.reduce<{ flag: string; value: unknown }[][]>(
    (combos, v) => combos.flatMap((combo) => v.values.map((value) => [...combo, { flag: v.flag, value }])),
    [[]],
  );
}

function makeRun(input: PlanInput, vary: readonly Vary[], changes: { flag: string; value: unknown }[]): PlannedRun {
  const flags = { ...input.baseFlags };
  for (const change of changes) flags[vary.find((v) => v.flag === change.flag)!.attribute] = change.value;
  const name = changes.length === 0 ? 'base' : changes.map((c) => `${c.flag}=${folderSafe(formatValue(c.value))}`).join(',');
  const options = input.toOptions(input.data, flags);
  let resolved: ResolvedOptions;
  try {
    resolved = input.resolve(options);
  } catch (error) {
    if (error instanceof UsageError) {
      const which = changes.length === 0 ? 'the base options' : changes.map((c) => `--${c.flag} ${formatValue(c.value)}`).join(' ');
      throw new UsageError(`sweep run ${name} (${which}): ${error.message}`);
    }
    throw error;
  }
  const values = Object.fromEntries(vary.map((v) => [v.flag, resolvedValue(resolved, v.attribute)]));
  return { name, changes, values, options, resolved };
}

/** The resolved value behind a commander attribute (trainBn is recorded as trainBatchNorm). */
function resolvedValue(resolved: ResolvedOptions, attribute: string): unknown {
  const key = attribute === 'trainBn' ? 'trainBatchNorm' : attribute;
  return (resolved as unknown as Record<string, unknown>)[key];
}

/** A value as it appears in folder names, the table and sweep.csv: numbers as JavaScript prints them. */
export function formatValue(value: unknown): string {
  if (value === undefined) return '';
  return typeof value === 'string' ? value : Array.isArray(value) ? value.join(' ') : String(value);
}

/** A value as one folder name: path separators and characters Windows forbids become '_'. */
function folderSafe(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\\/:*?"<>|\u0000-\u001f]/g, '_');
}

/**
 * What decides a run's result: the resolved options without where it reads and writes. Two planned
 * runs with the same identity are one run, and a folder's finetune.json must match it to be reused.
 */
export function runIdentity(resolved: Partial<ResolvedOptions> | Record<string, unknown>): string {
  const { data: _data, out: _out, overwrite: _overwrite, ...rest } = resolved as Record<string, unknown>;
  return JSON.stringify(Object.keys(rest).sort().map((k) => [k, rest[k]]));
}
