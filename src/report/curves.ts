/**
 * curves.png: training and validation loss and accuracy per epoch, side by side, with the stage
 * boundary and learning-rate changes marked — the picture that shows over- and underfitting.
 */
import type { EpochLogs } from '../train/learner.js';
import {
  COLORS,
  formatLr,
  formatTick,
  messagePng,
  niceTicks,
  round,
  svgDocument,
  svgToPng,
  text,
  textWidth,
} from './svg.js';

export interface CurvesOptions {
  /** The epoch whose weights were kept (finetune.json results.bestEpoch): ringed on the validation curves. */
  best?: { stage: number; epoch: number } | null;
  width?: number;
  height?: number;
}

/** A plot rectangle in pixels. */
interface Box {
  left: number;
  top: number;
  width: number;
  height: number;
}

interface Series {
  values: (number | undefined)[];
  color: string;
}

/** A label in the strip above the plots (learning rates, stage boundary), at a between-epoch x. */
interface StripMark {
  /** Global epoch position (1-based); marks sit between epochs, at x - 0.5. */
  at: number;
  label: string;
  kind: 'start' | 'stage' | 'lr';
}

const STRIP_FONT = 11;

/**
 * Renders the history as a PNG (default 1000×420): loss on the left, accuracy on the right.
 * Stage-2 epochs continue the x axis after stage 1; a dashed line marks the boundary and dotted
 * lines mark learning-rate changes, each labelled with the new rate. Missing or non-finite values
 * (no validation set, a diverged loss) leave gaps.
 */
export async function renderCurves(history: readonly EpochLogs[], options: CurvesOptions = {}): Promise<Buffer> {
  const width = options.width ?? 1000;
  const height = options.height ?? 420;
  if (history.length === 0) return messagePng(width, height, 'no training history');

  const n = history.length;
  const marks = stripMarks(history);
  const bestIndex = options.best ? history.findIndex((h) => h.stage === options.best!.stage && h.epoch === options.best!.epoch) : -1;
  const gap = 70;
  const plotTop = 90;
  const plotBottom = height - 55;
  const panelWidth = (width - 60 - 25 - gap) / 2;
  const panels = [
    {
      title: 'Loss',
      box: { left: 60, top: plotTop, width: panelWidth, height: plotBottom - plotTop },
      series: [
        { values: history.map((h) => finite(h.loss)), color: COLORS.train },
        { values: history.map((h) => finite(h.valLoss)), color: COLORS.valid },
      ],
      domain: lossDomain(history),
    },
    {
      title: 'Accuracy',
      box: { left: 60 + panelWidth + gap, top: plotTop, width: panelWidth, height: plotBottom - plotTop },
      series: [
        { values: history.map((h) => finite(h.accuracy)), color: COLORS.train },
        { values: history.map((h) => finite(h.valAccuracy)), color: COLORS.valid },
      ],
      domain: accuracyDomain(history),
    },
  ];

  const body: string[] = [legend(width, history.some((h) => finite(h.valLoss) !== undefined), marks)];
  for (const panel of panels) {
    body.push(text(panel.box.left, 52, panel.title, { size: 15, weight: 'bold' }));
    body.push(...axes(panel.box, n, panel.domain));
    body.push(...markLines(panel.box, n, marks));
    for (const series of panel.series) body.push(...line(panel.box, n, panel.domain, series));
    if (bestIndex >= 0) body.push(...bestRing(panel.box, n, panel.domain, panel.series, bestIndex));
  }
  return svgToPng(svgDocument(width, height, body));
}

const finite = (x: number | undefined): number | undefined => (x !== undefined && Number.isFinite(x) ? x : undefined);

/** Loss from 0 to a round number above the largest value. */
function lossDomain(history: readonly EpochLogs[]): { min: number; max: number; ticks: number[] } {
  const values = history.flatMap((h) => [finite(h.loss), finite(h.valLoss)]).filter((v): v is number => v !== undefined);
  const max = values.length > 0 ? Math.max(...values) : 1;
  return niceTicks(0, max > 0 ? max : 1, 5);
}

/** Accuracy up to 1, from a tenth below the lowest value, so small differences near the top show. */
function accuracyDomain(history: readonly EpochLogs[]): { min: number; max: number; ticks: number[] } {
  const values = history.flatMap((h) => [finite(h.accuracy), finite(h.valAccuracy)]).filter((v): v is number => v !== undefined);
  const low = values.length > 0 ? Math.min(...values) : 0;
  const min = Math.max(0, Math.min(0.9, Math.floor(low * 10 - 1e-9) / 10));
  return niceTicks(min, 1, 5);
}

