/** Plain-text output of `finetune runs`: the runs table and the two-run diff. */
import { abbreviateMiddle, formatDuration } from '../report/format.js';
import { flagName, formatOptionValue } from './config.js';
import { diffRuns, differingOptions, type MetricChange, type RunDiff, type RunSummary } from './runs.js';

export interface RunsTableOptions {
  /** Terminal width to fit (default 100): option columns that do not fit are named below the table. */
  width?: number;
}

interface Column {
  header: string;
  align: 'left' | 'right';
  cells: string[];
}

/** Shown in the backbone column, so not repeated as option columns. */
const SHOWN_ELSEWHERE = new Set(['backbone', 'alpha']);
const GAP = '  ';
const MAX_NAME = 36;
const MAX_VALUE = 18;

/**
 * The runs as an aligned table: name, backbone, the options that differ between the runs, the data
 * fingerprint when it differs, validation accuracy and loss (4 decimals) and wall time. Runs keep
 * the order given (see sortRuns).
 */
export function formatRunsTable(runs: readonly RunSummary[], options: RunsTableOptions = {}): string {
  const width = options.width ?? 100;
  const differing = differingOptions(runs).filter((key) => !SHOWN_ELSEWHERE.has(key));
  const incomplete = runs.some((r) => !r.complete);

  const fixed: Column[] = [
    { header: 'name', align: 'left', cells: runs.map((r) => abbreviateMiddle(r.name, MAX_NAME) + (r.complete ? '' : ' *')) },
    { header: 'backbone', align: 'left', cells: runs.map((r) => r.backbone) },
  ];
  const results: Column[] = [
    {
      header: 'val acc',
      align: 'right',
      // A cross-validated run's is the folds' mean: "0.9333 ± 0.058 (3 folds)".
      cells: runs.map((r) => number(r.valAccuracy) + (r.valAccuracySd !== undefined ? ` ± ${r.valAccuracySd.toFixed(3)} (${r.folds} folds)` : '')),
    },
    { header: 'val loss', align: 'right', cells: runs.map((r) => number(r.valLoss)) },
    ...(runs.some((r) => r.testAccuracy !== undefined)
      ? [{ header: 'test acc', align: 'right' as const, cells: runs.map((r) => number(r.testAccuracy)) }]
      : []),
    { header: 'time', align: 'right', cells: runs.map((r) => (r.seconds === undefined ? '—' : formatDuration(r.seconds))) },
  ];
  const optional: Column[] = differing.map((key) => ({
    header: flagName(key),
    align: 'left',
    cells: runs.map((r) => abbreviateMiddle(shortValue(r.config.training?.[key]), MAX_VALUE)),
  }));
  const fingerprints = runs.map((r) => r.config.data?.fingerprint);
  if (new Set(fingerprints).size > 1) {
    optional.push({ header: 'data', align: 'left', cells: fingerprints.map((f) => (f ? f.slice(0, 8) : '—')) });
  }

  // As many option columns as fit the width, narrowest first (a long path should not crowd out
  // three numbers), shown in finetune.json order; the rest are named underneath.
  let used = tableWidth([...fixed, ...results]);
  const shown = new Set<Column>();
  for (const column of [...optional].sort((a, b) => columnWidth(a) - columnWidth(b))) {
    const extra = columnWidth(column) + GAP.length;
    if (used + extra > width) break;
    shown.add(column);
    used += extra;
  }
  const columns = [...fixed, ...optional.filter((c) => shown.has(c)), ...results];
  const left = optional.filter((c) => !shown.has(c)).map((c) => c.header);

  const lines = renderColumns(columns, runs.length);
  if (runs.length > 1 && optional.length === 0) lines.push('', 'All runs have the same options and data.');
  if (left.length > 0) lines.push('', `Also differing (no room): ${left.join(', ')}. See --json, or --diff two runs.`);
  if (incomplete) lines.push('', '* incomplete: no results in finetune.json yet (still training, or stopped early).');
  return lines.join('\n') + '\n';
}

/** An option value for a table cell: a path by its last part (weights folders differ at the end). */
function shortValue(value: unknown): string {
  const text = formatOptionValue(value);
  return typeof value === 'string' && /^([a-zA-Z]:)?[\\/]/.test(value) ? (text.split(/[\\/]/).filter(Boolean).pop() ?? text) : text;
}

const number = (x: number | undefined): string => (x === undefined ? '—' : x.toFixed(4));

function columnWidth(column: Column): number {
  return Math.max(column.header.length, ...column.cells.map((c) => c.length));
}

function tableWidth(columns: Column[]): number {
  return columns.reduce((sum, c) => sum + columnWidth(c), 0) + GAP.length * (columns.length - 1);
}

