import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { csvCell, csvText, toCsv } from '../src/io/csv.js';
import { predictionsCsv, writeHistoryCsv, writeSkippedCsv } from '../src/io/run-outputs.js';
import { Formatter, parseCsv, readRecords } from '../src/predict/formats.js';
import { openOutputFile } from '../src/predict/output.js';
import type { Prediction } from '../src/predict/predict.js';

const dir = mkdtempSync(path.join(tmpdir(), 'finetune-csv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HYPERLINK = '=HYPERLINK("http://127.0.0.1/x","click")';
/** Cells a spreadsheet would run as formulas (OWASP CSV injection). */
const FORMULAS = [HYPERLINK, '-1+2', '+1', '@SUM(A1)', '\tx', '\rx', "'=already quoted"];

/** True when a spreadsheet would take the parsed cell for a formula. */
const runsAsFormula = (cell: string) => /^[=+\-@\t\r]/.test(cell);

describe('csvCell', () => {
  it('writes formula-like text with a quote in front, quoted, and numbers as numbers', () => {
    expect(csvCell(HYPERLINK)).toBe(`"'=HYPERLINK(""http://127.0.0.1/x"",""click"")"`);
    expect(csvCell('-1+2')).toBe(`"'-1+2"`);
    expect(csvCell('@x')).toBe(`"'@x"`);
    expect(csvCell('\tx')).toBe(`"'\tx"`);
    expect(csvCell(-0.5)).toBe('-0.5');
    expect(csvCell(1e-7)).toBe('1e-7');
    expect(csvCell('cat')).toBe('cat');
    expect(csvCell("it's")).toBe("it's");
    expect(csvCell('a,b')).toBe('"a,b"');
  });

  it('reads back to the text that was written', () => {
    const cells = [...FORMULAS, 'plain', "'quoted", 'a "b", c'];
    const rows = parseCsv(toCsv(['cell'], cells.map((c) => [c])));
    for (const cell of rows.flat()) expect(runsAsFormula(cell), cell).toBe(false);
    expect(rows.slice(1).map((r) => csvText(r[0]!))).toEqual(cells);
  });
});

describe('training run CSVs', () => {
  it('predictions.csv neutralises class and file names, keeps probabilities numbers', () => {
    const classes = [HYPERLINK, '-1+2'];
    const text = predictionsCsv([{ file: '@evil.jpg', probabilities: [0.25, 0.75] }], classes);
    const [header, row] = parseCsv(text);
    expect(header).toEqual(['file', 'label', 'confidence', `'${HYPERLINK}`, "'-1+2"]);
    expect(row).toEqual(["'@evil.jpg", "'-1+2", '0.75', '0.25', '0.75']);
  });

  it('skipped.csv neutralises file names and reasons', async () => {
    const file = path.join(dir, 'skipped.csv');
    await writeSkippedCsv(file, [{ path: path.join(dir, 'cat', '-1+2.jpg'), split: 'train', reason: '=cannot decode' }], dir);
    expect(parseCsv(readFileSync(file, 'utf8'))[1]).toEqual(["cat/-1+2.jpg", 'train', "'=cannot decode"]);
    await writeSkippedCsv(file, [{ path: path.join(dir, '-1+2.jpg'), split: 'train', reason: 'x' }], dir);
    expect(parseCsv(readFileSync(file, 'utf8'))[1]![0]).toBe("'-1+2.jpg");
  });

  it('history.csv keeps negative numbers as numbers', async () => {
    const file = path.join(dir, 'history.csv');
    await writeHistoryCsv(file, [{ stage: 1, epoch: 1, loss: -0.5, accuracy: 0.5, lr: 0.001, seconds: 1 }]);
    expect(readFileSync(file, 'utf8').split('\n')[1]).toBe('1,1,-0.5,0.5,,,0.001,1');
  });
});

describe("predict's csv and kaggle outputs", () => {
  const classes = [HYPERLINK, '-1+2'];
  const labelled: Prediction = {
    file: '=cmd|calc.jpg',
    path: '/x/=cmd|calc.jpg',
    label: '-1+2',
    classIndex: 1,
    confidence: 0.75,
    probabilities: { [HYPERLINK]: 0.25, '-1+2': 0.75 },
    top: [{ label: '-1+2', probability: 0.75 }],
  };
  const failed: Prediction = { file: '+failed.jpg', path: '/x/+failed.jpg', label: null, error: '-cannot decode' };

  it('csv: no cell runs as a formula, and --resume reads the names back', () => {
    const f = new Formatter('csv', { classes, topK: 1 });
    const text = f.begin() + f.record(labelled) + f.record(failed) + f.end();
    const rows = parseCsv(text);
    for (const cell of rows.flat()) expect(runsAsFormula(cell), cell).toBe(false);
    expect(rows[1]).toEqual(["'=cmd|calc.jpg", "'-1+2", '0.75', '0.25', '0.75', "'-1+2", '0.75', '']);

    const records = readRecords(text, new Formatter('csv', { classes, topK: 1 }), 'out.csv');
    expect(records.map((r) => [r.key, r.ok])).toEqual([
      ['=cmd|calc.jpg', true],
      ['+failed.jpg', false],
    ]);
    // Carried over unchanged, escapes and numbers alike.
    expect(records[0]!.text + '\n').toBe(f.record(labelled));
  });

  it('kaggle: the label column neutralises a class name, and a --proba-of probability stays a number', () => {
    const byLabel = new Formatter('kaggle', { classes });
    expect(byLabel.record(labelled)).toBe(`"'=cmd|calc","'-1+2"\n`);
    const byProbability = new Formatter('kaggle', { classes, probaOf: '-1+2' });
    expect(byProbability.record(labelled)).toBe(`"'=cmd|calc",0.75\n`);
  });

  it('--resume skips a file with a formula-like name that an earlier run labelled', async () => {
    const target = path.join(dir, 'predictions.csv');
    const first = await openOutputFile(target, new Formatter('csv', { classes }));
    await first.sink.write(new Formatter('csv', { classes }).record(labelled));
    await first.sink.commit();
    const again = await openOutputFile(target, new Formatter('csv', { classes }), { resume: true });
    await again.sink.commit();
    expect([...again.done]).toEqual(['=cmd|calc.jpg']);
    expect(parseCsv(readFileSync(target, 'utf8'))[1]![0]).toBe("'=cmd|calc.jpg");
  });
});
