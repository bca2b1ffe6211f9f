/**
 * `finetune sweep <data> --vary <flag>=<v1>,<v2>,… [--vary …] [--grid] [training options] --out <dir>`:
 * one run per value with only that flag changed from the base options (the cross product with
 * --grid), each in <dir>/<flag>=<value>/, then the runs table, sweep.csv and sweep.png.
 */
import * as path from 'node:path';
import { Command, type Option } from 'commander';
import { UsageError } from '../errors.js';
import { resolveOptions, type FineTuneOptions } from '../finetune.js';
import { exportFormat } from '../export/index.js';
import { formatRunsTable, loadRun, type RunSummary } from '../runs/runs.js';
import { formatValue, planSweep, type SweepPlan } from '../sweep/plan.js';
import { describeRun, failedRunsError, runSweep, writeSweepOutputs, type SweepRunResult } from '../sweep/sweep.js';
import { abbreviate } from '../report/format.js';
import { consoleReporter } from './progress.js';

export interface SweepCommandDeps {
  /** Adds the training options (the same as `finetune <data>` has): every one of them can vary. */
  addTrainingOptions: (command: Command) => Command;
  toFineTuneOptions: (data: string, flags: Record<string, unknown>) => FineTuneOptions;
  /** Ctrl-C handling as for a single run: stop after the batch in flight. */
  interruptOnSignals: () => { signal: AbortSignal; release: () => void };
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WriteStream;
}

interface SweepFlags {
  vary?: string[];
  grid?: boolean;
  out: string;
  quiet?: boolean;
  verbose?: boolean;
  json?: boolean;
}

export function sweepCommand(deps: SweepCommandDeps): Command {
  const stdout = deps.stdout ?? process.stdout;
  const command = new Command('sweep')
    .description(
      'train one run per value of each --vary flag, changing only that flag from the base options (or every combination with --grid); ' +
        'complete runs are skipped and interrupted ones resumed, so running it again carries on',
    )
    .argument('<data>', 'data folder, as for finetune <data>');
  deps.addTrainingOptions(command);
  // Snapshot before the sweep's own options: these are the flags a --vary may name.
  const trainingOptions: readonly Option[] = [...command.options];
  command
    .option('--vary <flag=values>', 'a flag and its values, e.g. --vary image-size=160,224,288 (repeat for more flags)', (v: string, all: string[] = []) => [...all, v])
    .option('--grid', 'run every combination of the --vary values (default: one flag at a time from the base options)')
    .requiredOption('-o, --out <dir>', 'sweep folder: each run goes to <dir>/<flag>=<value>/ (the baseline to <dir>/base/)')
    .option('--json', 'print the results as JSON for scripts')
    .option('-q, --quiet', 'print only warnings, errors and the summary')
    .option('--verbose', 'print stack traces with errors')
    .showHelpAfterError('(run finetune sweep --help for every option)')
    .exitOverride()
    .action(async (data: string, allFlags: Record<string, unknown>) => {
      const flags = allFlags as unknown as SweepFlags;
      const baseFlags = Object.fromEntries(trainingOptions.map((o) => [o.attributeName(), allFlags[o.attributeName()]]).filter(([, v]) => v !== undefined));
      const exportFormats = (baseFlags.export as string[] | undefined) ?? [];
      exportFormats.forEach(exportFormat); // an unknown format fails now, not after the first run
      const plan = planSweep({
        data,
        baseFlags,
        varySpecs: flags.vary ?? [],
        grid: flags.grid === true,
        trainingOptions,
        toOptions: deps.toFineTuneOptions,
        resolve: (options) => resolveOptions(options),
      });
      checkOutOutsideData(flags.out, data);
      const reporter = consoleReporter({ quiet: flags.quiet ?? false, stream: deps.stderr });
      const same = plan.sameAs.map((s) => `${s.name} is ${s.run}`).join(', ');
      reporter.info(`finetune sweep: ${plan.runs.length} runs into ${flags.out}: ${plan.runs.map((r) => r.name).join(', ')}${same ? ` (${same})` : ''}`);
      const interrupt = deps.interruptOnSignals();
      let results: SweepRunResult[];
      try {
        results = await runSweep({ plan, out: flags.out, reporter, log: (line) => reporter.info(line), signal: interrupt.signal });
      } finally {
        interrupt.release();
      }
      const files = await writeSweepOutputs(path.resolve(flags.out), plan, results);
      if (flags.json) stdout.write(JSON.stringify(sweepJson(flags.out, plan, results, files), null, 2) + '\n');
      else stdout.write(await sweepSummary(flags.out, results, files, stdout));
      const failed = failedRunsError(results);
      if (failed) throw failed;
    });
  return command;
}

