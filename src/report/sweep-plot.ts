/**
 * sweep.png: validation accuracy, with its 95 % interval as whiskers, against each varied flag's
 * values, one panel per flag. Numbers sit on a numeric axis (logarithmic when they span 20× or
 * more, as learning rates do); other values are categories in the order given.
 */
import { COLORS, formatTick, niceTicks, round, svgDocument, svgToPng, text, textWidth, abbreviate } from './svg.js';

export interface SweepPoint {
  value: unknown;
  /** Undefined for a failed run or one without a validation set: not drawn. */
  accuracy?: number;
  ci?: [number, number];
}

export interface SweepPanel {
  /** The flag without dashes, e.g. image-size. */
  flag: string;
  /** Every value on this axis, in the order given. */
  values: unknown[];
  /** The base run's value of the flag (ringed and labelled 'base'); undefined for --grid. */
  baseValue?: unknown;
  /** One series for a one-factor sweep; one per combination of the other flags for --grid. */
  series: { label: string; points: SweepPoint[] }[];
}

const PANEL_WIDTH = 460;
const PANEL_HEIGHT = 340;
const PER_ROW = 3;
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

interface Box {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Renders the panels as one PNG, up to three panels a row. */
export async function renderSweep(panels: readonly SweepPanel[]): Promise<Buffer> {
  const columns = Math.max(1, Math.min(PER_ROW, panels.length));
  const rows = Math.max(1, Math.ceil(panels.length / PER_ROW));
  const width = columns * PANEL_WIDTH;
  // --grid: the series' legend goes under each panel, in as many lines as the longest needs.
  const legendLines = Math.max(-1, ...panels.map((p) => legendLayout(p, PANEL_WIDTH - 95).at(-1)?.line ?? -1)) + 1;
  const panelHeight = PANEL_HEIGHT + legendLines * LEGEND_LINE;
  const height = rows * panelHeight;
  const accuracies = panels.flatMap((p) => p.series.flatMap((s) => s.points.flatMap((pt) => [pt.accuracy, ...(pt.ci ?? [])])));
  const domain = accuracyDomain(accuracies.filter((a): a is number => a !== undefined && Number.isFinite(a)));
  const body: string[] = [];
  panels.forEach((panel, i) => {
    const left = (i % PER_ROW) * PANEL_WIDTH;
    const top = Math.floor(i / PER_ROW) * panelHeight;
    body.push(...drawPanel(panel, { left: left + 70, top: top + 60, width: PANEL_WIDTH - 95, height: PANEL_HEIGHT - 125 }, domain));
  });
  return svgToPng(svgDocument(width, height, body));
}

/** The same accuracy axis for every panel, from a tenth below the lowest whisker up to 1. */
function accuracyDomain(values: number[]): { min: number; max: number; ticks: number[] } {
  const low = values.length > 0 ? Math.min(...values) : 0;
  const min = Math.max(0, Math.min(0.9, Math.floor(low * 10 - 1e-9) / 10));
  return niceTicks(min, 1, 5);
}

type XAxis = { kind: 'linear' | 'log' | 'category'; x: (value: unknown) => number; ticks: { at: number; label: string }[] };

function xAxis(values: readonly unknown[], box: Box): XAxis {
  const numbers = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (numbers.length === values.length && numbers.length >= 2 && new Set(numbers).size >= 2) {
    const lo = Math.min(...numbers);
    const hi = Math.max(...numbers);
    const log = lo > 0 && hi / lo >= 20;
    const f = log ? Math.log10 : (v: number) => v;
    // A margin of a tenth either side, so the end points' whiskers and labels stay inside.
    const [a, b] = [f(lo), f(hi)];
    const pad = (b - a) * 0.1;
    const x = (v: unknown) => box.left + ((f(v as number) - (a - pad)) / (b - a + 2 * pad)) * box.width;
    const sorted = [...new Set(numbers)].sort((p, q) => p - q);
    return { kind: log ? 'log' : 'linear', x, ticks: sorted.map((v) => ({ at: x(v), label: formatTick(v) })) };
  }
  const keys = values.map(String);
  const slot = box.width / Math.max(1, keys.length);
  const x = (v: unknown) => box.left + slot * (keys.indexOf(String(v)) + 0.5);
  return { kind: 'category', x, ticks: keys.map((k) => ({ at: x(k), label: abbreviate(k, Math.max(4, Math.floor(slot / 7))) })) };
}

function drawPanel(panel: SweepPanel, box: Box, domain: { min: number; max: number; ticks: number[] }): string[] {
  const out: string[] = [];
  const bottom = box.top + box.height;
  const right = box.left + box.width;
  const axis = xAxis(panel.values, box);
  const y = (v: number) => box.top + box.height - ((v - domain.min) / (domain.max - domain.min)) * box.height;
  out.push(text(box.left, box.top - 32, `--${panel.flag}`, { size: 15, weight: 'bold' }));
  if (axis.kind === 'log') out.push(text(right, box.top - 32, 'log scale', { size: 11, anchor: 'end', fill: COLORS.muted }));
  for (const t of domain.ticks) {
    out.push(`<line x1="${round(box.left)}" y1="${round(y(t))}" x2="${round(right)}" y2="${round(y(t))}" stroke="${COLORS.grid}"/>`);
    out.push(text(box.left - 8, y(t), formatTick(t), { size: 12, anchor: 'end', baseline: 'middle', fill: COLORS.muted }));
  }
  for (const tick of axis.ticks) {
    out.push(`<line x1="${round(tick.at)}" y1="${bottom}" x2="${round(tick.at)}" y2="${bottom + 5}" stroke="${COLORS.axis}"/>`);
    out.push(text(tick.at, bottom + 19, tick.label, { size: 12, anchor: 'middle', fill: COLORS.muted }));
  }
  out.push(`<rect x="${round(box.left)}" y="${box.top}" width="${round(box.width)}" height="${box.height}" fill="none" stroke="${COLORS.axis}"/>`);
  out.push(text(box.left + box.width / 2, bottom + 40, panel.flag, { size: 13, anchor: 'middle', fill: COLORS.muted }));
  out.push(text(box.left - 50, box.top + box.height / 2, 'validation accuracy', { size: 12, anchor: 'middle', fill: COLORS.muted, rotate: -90 }));

  const drawn = panel.series.map((s) => s.points.filter((p) => p.accuracy !== undefined && Number.isFinite(p.accuracy)));
  if (drawn.every((points) => points.length === 0)) {
    out.push(text(box.left + box.width / 2, box.top + box.height / 2, 'no validation accuracy', { size: 14, anchor: 'middle', fill: COLORS.muted }));
    return out;
  }
  // Series side by side around each value, so whiskers of one value do not hide each other.
  const spread = Math.min(24, box.width / Math.max(1, panel.values.length) / 3);
  panel.series.forEach((series, s) => {
    const color = PALETTE[s % PALETTE.length]!;
    const offset = panel.series.length > 1 ? (s - (panel.series.length - 1) / 2) * (spread / Math.max(1, panel.series.length - 1)) : 0;
    const points = drawn[s]!.map((p) => ({ ...p, px: axis.x(p.value) + offset, py: y(p.accuracy!) })).sort((a, b) => a.px - b.px);
    if (axis.kind !== 'category' && points.length > 1) {
      out.push(`<path d="${points.map((p, k) => `${k === 0 ? 'M' : 'L'}${round(p.px)} ${round(p.py)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="1.5" stroke-opacity="0.6"/>`);
    }
    for (const p of points) {
      if (p.ci) {
        const [lo, hi] = [y(p.ci[0]), y(p.ci[1])];
        out.push(`<line x1="${round(p.px)}" y1="${round(lo)}" x2="${round(p.px)}" y2="${round(hi)}" stroke="${color}" stroke-width="1.5"/>`);
        for (const cap of [lo, hi]) out.push(`<line x1="${round(p.px - 5)}" y1="${round(cap)}" x2="${round(p.px + 5)}" y2="${round(cap)}" stroke="${color}" stroke-width="1.5"/>`);
      }
      out.push(`<circle cx="${round(p.px)}" cy="${round(p.py)}" r="4" fill="${color}"/>`);
      // With several series the numbers would pile up: sweep.csv has them.
      if (panel.series.length === 1) out.push(text(p.px + 11, p.py, p.accuracy!.toFixed(3), { size: 11, baseline: 'middle', fill: COLORS.text }));
      if (panel.baseValue !== undefined && String(p.value) === String(panel.baseValue)) {
        out.push(`<circle cx="${round(p.px)}" cy="${round(p.py)}" r="8" fill="none" stroke="${COLORS.text}" stroke-width="1.2"/>`);
        out.push(text(p.px, Math.min(bottom - 6, (p.ci ? y(p.ci[0]) : p.py) + 16), 'base', { size: 11, anchor: 'middle', fill: COLORS.text }));
      }
    }
  });
  for (const item of legendLayout(panel, box.width)) {
    const y = bottom + 62 + item.line * LEGEND_LINE;
    out.push(`<circle cx="${round(box.left + item.x + 5)}" cy="${y}" r="4" fill="${PALETTE[item.series % PALETTE.length]}"/>`);
    out.push(text(box.left + item.x + 13, y, item.label, { size: 11, baseline: 'middle' }));
  }
  return out;
}

const LEGEND_LINE = 16;

/** Where each series' legend entry goes (none for a single series): left to right, wrapping at the panel's width. */
function legendLayout(panel: SweepPanel, width: number): { series: number; label: string; x: number; line: number }[] {
  if (panel.series.length <= 1) return [];
  const items: { series: number; label: string; x: number; line: number }[] = [];
  let x = 0;
  let line = 0;
  panel.series.forEach((series, s) => {
    const label = abbreviate(series.label, 40);
    const w = 13 + textWidth(label, 11) + 12;
    if (x > 0 && x + w > width) {
      x = 0;
      line++;
    }
    items.push({ series: s, label, x, line });
    x += w;
  });
  return items;
}