/** Where the learning rate starts, where stage 2 starts and where it changes within a stage. */
export function stripMarks(history: readonly EpochLogs[]): StripMark[] {
  const marks: StripMark[] = [{ at: 1, label: `lr ${formatLr(history[0]!.lr)}`, kind: 'start' }];
  for (let i = 1; i < history.length; i++) {
    const h = history[i]!;
    const previous = history[i - 1]!;
    if (h.stage !== previous.stage) {
      marks.push({ at: i + 1, label: `stage ${h.stage} · lr ${formatLr(h.lr)}`, kind: 'stage' });
    } else if (h.lr !== previous.lr) {
      marks.push({ at: i + 1, label: `lr ${formatLr(h.lr)}`, kind: 'lr' });
    }
  }
  return marks;
}

/** x of a (1-based, possibly fractional) epoch position: epochs sit at the centres of n equal slots. */
function xOf(box: Box, n: number, at: number): number {
  return box.left + ((at - 0.5) / n) * box.width;
}

function yOf(box: Box, domain: { min: number; max: number }, v: number): number {
  return box.top + box.height - ((v - domain.min) / (domain.max - domain.min)) * box.height;
}

function axes(box: Box, n: number, domain: { min: number; max: number; ticks: number[] }): string[] {
  const out: string[] = [];
  const right = box.left + box.width;
  const bottom = box.top + box.height;
  for (const t of domain.ticks) {
    const y = yOf(box, domain, t);
    out.push(`<line x1="${round(box.left)}" y1="${round(y)}" x2="${round(right)}" y2="${round(y)}" stroke="${COLORS.grid}"/>`);
    out.push(text(box.left - 8, y, formatTick(t), { size: 12, anchor: 'end', baseline: 'middle', fill: COLORS.muted }));
  }
  for (const e of epochTicks(n)) {
    const x = xOf(box, n, e);
    out.push(`<line x1="${round(x)}" y1="${bottom}" x2="${round(x)}" y2="${bottom + 5}" stroke="${COLORS.axis}"/>`);
    out.push(text(x, bottom + 19, String(e), { size: 12, anchor: 'middle', fill: COLORS.muted }));
  }
  out.push(`<rect x="${round(box.left)}" y="${box.top}" width="${round(box.width)}" height="${box.height}" fill="none" stroke="${COLORS.axis}"/>`);
  out.push(text(box.left + box.width / 2, bottom + 40, 'epoch', { size: 13, anchor: 'middle', fill: COLORS.muted }));
  return out;
}

/** Every epoch up to 20, else a round step; always the first. */
function epochTicks(n: number): number[] {
  const step = n <= 20 ? 1 : [2, 5, 10, 20, 25, 50, 100, 200, 500, 1000].find((s) => n / s <= 15) ?? Math.ceil(n / 10);
  const ticks = [1];
  for (let e = step; e <= n; e += step) if (e !== 1) ticks.push(e);
  return ticks;
}

/** Vertical lines at the stage boundary (dashed) and learning-rate changes (dotted), labelled above the plot. */
function markLines(box: Box, n: number, marks: StripMark[]): string[] {
  const out: string[] = [];
  const bottom = box.top + box.height;
  // Labels sit in up to two rows above the plot; a label that fits in neither is left out.
  const rows = [box.top - 8, box.top - 22];
  const taken: [number, number][][] = rows.map(() => []);
  // The stage boundary claims its label's place first: it matters more than any one lr change.
  const byPriority = [...marks].sort((a, b) => priority(a) - priority(b));
  for (const mark of byPriority) {
    const x = mark.kind === 'start' ? box.left + 4 : xOf(box, n, mark.at - 0.5);
    if (mark.kind !== 'start') {
      const stage = mark.kind === 'stage';
      out.push(
        `<line x1="${round(x)}" y1="${box.top - (stage ? 14 : 4)}" x2="${round(x)}" y2="${bottom}" ` +
          `stroke="${stage ? COLORS.stage : COLORS.lr}" stroke-width="${stage ? 1.5 : 1.2}" stroke-dasharray="${stage ? '6 4' : '2 3'}"/>`,
      );
    }
    const w = textWidth(mark.label, STRIP_FONT);
    // Labels start at their line; near the right edge they end at it instead.
    const anchorEnd = mark.kind !== 'start' && x + 3 + w > box.left + box.width;
    const x0 = anchorEnd ? x - 3 - w : mark.kind === 'start' ? x : x + 3;
    const row = rows.findIndex((_, r) => taken[r]!.every(([a, b]) => x0 + w < a || x0 > b));
    if (row < 0) continue;
    taken[row]!.push([x0 - 4, x0 + w + 4]);
    out.push(
      text(anchorEnd ? x - 3 : x0, rows[row]!, mark.label, {
        size: STRIP_FONT,
        anchor: anchorEnd ? 'end' : 'start',
        fill: mark.kind === 'lr' || mark.kind === 'start' ? COLORS.lr : COLORS.stage,
        weight: mark.kind === 'stage' ? 'bold' : 'normal',
      }),
    );
  }
  return out;
}