/** The same refusal as a single run's, before any run starts (fineTune would only say it at the first run). */
function checkOutOutsideData(out: string, data: string): void {
  const inside = path.relative(path.resolve(data), path.resolve(out));
  if (inside === '' || (!inside.startsWith('..') && !path.isAbsolute(inside))) {
    throw new UsageError(`--out ${out} is inside the data folder: finetune never writes into your data. Choose another --out.`);
  }
}

/** The runs table (as `finetune runs <dir>` prints it, in sweep order), each run's accuracy with its interval, and the files. */
async function sweepSummary(out: string, results: readonly SweepRunResult[], files: string[], stream: NodeJS.WritableStream): Promise<string> {
  const runs = (await Promise.all(results.map((r) => loadRun(r.folder, out)))).filter((r): r is RunSummary => r !== undefined);
  const ran = results.filter((r) => r.status === 'done').length;
  const skipped = results.filter((r) => r.status === 'skipped').length;
  const lines = [`finetune sweep: ${results.length} runs in ${out} (${ran} trained now, ${skipped} complete before${results.length - ran - skipped > 0 ? `, ${results.length - ran - skipped} failed` : ''})`, ''];
  if (runs.length > 0) lines.push(formatRunsTable(runs, { width: terminalWidth(stream) }));
  lines.push('validation accuracy with its 95 % interval:');
  const width = Math.max(...results.map((r) => r.run.name.length));
  for (const r of results) {
    const figure =
      r.valAccuracy === undefined
        ? r.status === 'failed'
          ? `failed: ${abbreviate(r.error ?? '', 160)}`
          : 'no validation accuracy'
        : `${r.valAccuracy.toFixed(3)}${r.valCI95 ? `  (${r.valCI95[0].toFixed(3)}–${r.valCI95[1].toFixed(3)})` : ''}`;
    lines.push(`  ${r.run.name.padEnd(width)}  ${figure}   ${describeRun(r.run)}`);
  }
  lines.push('', `wrote ${files.join(', ')}`);
  return lines.join('\n') + '\n';
}

function terminalWidth(stream: NodeJS.WritableStream): number {
  const columns = (stream as { columns?: number }).columns;
  return typeof columns === 'number' && columns > 40 ? columns : 100;
}

function sweepJson(out: string, plan: SweepPlan, results: readonly SweepRunResult[], files: string[]) {
  return {
    dir: path.resolve(out),
    grid: plan.grid,
    vary: plan.vary.map((v) => ({ flag: v.flag, values: v.values })),
    runs: results.map((r) => ({
      name: r.run.name,
      path: r.folder,
      changes: Object.fromEntries(r.run.changes.map((c) => [c.flag, c.value])),
      values: Object.fromEntries(Object.entries(r.run.values).map(([k, v]) => [k, v ?? formatValue(v)])),
      status: r.status,
      ...(r.error ? { error: r.error } : {}),
      valAccuracy: r.valAccuracy ?? null,
      valCI95: r.valCI95 ?? null,
      valLoss: r.valLoss ?? null,
      testAccuracy: r.testAccuracy ?? null,
      seconds: r.seconds ?? null,
      cpuSeconds: r.cpuSeconds ?? null,
    })),
    files,
  };
}
