/**
 * Output formats of `finetune predict`, written record by record, and read back for --resume.
 *
 * - csv:    file,label,confidence,<one column per class>[,top1_label,top1_probability,…],error
 * - jsonl:  one JSON object per line
 * - json:   one array, one object per line (so a cut-off file can still be read back)
 * - kaggle: id,label — id is the file name without its extension; the label column holds a
 *           class's probability with `probaOf` (e.g. the Dogs vs. Cats Redux submission)
 */
import * as path from 'node:path';
import { UsageError } from '../errors.js';
import { csvCellAgain, csvLine, csvText } from '../io/csv.js';
import type { Prediction } from './predict.js';

export type OutputFormat = 'csv' | 'jsonl' | 'json' | 'kaggle';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['csv', 'jsonl', 'json', 'kaggle'];

export interface FormatOptions {
  classes: readonly string[];
  /** Number of top-k column pairs / entries (0: none). */
  topK?: number;
  /** kaggle: write this class's probability as the label. */
  probaOf?: string;
}

/** Rounds to 6 significant digits: float32 outputs carry no more, and the files stay short. */
export const roundProbability = (x: number): number => Number(x.toPrecision(6));

/** The JSON object written for a prediction (jsonl and json). */
export function predictionObject(p: Prediction): Record<string, unknown> {
  if (p.error !== undefined) return { file: p.file, label: null, error: p.error };
  const o: Record<string, unknown> = {
    file: p.file,
    label: p.label,
    confidence: roundProbability(p.confidence),
    probabilities: Object.fromEntries(Object.entries(p.probabilities).map(([k, v]) => [k, roundProbability(v)])),
  };
  if (p.top) o.top = p.top.map((t) => ({ label: t.label, probability: roundProbability(t.probability) }));
  if (p.sorted) o.sorted = p.sorted.error ? { error: p.sorted.error } : { [p.sorted.dryRun ? 'wouldGoTo' : 'to']: p.sorted.destination };
  return o;
}

/** The kaggle id of a file: its name without the extension. */
export const kaggleId = (file: string): string => path.basename(file, path.extname(file));

/**
 * Turns predictions into text for one format: `begin()` once, `record()` per prediction (may be ''
 * for a record the format leaves out), `end()` once. `carried()` re-emits a record read back by
 * `readRecords` (for --resume).
 */
export class Formatter {
  private count = 0;
  readonly topK: number;

  constructor(
    readonly format: OutputFormat,
    readonly options: FormatOptions,
  ) {
    if (!OUTPUT_FORMATS.includes(format)) throw new UsageError(`--format ${String(format)} is not valid: use one of ${OUTPUT_FORMATS.join(', ')}.`);
    this.topK = options.topK ?? 0;
    if (options.probaOf !== undefined) {
      if (format !== 'kaggle') throw new UsageError('--proba-of goes with --format kaggle.');
      if (!options.classes.includes(options.probaOf)) {
        throw new UsageError(`--proba-of ${options.probaOf}: the model has no such class; its classes are ${options.classes.join(', ')}.`);
      }
    }
  }

  /** The CSV header fields (csv and kaggle). */
  header(): string[] {
    if (this.format === 'kaggle') return ['id', 'label'];
    const top: string[] = [];
    for (let i = 1; i <= this.topK; i++) top.push(`top${i}_label`, `top${i}_probability`);
    return ['file', 'label', 'confidence', ...this.options.classes, ...top, 'error'];
  }

  begin(): string {
    if (this.format === 'csv' || this.format === 'kaggle') return csvLine(this.header()) + '\n';
    return this.format === 'json' ? '[\n' : '';
  }

  record(p: Prediction): string {
    switch (this.format) {
      case 'csv':
        return this.line(this.csvFields(p));
      case 'kaggle':
        if (p.error !== undefined) return ''; // a submission has no room for errors: they go to stderr
        return this.line([kaggleId(p.file), this.options.probaOf !== undefined ? roundProbability(p.probabilities[this.options.probaOf]!) : p.label]);
      case 'jsonl':
        return JSON.stringify(predictionObject(p)) + '\n';
      case 'json':
        return this.jsonElement(JSON.stringify(predictionObject(p)));
    }
  }

  /** Re-emits a record read back from an earlier output (its `text` as `readRecords` gave it). */
  carried(text: string): string {
    if (this.format === 'json') return this.jsonElement(text);
    this.count++;
    return text + '\n';
  }

