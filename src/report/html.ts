/**
 * report.html: one self-contained page per run (pictures embedded as data: URIs, no scripts, no
 * external files), readable offline and safe to mail around.
 */
import * as path from 'node:path';
import type { SkippedFile } from '../data/types.js';
import { flagName, formatOptionValue, numberOrUndefined, type RunConfig } from '../runs/config.js';
import type { EpochLogs } from '../train/learner.js';
import type { ClassificationMetrics } from '../train/metrics.js';
import { formatDuration } from './format.js';

export interface ReportInput {
  /** The run's finetune.json contents. */
  config: object;
  /** Validation (or evaluation) metrics; the page says so when absent. */
  metrics?: ClassificationMetrics & { classes: string[] };
  history?: readonly EpochLogs[];
  skipped?: readonly SkippedFile[];
  /** PNG bytes of the pictures to embed. */
  pictures: { curves?: Buffer; confusion?: Buffer; topLosses?: Buffer };
  title?: string;
  /** What the metrics were measured on, for headings (default 'validation'). */
  split?: string;
}

/** The section ids, in page order (tests and links rely on them). */
export const REPORT_SECTIONS = [
  'summary',
  'curves',
  'confusion',
  'top-losses',
  'metrics',
  'per-class',
  'data',
  'options',
  'environment',
  'history',
] as const;

/** Skipped files listed on the page; the rest are counted (skipped.csv has them all). */
const MAX_SKIPPED_ROWS = 500;