function priority(mark: StripMark): number {
  return mark.kind === 'stage' ? 0 : mark.kind === 'start' ? 1 : 2;
}

/** A polyline with gaps where values are missing, and dots on the points when there are few. */
function line(box: Box, n: number, domain: { min: number; max: number }, series: Series): string[] {
  const out: string[] = [];
  let d = '';
  let pen = false;
  const dots: string[] = [];
  const radius = n <= 40 ? 3.5 : n <= 100 ? 2 : 0;
  series.values.forEach((v, i) => {
    if (v === undefined) {
      pen = false;
      return;
    }
    const x = round(xOf(box, n, i + 1));
    const y = round(yOf(box, domain, v));
    d += `${pen ? 'L' : 'M'}${x} ${y} `;
    pen = true;
    // A lone point between gaps would be invisible without its dot.
    const lone = series.values[i - 1] === undefined && series.values[i + 1] === undefined;
    if (radius > 0 || lone) dots.push(`<circle cx="${x}" cy="${y}" r="${radius || 2.5}" fill="${series.color}"/>`);
  });
  if (d) out.push(`<path d="${d.trim()}" fill="none" stroke="${series.color}" stroke-width="2" stroke-linejoin="round"/>`);
  out.push(...dots);
  return out;
}

/** A ring around the validation value (or the training value without validation) of the kept epoch. */
function bestRing(box: Box, n: number, domain: { min: number; max: number }, series: Series[], index: number): string[] {
  const value = series[1]!.values[index] ?? series[0]!.values[index];
  if (value === undefined) return [];
  const x = xOf(box, n, index + 1);
  const y = yOf(box, domain, value);
  return [
    `<circle cx="${round(x)}" cy="${round(y)}" r="8" fill="none" stroke="${COLORS.text}" stroke-width="1.5"/>`,
    text(x, y + (y > box.top + box.height - 30 ? -13 : 22), 'kept', { size: 11, anchor: 'middle', fill: COLORS.text }),
  ];
}

/** The legend row across the top. */
function legend(width: number, hasValid: boolean, marks: StripMark[]): string {
  const items: { label: string; draw: (x: number, y: number) => string }[] = [
    { label: 'training', draw: (x, y) => swatch(x, y, COLORS.train, '') },
  ];
  if (hasValid) items.push({ label: 'validation', draw: (x, y) => swatch(x, y, COLORS.valid, '') });
  if (marks.some((m) => m.kind === 'stage')) items.push({ label: 'stage boundary', draw: (x, y) => swatch(x, y, COLORS.stage, '6 4', 1.5) });
  if (marks.some((m) => m.kind === 'lr')) items.push({ label: 'learning-rate change', draw: (x, y) => swatch(x, y, COLORS.lr, '2 3', 1.5) });
  const size = 13;
  const widths = items.map((item) => 30 + textWidth(item.label, size) + 24);
  let x = (width - widths.reduce((a, b) => a + b, 0)) / 2;
  const y = 20;
  return items
    .map((item, i) => {
      const s = item.draw(x, y) + text(x + 30, y, item.label, { size, baseline: 'middle' });
      x += widths[i]!;
      return s;
    })
    .join('\n');
}

function swatch(x: number, y: number, color: string, dash: string, strokeWidth = 2.5): string {
  return `<line x1="${round(x)}" y1="${y}" x2="${round(x + 24)}" y2="${y}" stroke="${color}" stroke-width="${strokeWidth}"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`;
}
