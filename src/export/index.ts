/**
 * `finetune export`: the registry of formats and the function that writes one. Each format lives
 * in its own file and implements ExportFormat (./types.ts).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FinetuneError, UsageError } from '../errors.js';
import { locateModel, readModelConfig } from '../predict/classifier.js';
import { kerasFormat } from './keras.js';
import { onnxFormat } from './onnx.js';
import { tfjsFormat } from './tfjs.js';
import { tmFormat } from './tm.js';
import { webFormat } from './web.js';
import type { ExportFormat } from './types.js';

export type { ExportContext, ExportFormat } from './types.js';

/** Every format `finetune export` writes, in --help and --all order. */
export const EXPORT_FORMATS: readonly ExportFormat[] = [tfjsFormat, kerasFormat, onnxFormat, webFormat, tmFormat];

/** The folder `--all` writes into, and where a single export goes without --out: `<run>/export/`. */
export const DEFAULT_EXPORT_DIR = 'export';

export function exportFormat(name: string): ExportFormat {
  const format = EXPORT_FORMATS.find((f) => f.name === name);
  if (format === undefined) {
    throw new UsageError(`--format ${name} is not a format finetune exports; choose one of ${EXPORT_FORMATS.map((f) => f.name).join(', ')}.`);
  }
  return format;
}

export interface ExportRequest {
  /** The run folder (or its model/ folder). */
  run: string;
  formats: readonly ExportFormat[];
  /**
   * One format: the file or folder to write (default `<run>/export/<defaultOut>`).
   * Several: the folder that receives each at its default name (default `<run>/export/`).
   */
  out?: string;
  overwrite?: boolean;
  log?: (message: string) => void;
}

export interface ExportResult {
  runDir: string;
  /** One entry per format: where it went and the files written (relative to that path's folder). */
  written: { format: string; out: string; files: string[] }[];
}

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

/**
 * Writes the requested formats of a finished run. Usage problems (not a run folder, an output that
 * exists without `overwrite`) throw a UsageError before anything is written.
 */
export async function exportRun(request: ExportRequest): Promise<ExportResult> {
  const log = request.log ?? (() => undefined);
  let runDir: string;
  try {
    const location = await locateModel(request.run);
    await readModelConfig(location.configFile);
    runDir = location.runDir;
  } catch (error) {
    if (error instanceof FinetuneError) throw new UsageError(error.message);
    throw error;
  }
  const single = request.formats.length === 1;
  const base = request.out !== undefined && !single ? path.resolve(request.out) : path.join(runDir, DEFAULT_EXPORT_DIR);
  const targets = request.formats.map((format) => ({
    format,
    out: single && request.out !== undefined ? path.resolve(request.out) : path.join(base, format.defaultOut.replace(/\/$/, '')),
  }));
  for (const { out } of targets) {
    const own = [path.join(runDir, 'model'), path.join(runDir, 'finetune.json')];
    if (out === runDir || runDir.startsWith(out + path.sep) || own.some((p) => out === p || out.startsWith(p + path.sep))) {
      throw new UsageError(`--out ${out} would replace the run's own files (${runDir}: finetune.json, model/); choose another path.`);
    }
    if (!request.overwrite && (await exists(out))) {
      throw new UsageError(`${out} exists; pass --overwrite to replace it, or choose another --out.`);
    }
  }
  const written: ExportResult['written'] = [];
  for (const { format, out } of targets) {
    const files = await format.export({ runDir, out, log });
    written.push({ format: format.name, out, files });
  }
  return { runDir, written };
}
