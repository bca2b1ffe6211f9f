/**
 * `finetune runs [dir]`: the runs under a folder as a table, sorted by a metric, or the
 * differences between two runs (`--diff a b`).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { FinetuneError, UsageError } from '../errors.js';
import {
  defaultDirection,
  diffRuns,
  differingOptions,
  findRuns,
  formatDiff,
  formatRunsTable,
  loadRun,
  SORT_KEYS,
  sortRuns,
  type RunSummary,
  type SortKey,
} from '../runs/runs.js';

export interface RunsIo {
  stdout?: NodeJS.WritableStream;
  /** Warnings (an unreadable finetune.json); default process.stderr. */
  stderr?: NodeJS.WritableStream;
}

interface RunsFlags {
  sort: SortKey;
  asc?: boolean;
  desc?: boolean;
  json?: boolean;
  diff?: string[];
  depth: number;
}

/**
 * Registers `runs [dir]` on `program`. `--diff` takes the two runs as two values (`--diff a b`) or
 * one comma-separated value (`--diff a,b`); each is a run folder (or its finetune.json), found as
 * given or under dir. No runs found, or a run that is not there: FinetuneError (exit status 1).
 */
export function addRunsCommand(program: Command, io: RunsIo = {}): void {
  const out = io.stdout ?? process.stdout;
  const err = io.stderr ?? process.stderr;
  program
    .command('runs')
    .description('list the training runs under a folder (any finetune.json up to --depth levels down), or compare two')
    .argument('[dir]', 'folder to search', '.')
    .addOption(new Option('--sort <key>', 'sort by').choices(SORT_KEYS).default('val_accuracy'))
    .addOption(new Option('--asc', 'ascending order (default for val_loss, time, name, created)').conflicts('desc'))
    .addOption(new Option('--desc', 'descending order (default for val_accuracy)'))
    .option('--json', 'print JSON for scripts')
    .option('--diff <runs...>', 'compare two runs: --diff a b (or --diff a,b)')
    .option('--depth <n>', 'folder levels to search below dir', depthArgument, 3)
    .action(async (dir: string, flags: RunsFlags) => {
      const onSkip = (file: string, reason: string) => err.write(`finetune runs: skipping ${file}: ${reason}\n`);
      if (flags.diff) {
        await printDiff(dir, flags, out);
        return;
      }
      const runs = await findRuns(dir, { depth: flags.depth, onSkip });
      if (runs.length === 0) {
        throw new FinetuneError(
          `no runs under ${dir}: no finetune.json found up to ${flags.depth} folder level${flags.depth === 1 ? '' : 's'} down ` +
            '(train one with `finetune <data> --out <folder>`, or pass the folder that holds the runs).',
        );
      }
      const direction = flags.asc ? 'asc' : flags.desc ? 'desc' : defaultDirection(flags.sort);
      const sorted = sortRuns(runs, flags.sort, direction);
      if (flags.json) {
        out.write(JSON.stringify(runsJson(dir, sorted, flags.sort, direction), null, 2) + '\n');
        return;
      }
      const count = `${runs.length} run${runs.length === 1 ? '' : 's'}`;
      out.write(`${count} under ${dir}, by ${flags.sort} (${direction === 'asc' ? 'ascending' : 'descending'})\n\n`);
      out.write(formatRunsTable(sorted, { width: terminalWidth(out) }));
    });
}

function depthArgument(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`--depth needs a whole number ≥ 0, got '${value}'.`);
  return n;
}

/** The width of the terminal, or 100 when writing to a file or pipe. */
function terminalWidth(stream: NodeJS.WritableStream): number {
  const columns = (stream as { columns?: number }).columns;
  return typeof columns === 'number' && columns > 40 ? columns : 100;
}

async function printDiff(dir: string, flags: RunsFlags, out: NodeJS.WritableStream): Promise<void> {
  const specs = flags.diff!.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  if (specs.length !== 2) {
    throw new UsageError(`--diff needs two runs (--diff a b, or --diff a,b), got ${specs.length}: ${specs.join(' ') || '(none)'}`);
  }
  const [a, b] = await Promise.all(specs.map((s) => resolveRun(s, dir)));
  const diff = diffRuns(a!, b!);
  if (flags.json) {
    out.write(JSON.stringify({ a: a!.name, b: b!.name, aPath: a!.path, bPath: b!.path, ...diff }, null, 2) + '\n');
    return;
  }
  out.write(formatDiff(a!, b!, diff));
}

/**
 * A run named on the command line: a run folder or its finetune.json, as given (relative to the
 * working folder) or else relative to dir. Named relative to dir when inside it.
 */
export async function resolveRun(spec: string, dir: string): Promise<RunSummary> {
  const candidates = [...new Set([path.resolve(spec), path.resolve(dir, spec)])];
  for (const candidate of candidates) {
    const folder = path.basename(candidate) === 'finetune.json' ? path.dirname(candidate) : candidate;
    const exists = await fs
      .stat(path.join(folder, 'finetune.json'))
      .then((s) => s.isFile())
      .catch(() => false);
    if (!exists) continue;
    const inside = !path.relative(path.resolve(dir), folder).startsWith('..');
    let problem = '';
    const run = await loadRun(folder, inside ? dir : process.cwd(), (_file, reason) => (problem = reason));
    if (!run) throw new FinetuneError(`${path.join(folder, 'finetune.json')}: ${problem}`);
    return run;
  }
  throw new FinetuneError(`no run at ${spec}: no finetune.json in ${candidates.join(' or ')}.`);
}

/** The JSON that `runs --json` prints: the differing option names, then every run, sorted. */
function runsJson(dir: string, runs: readonly RunSummary[], sort: SortKey, direction: string) {
  return {
    dir: path.resolve(dir),
    sort,
    direction,
    differingOptions: differingOptions(runs),
    runs: runs.map((r) => ({
      name: r.name,
      path: r.path,
      complete: r.complete,
      backbone: r.backbone,
      valAccuracy: r.valAccuracy ?? null,
      valLoss: r.valLoss ?? null,
      balancedAccuracy: r.balancedAccuracy ?? null,
      rocAuc: r.rocAuc ?? null,
      seconds: r.seconds ?? null,
      stageSeconds: r.stageSeconds ?? null,
      bestEpoch: r.config.results?.bestEpoch ?? null,
      created: r.created ?? null,
      dataFingerprint: r.config.data?.fingerprint ?? null,
      training: r.config.training ?? {},
    })),
  };
}
