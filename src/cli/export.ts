import * as path from 'node:path';
import { Command } from 'commander';
import { UsageError } from '../errors.js';
import { EXPORT_FORMATS, exportFormat, exportRun } from '../export/index.js';

interface ExportFlags {
  format?: string;
  all?: boolean;
  out?: string;
  overwrite?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** `finetune export <run-dir> --format <name> [--out <path>]` or `--all`. */
export function exportCommand(setStatus: (status: number) => void): Command {
  const formats = EXPORT_FORMATS.map((f) => `  ${f.name.padEnd(6)} ${f.description} (default name: ${f.defaultOut})`).join('\n');
  return new Command('export')
    .summary('write a trained model in another format (tfjs, Keras .h5, …)')
    .description(
      'Write a trained model in another format. Every export takes raw RGB values 0–255 at the run\'s input size\n' +
        '(resize as finetune.json says) and gives class probabilities, in the order of finetune.json\'s "classes".\n\nFormats:\n' +
        formats,
    )
    .argument('<run-dir>', 'the folder a training run wrote (holding finetune.json and model/), or its model/ folder')
    .option('-f, --format <name>', `the format: ${EXPORT_FORMATS.map((f) => f.name).join(', ')}`)
    .option('--all', 'write every format, each at its default name inside --out')
    .option('-o, --out <path>', 'the file or folder to write (with --all: the folder for all of them); default <run-dir>/export/<default name>')
    .option('--overwrite', 'replace an existing output')
    .option('-q, --quiet', 'print only errors and the list of files written')
    .option('--verbose', 'print stack traces with errors')
    .showHelpAfterError('(run finetune export --help for every option)')
    .exitOverride()
    .action(async (runDir: string, flags: ExportFlags) => {
      if (flags.all && flags.format !== undefined) throw new UsageError('give --format or --all, not both.');
      if (!flags.all && flags.format === undefined) {
        throw new UsageError(`say what to write: --format ${EXPORT_FORMATS.map((f) => f.name).join('|')}, or --all.`);
      }
      const formats = flags.all ? EXPORT_FORMATS : [exportFormat(flags.format!)];
      const result = await exportRun({
        run: runDir,
        formats,
        out: flags.out,
        overwrite: flags.overwrite ?? false,
        log: flags.quiet ? undefined : (message) => process.stderr.write(`finetune export: ${message}\n`),
      });
      for (const { out } of result.written) process.stdout.write(`${displayPath(out)}\n`);
      setStatus(0);
    });
}

/** Relative to the current folder when below it, else absolute (no ../../ chains). */
function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative === '' || relative.startsWith('..') || path.isAbsolute(relative) ? file : relative;
}