/** Header, a rule, then one line per row; trailing spaces trimmed. */
function renderColumns(columns: Column[], rows: number): string[] {
  const widths = columns.map(columnWidth);
  const pad = (text: string, i: number) => (columns[i]!.align === 'right' ? text.padStart(widths[i]!) : text.padEnd(widths[i]!));
  const line = (cells: string[]) => cells.map(pad).join(GAP).trimEnd();
  return [
    line(columns.map((c) => c.header)),
    line(widths.map((w) => '-'.repeat(w))),
    ...Array.from({ length: rows }, (_, r) => line(columns.map((c) => c.cells[r]!))),
  ];
}

/** Per-class F1 rows shown before the rest are summarised. */
const MAX_CLASS_ROWS = 10;

/**
 * The diff as text: the two runs, the options that differ (as command-line flags, then data,
 * backend and versions), and each metric's values, change and whether it got better.
 */
export function formatDiff(a: RunSummary, b: RunSummary, diff: RunDiff = diffRuns(a, b)): string {
  const lines = [`a: ${a.name}  (${describe(a)})`, `b: ${b.name}  (${describe(b)})`, ''];

  if (diff.options.length === 0) {
    lines.push('Options: the same (and the same data, backend and versions).');
  } else {
    lines.push(`Options that differ (${diff.options.length}):`);
    const label = (key: string) => (key.includes('.') ? key : `--${flagName(key)}`);
    const value = (v: unknown) => abbreviateMiddle(formatOptionValue(v), 48);
    lines.push(
      ...renderColumns(
        [
          { header: 'option', align: 'left', cells: diff.options.map((o) => label(o.key)) },
          { header: 'a', align: 'left', cells: diff.options.map((o) => value(o.a)) },
          { header: 'b', align: 'left', cells: diff.options.map((o) => value(o.b)) },
        ],
        diff.options.length,
      ).map((l) => '  ' + l),
    );
  }
  lines.push('');

  const general = diff.metrics.filter((m) => !m.key.startsWith('f1:'));
  let perClass = diff.metrics.filter((m) => m.key.startsWith('f1:'));
  if (general.length === 0 && perClass.length === 0) {
    lines.push('Metrics: neither run has results yet.');
    return lines.join('\n') + '\n';
  }
  lines.push('Metrics (change = b - a):');
  lines.push(...metricRows(general, 'metric').map((l) => '  ' + l));
  if (perClass.length > 0) {
    const hidden = Math.max(0, perClass.length - MAX_CLASS_ROWS);
    if (hidden > 0) {
      perClass = [...perClass].sort((x, y) => Math.abs(y.delta ?? 0) - Math.abs(x.delta ?? 0)).slice(0, MAX_CLASS_ROWS);
    }
    lines.push('', hidden > 0 ? `Per-class F1, the ${MAX_CLASS_ROWS} largest changes:` : 'Per-class F1:');
    lines.push(...metricRows(perClass, 'class').map((l) => '  ' + l));
    if (hidden > 0) lines.push(`  … ${hidden} more classes (--json lists them all)`);
  }
  return lines.join('\n') + '\n';
}

function describe(run: RunSummary): string {
  const parts = [run.backbone];
  if (run.created) parts.push(run.created.replace('T', ' ').slice(0, 16));
  if (!run.complete) parts.push('incomplete');
  return parts.join(', ');
}

/** Metrics where a lower value is better. */
const LOWER_IS_BETTER = new Set(['val_loss', 'time']);

function metricRows(metrics: MetricChange[], heading: string): string[] {
  const isTime = (m: MetricChange) => m.key === 'time';
  const show = (m: MetricChange, v: number | undefined) => (v === undefined ? '—' : isTime(m) ? formatDuration(v) : v.toFixed(4));
  const change = (m: MetricChange) => {
    if (m.delta === undefined) return '';
    if (m.delta === 0) return '±0';
    const sign = m.delta > 0 ? '+' : '-';
    return sign + (isTime(m) ? formatDuration(Math.abs(m.delta)) : Math.abs(m.delta).toFixed(4));
  };
  const verdict = (m: MetricChange) => {
    if (m.delta === undefined) return '';
    // Rounded to what is shown: a change invisible at 4 decimals is no change.
    if (isTime(m) ? Math.abs(m.delta) < 0.05 : Math.abs(m.delta) < 5e-5) return 'same';
    const better = LOWER_IS_BETTER.has(m.key) ? m.delta < 0 : m.delta > 0;
    if (isTime(m)) return better ? 'faster' : 'slower';
    return better ? 'better' : 'worse';
  };
  const name = (key: string) => (key.startsWith('f1:') ? key.slice(3) : key.replace(/_/g, ' '));
  return renderColumns(
    [
      { header: heading, align: 'left', cells: metrics.map((m) => abbreviateMiddle(name(m.key), 32)) },
      { header: 'a', align: 'right', cells: metrics.map((m) => show(m, m.a)) },
      { header: 'b', align: 'right', cells: metrics.map((m) => show(m, m.b)) },
      { header: 'change', align: 'right', cells: metrics.map(change) },
      { header: '', align: 'left', cells: metrics.map(verdict) },
    ],
    metrics.length,
  );
}