  end(): string {
    return this.format === 'json' ? (this.count > 0 ? '\n' : '') + ']\n' : '';
  }

  private line(fields: (string | number)[]): string {
    this.count++;
    return csvLine(fields) + '\n';
  }

  private jsonElement(text: string): string {
    // The comma goes before each element but the first: every complete element then sits on its own line.
    return (this.count++ === 0 ? '' : ',\n') + text;
  }

  private csvFields(p: Prediction): (string | number)[] {
    const k = this.options.classes.length;
    if (p.error !== undefined) return [p.file, '', '', ...new Array<string>(k + 2 * this.topK).fill(''), p.error];
    const top: (string | number)[] = [];
    for (let i = 0; i < this.topK; i++) {
      const t = p.top?.[i];
      top.push(t?.label ?? '', t ? roundProbability(t.probability) : '');
    }
    return [p.file, p.label, roundProbability(p.confidence), ...this.options.classes.map((c) => roundProbability(p.probabilities[c]!)), ...top, ''];
  }

  /** The --resume key of a prediction: its file, or for kaggle its id. */
  key(p: Prediction): string {
    return this.format === 'kaggle' ? kaggleId(p.file) : p.file;
  }
}

/** A complete record of an earlier output. */
export interface ReadRecord {
  /** The file (kaggle: the id). */
  key: string;
  /** False for an error row: --resume tries such files again. */
  ok: boolean;
  /** The record as text, to copy into the new output (`Formatter.carried`). */
  text: string;
}

/**
 * Reads the records of an earlier output of the same format and options (for --resume). A record
 * cut off by an interrupted run (no final newline, or not valid JSON) is left out. Throws a
 * UsageError when the file was written with another format, model or --top-k.
 */
export function readRecords(text: string, formatter: Formatter, where: string): ReadRecord[] {
  const mismatch = (what: string) =>
    new UsageError(
      `--resume: ${where} was written with other options (${what}). Resume with the same model, --format and --top-k, or choose another --output.`,
    );
  if (formatter.format === 'csv' || formatter.format === 'kaggle') {
    const rows = parseCsv(text);
    if (rows.length === 0) return [];
    const header = rows[0]!.map(csvText).join(',');
    const expected = formatter.header().join(',');
    if (header !== expected) throw mismatch(`its header is "${header.slice(0, 200)}", this run writes "${expected.slice(0, 200)}"`);
    const errorColumn = formatter.format === 'csv' ? formatter.header().length - 1 : -1;
    return rows.slice(1).map((fields) => ({
      key: csvText(fields[0] ?? ''),
      ok: errorColumn < 0 || (fields[errorColumn] ?? '') === '',
      text: fields.map(csvCellAgain).join(','),
    }));
  }
  const records: ReadRecord[] = [];
  const expectedClasses = formatter.options.classes.join('\n');
  for (let line of text.split('\n')) {
    if (formatter.format === 'json') {
      line = line.trim().replace(/^\[/, '').replace(/^,/, '').replace(/,$/, '').replace(/\]$/, '').trim();
    }
    if (!line.startsWith('{')) continue;
    let o: { file?: unknown; label?: unknown; error?: unknown; probabilities?: Record<string, unknown>; top?: unknown[] };
    try {
      o = JSON.parse(line);
    } catch {
      continue; // cut off mid-record
    }
    if (typeof o.file !== 'string') continue;
    const ok = o.error === undefined && typeof o.label === 'string';
    if (ok) {
      const classes = Object.keys(o.probabilities ?? {}).join('\n');
      if (classes !== expectedClasses) throw mismatch(`its classes are ${Object.keys(o.probabilities ?? {}).join(', ')}`);
      if ((o.top?.length ?? 0) !== formatter.topK) throw mismatch(`its records have ${o.top?.length ?? 0} top-k entries`);
    }
    records.push({ key: o.file, ok, text: JSON.stringify(o) });
  }
  return records;
}

/**
 * RFC 4180 CSV: quoted fields may hold commas, quotes ("") and newlines. A last record without its
 * line end is dropped (a write cut off mid-line).
 */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else field += ch;
      i++;
      continue;
    }
    if (ch === '"' && field === '') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      if (ch === '\r' && text[i + 1] === '\n') i++;
    } else field += ch;
    i++;
  }
  return rows;
}
