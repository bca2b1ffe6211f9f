/**
 * The one way finetune writes CSV cells (history.csv, skipped.csv, predictions.csv, predict's csv and
 * kaggle outputs): RFC 4180 quoting, and text that a spreadsheet would run as a formula neutralised.
 *
 * A text cell starting with `=`, `+`, `-`, `@`, tab or carriage return (OWASP "CSV injection") is
 * written with a `'` in front, and quoted: a spreadsheet shows it as text. A class or file name such as
 * `=HYPERLINK(…)` then cannot run. Numbers are written as numbers (-0.5 stays -0.5). `csvText` undoes
 * the prefix for a cell read back, so --resume still matches file names.
 */

/** Text a spreadsheet may take for a formula; leading quotes are counted so the prefix can be undone. */
const FORMULA_START = /^'*[=+\-@\t\r]/;

/** A CSV cell: numbers as they are; text neutralised when it could be a formula, quoted when it needs it. */
export function csvCell(value: string | number): string {
  if (typeof value === 'number') return String(value);
  if (FORMULA_START.test(value)) return `"'${value.replace(/"/g, '""')}"`;
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** The text a cell written by `csvCell` held, from the cell as a CSV parser returns it (unquoted). */
export function csvText(parsed: string): string {
  return parsed.startsWith("'") && FORMULA_START.test(parsed) ? parsed.slice(1) : parsed;
}

/** A plain decimal number as `String(number)` writes it. */
const NUMBER_TEXT = /^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/**
 * A cell read back from a CSV file (unquoted by the parser), written again: a number stays a number,
 * text is escaped as `csvCell` escapes it (also text an older version wrote without the prefix).
 */
export function csvCellAgain(parsed: string): string {
  return NUMBER_TEXT.test(parsed) ? parsed : csvCell(csvText(parsed));
}

/** One CSV line (without its line end). */
export function csvLine(cells: readonly (string | number)[]): string {
  return cells.map(csvCell).join(',');
}

/** Rows to CSV text with a header line. */
export function toCsv(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  return [header, ...rows].map(csvLine).join('\n') + '\n';
}