/** Renders the report page. Every section is present; one without data says why. */
export function renderReportHtml(input: ReportInput): string {
  const config = input.config as RunConfig;
  const split = input.split ?? 'validation';
  const title = input.title ?? 'finetune report';
  const sections = [
    summarySection(config, input.metrics, split),
    pictureSection('curves', 'Training curves', input.pictures.curves, 'no training history'),
    pictureSection('confusion', 'Confusion matrix', input.pictures.confusion, `no ${split} metrics`),
    pictureSection('top-losses', 'Top losses', input.pictures.topLosses, `no ${split} predictions to rank`),
    metricsSection(input.metrics, split),
    perClassSection(input.metrics, split),
    dataSection(config, input.skipped ?? []),
    optionsSection(config),
    environmentSection(config),
    historySection(input.history ?? []),
  ];
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(title)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    `<header><h1>${escapeHtml(title)}</h1>${headerLine(config)}${nav()}</header>`,
    ...sections,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

const STYLE = `
body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif; color: #222; max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0.5rem 0 0.25rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
nav a { margin-right: 0.8rem; font-size: 0.9rem; }
.meta { color: #666; font-size: 0.9rem; }
.cards { display: flex; flex-wrap: wrap; gap: 0.75rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 0.9rem; min-width: 8rem; }
.card .value { font-size: 1.35rem; font-weight: 600; }
.card .label { color: #666; font-size: 0.85rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { padding: 0.2rem 0.7rem; border-bottom: 1px solid #eee; text-align: left; }
th { background: #f6f6f6; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 1px solid #ccc; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.none { color: #888; font-style: italic; }
code { font-size: 0.85rem; }
details summary { cursor: pointer; color: #444; }
`;

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A PNG as a data: URI, so the page needs no other file. */
export function pngDataUri(png: Buffer): string {
  return `data:image/png;base64,${png.toString('base64')}`;
}

const fixed = (x: number | undefined, digits = 4): string => (x === undefined ? '—' : x.toFixed(digits));
const percent = (x: number | undefined): string => (x === undefined ? '—' : `${(100 * x).toFixed(1)}%`);
const none = (message: string): string => `<p class="none">${escapeHtml(message)}</p>`;

function section(id: (typeof REPORT_SECTIONS)[number], heading: string, content: string): string {
  return `<section id="${id}">\n<h2>${escapeHtml(heading)}</h2>\n${content}\n</section>`;
}

/** A table; cells are escaped unless given as {html}. Columns listed in `numeric` are right-aligned. */
function table(header: string[] | null, rows: (string | { html: string })[][], numeric: number[] = [], totalRow = false): string {
  const cell = (tag: 'th' | 'td', value: string | { html: string }, i: number) =>
    `<${tag}${numeric.includes(i) ? ' class="num"' : ''}>${typeof value === 'string' ? escapeHtml(value) : value.html}</${tag}>`;
  const head = header ? `<tr>${header.map((h, i) => cell('th', h, i)).join('')}</tr>` : '';
  const body = rows.map((row, r) => {
    const total = totalRow && r === rows.length - 1 ? ' class="total"' : '';
    return `<tr${total}>${row.map((v, i) => cell('td', v, i)).join('')}</tr>`;
  });
  return `<table>\n${head ? head + '\n' : ''}${body.join('\n')}\n</table>`;
}

function headerLine(config: RunConfig): string {
  const parts: string[] = [];
  if (config.backbone?.name) parts.push(`${config.backbone.name}${config.backbone.alpha !== undefined ? ` α=${config.backbone.alpha}` : ''}`);
  if (config.classes) parts.push(`${config.classes.length} classes`);
  if (config.data?.root) parts.push(`data ${config.data.root}`);
  if (config.created) parts.push(`created ${config.created}`);
  if (config.checkpoint && !config.results) parts.push('incomplete run (no final results yet)');
  return `<p class="meta">${escapeHtml(parts.join(' · '))}</p>`;
}

function nav(): string {
  const names: Record<string, string> = { 'top-losses': 'top losses', 'per-class': 'per class' };
  return `<nav>${REPORT_SECTIONS.map((id) => `<a href="#${id}">${escapeHtml(names[id] ?? id)}</a>`).join('')}</nav>`;
}

function summarySection(config: RunConfig, metrics: ReportInput['metrics'], split: string): string {
  const results = config.results;
  const cards: [string, string][] = [];
  const accuracy = metrics?.accuracy ?? numberOrUndefined(results?.valAccuracy);
  const loss = metrics?.loss ?? numberOrUndefined(results?.valLoss);
  const folds = metrics ? undefined : results?.folds;
  if (folds) {
    // --folds: the folds' mean ± sd (the model written has no held-out images of its own).
    cards.push([`${split} accuracy, mean ± sd over ${folds.k} folds`, `${percent(accuracy)} ± ${percent(folds.sd?.accuracy)}`]);
    cards.push([`${split} loss, mean ± sd over ${folds.k} folds`, `${fixed(loss)} ± ${fixed(folds.sd?.loss)}`]);
  } else {
    cards.push([`${split} accuracy`, percent(accuracy)]);
    cards.push([`${split} loss`, fixed(loss)]);
  }
  if (metrics) cards.push(['balanced accuracy', percent(metrics.balancedAccuracy)]);
  if (metrics?.rocAuc !== undefined) cards.push(['ROC AUC', fixed(metrics.rocAuc)]);
  const testAccuracy = numberOrUndefined(results?.testAccuracy);
  if (testAccuracy !== undefined) cards.push(['test accuracy (test/<class>/, unseen in training)', percent(testAccuracy)]);
  if (metrics) cards.push([`${split} images`, String(metrics.samples)]);
  if (results?.bestEpoch) cards.push(['kept epoch', `stage ${results.bestEpoch.stage}, epoch ${results.bestEpoch.epoch}`]);
  const seconds = numberOrUndefined(results?.seconds);
  if (seconds !== undefined) cards.push(['wall time', formatDuration(seconds)]);
  const html = cards
    .map(([label, value]) => `<div class="card"><div class="value">${escapeHtml(value)}</div><div class="label">${escapeHtml(label)}</div></div>`)
    .join('\n');
  return section('summary', 'Summary', `<div class="cards">\n${html}\n</div>`);
}

function pictureSection(id: 'curves' | 'confusion' | 'top-losses', heading: string, png: Buffer | undefined, missing: string): string {
  const file = `${id}.png`;
  return section(id, heading, png ? `<img src="${pngDataUri(png)}" alt="${escapeHtml(heading)} (${file})">` : none(`${missing}: no picture`));
}

function metricsSection(metrics: ReportInput['metrics'], split: string): string {
  if (!metrics) return section('metrics', 'Metrics', none(`no ${split} set, so no metrics`));
  const rows: string[][] = [
    ['images', String(metrics.samples)],
    ['accuracy', fixed(metrics.accuracy)],
    ['loss (mean cross-entropy)', fixed(metrics.loss)],
    ['balanced accuracy (mean recall)', fixed(metrics.balancedAccuracy)],
  ];
  if (metrics.rocAuc !== undefined) rows.push([`ROC AUC (${metrics.classes[1] ?? 'second class'} as positive)`, fixed(metrics.rocAuc)]);
  else if (metrics.rocAucMacro !== undefined) rows.push(['ROC AUC (macro, one-vs-rest)', fixed(metrics.rocAucMacro)]);
  if (metrics.accuracyCI95) rows.push(['accuracy, 95 % interval (Wilson)', `${fixed(metrics.accuracyCI95[0])}–${fixed(metrics.accuracyCI95[1])}`]);
  const f1s = Object.values(metrics.perClass).filter((c) => c.support > 0).map((c) => c.f1);
  if (f1s.length > 0) rows.push(['macro F1 (classes with images)', fixed(f1s.reduce((a, b) => a + b, 0) / f1s.length)]);
  return section('metrics', `Metrics (${split})`, table(['metric', 'value'], rows, [1]));
}

function perClassSection(metrics: ReportInput['metrics'], split: string): string {
  if (!metrics) return section('per-class', 'Per class', none(`no ${split} set, so no per-class metrics`));
  const rows = metrics.classes.map((name) => {
    const c = metrics.perClass[name];
    return [name, fixed(c?.precision), fixed(c?.recall), fixed(c?.f1), String(c?.support ?? 0)];
  });
  return section('per-class', `Per class (${split})`, table(['class', 'precision', 'recall', 'F1', 'images'], rows, [1, 2, 3, 4]));
}

function dataSection(config: RunConfig, skipped: readonly SkippedFile[]): string {
  const data = config.data;
  if (!data) return section('data', 'Data', none('finetune.json has no data summary'));
  const classes = config.classes ?? [...new Set([...Object.keys(data.train ?? {}), ...Object.keys(data.valid ?? {})])];
  const count = (split: Record<string, number> | undefined, name: string) => split?.[name] ?? 0;
  const sum = (split: Record<string, number> | undefined) => Object.values(split ?? {}).reduce((a, b) => a + b, 0);
  const rows = classes.map((name) => [name, String(count(data.train, name)), String(count(data.valid, name))]);
  rows.push(['total', String(sum(data.train)), String(sum(data.valid))]);
  const facts: [string, string][] = [
    ['folder', data.root ?? '—'],
    ['validation images from', data.validSource ?? '—'],
    ['test images (unlabelled)', String(data.test ?? 0)],
    // The list given wins over finetune.json's count: `evaluate` passes its own.
    ['skipped files', String(skipped.length > 0 ? skipped.length : (data.skipped ?? 0))],
    ['ignored: hidden / not an image', `${data.ignored?.hidden ?? 0} / ${data.ignored?.notImage ?? 0}`],
    ['fingerprint (which files, split, label)', data.fingerprint ?? '—'],
  ];
  const parts = [
    table(['class', 'train', 'valid'], rows, [1, 2], true),
    table(null, facts.map(([k, v]) => [k, v])),
    skippedTable(skipped, data.root),
  ];
  return section('data', 'Data', parts.join('\n'));
}

function skippedTable(skipped: readonly SkippedFile[], root: string | undefined): string {
  if (skipped.length === 0) return '<p>No files were skipped.</p>';
  const shown = skipped.slice(0, MAX_SKIPPED_ROWS);
  const name = (file: string) => {
    if (!root || !path.isAbsolute(file)) return file;
    const rel = path.relative(root, file);
    return rel.startsWith('..') ? file : rel.split(path.sep).join('/');
  };
  const more = skipped.length > shown.length ? `<p>… and ${skipped.length - shown.length} more (see skipped.csv).</p>` : '';
  return (
    `<details${skipped.length <= 20 ? ' open' : ''}><summary>${skipped.length} skipped file${skipped.length === 1 ? '' : 's'}</summary>\n` +
    table(['file', 'split', 'reason'], shown.map((s) => [name(s.path), s.split || '—', s.reason])) +
    `\n${more}</details>`
  );
}

function optionsSection(config: RunConfig): string {
  const training = config.training;
  if (!training) return section('options', 'Options', none('finetune.json has no training options'));
  const rows = Object.entries(training).map(([key, value]) => [{ html: `<code>--${escapeHtml(flagName(key))}</code>` }, formatOptionValue(value)]);
  const input = config.input;
  if (input) {
    rows.push([{ html: 'input' }, `${input.size ?? '?'}×${input.size ?? '?'}×${input.channels ?? 3}, resize ${input.resize ?? '?'}`]);
    if (input.preprocessing !== undefined) rows.push([{ html: 'preprocessing' }, formatOptionValue(input.preprocessing)]);
  }
  if (config.backbone?.weights) rows.push([{ html: 'weights loaded from' }, config.backbone.weights]);
  return section('options', 'Options', table(['option', 'value'], rows));
}

function environmentSection(config: RunConfig): string {
  const rows: string[][] = [];
  if (config.engine) rows.push(['backend', config.engine.detail ?? config.engine.backend ?? '—']);
  for (const [name, version] of Object.entries(config.versions ?? {})) rows.push([name, version ?? '—']);
  const stages = config.results?.stageSeconds ?? [];
  stages.forEach((s, i) => rows.push([`stage ${i + 1} time`, formatDuration(s)]));
  const seconds = numberOrUndefined(config.results?.seconds);
  if (seconds !== undefined) rows.push(['total time', formatDuration(seconds)]);
  if (config.created) rows.push(['created', config.created]);
  return section('environment', 'Environment', rows.length > 0 ? table(null, rows) : none('not recorded'));
}

function historySection(history: readonly EpochLogs[]): string {
  if (history.length === 0) return section('history', 'History', none('no training history'));
  const rows = history.map((h) => [
    String(h.stage),
    String(h.epoch),
    fixed(h.loss),
    fixed(h.accuracy),
    fixed(numberOrUndefined(h.valLoss)),
    fixed(numberOrUndefined(h.valAccuracy)),
    String(Number(h.lr.toPrecision(6))),
    h.seconds.toFixed(1),
  ]);
  return section(
    'history',
    'History',
    `<details><summary>${history.length} epochs</summary>\n` +
      table(['stage', 'epoch', 'loss', 'accuracy', 'val loss', 'val accuracy', 'lr', 'seconds'], rows, [0, 1, 2, 3, 4, 5, 6, 7]) +
      '\n</details>',
  );
}
