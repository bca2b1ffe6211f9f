/**
 * Small helpers for drawing report pictures as SVG and rendering them to PNG with sharp (librsvg).
 * No drawing library: the pictures are simple enough to write as SVG text.
 */
import sharp from 'sharp';

export { abbreviate, abbreviateMiddle } from './format.js';

/** librsvg resolves fonts through fontconfig; DejaVu Sans is on most Linux systems, else any sans. */
export const FONT = "'DejaVu Sans', sans-serif";

/** Colours shared by the pictures (matplotlib's tab10 where it applies, so plots look familiar). */
export const COLORS = {
  train: '#1f77b4',
  valid: '#ff7f0e',
  text: '#222222',
  muted: '#666666',
  grid: '#e6e6e6',
  axis: '#999999',
  stage: '#555555',
  lr: '#9467bd',
  good: '#1a7f37',
  bad: '#c62828',
  placeholder: '#d0d0d0',
  background: '#ffffff',
} as const;

/** Escapes text for SVG/XML content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

export interface TextOptions {
  size?: number;
  anchor?: 'start' | 'middle' | 'end';
  fill?: string;
  weight?: 'normal' | 'bold';
  /** Degrees, about (x, y). */
  rotate?: number;
  /** 'middle' centres the text vertically on y; default: y is the baseline. */
  baseline?: 'middle' | 'alphabetic' | 'hanging';
  /** Hover text in SVG viewers (e.g. the full class name behind an abbreviation). */
  title?: string;
}

/** One `<text>` element. */
export function text(x: number, y: number, content: string, o: TextOptions = {}): string {
  const attrs = [
    `x="${round(x)}"`,
    `y="${round(y)}"`,
    `font-size="${o.size ?? 13}"`,
    `fill="${o.fill ?? COLORS.text}"`,
  ];
  if (o.anchor && o.anchor !== 'start') attrs.push(`text-anchor="${o.anchor}"`);
  if (o.weight === 'bold') attrs.push('font-weight="bold"');
  if (o.baseline && o.baseline !== 'alphabetic') {
    // librsvg honours dominant-baseline; 'central' centres on the em box, which reads as centred.
    attrs.push(`dominant-baseline="${o.baseline === 'middle' ? 'central' : 'hanging'}"`);
  }
  if (o.rotate) attrs.push(`transform="rotate(${o.rotate} ${round(x)} ${round(y)})"`);
  const title = o.title ? `<title>${escapeXml(o.title)}</title>` : '';
  return `<text ${attrs.join(' ')}>${title}${escapeXml(content)}</text>`;
}

/** Wraps SVG elements into a document of the given size on a white background. */
export function svgDocument(width: number, height: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<rect width="${width}" height="${height}" fill="${COLORS.background}"/>`,
    ...body,
    '</svg>',
  ].join('\n');
}

/** Renders an SVG document to PNG bytes. */
export async function svgToPng(svg: string): Promise<Buffer> {
  // density 72: one SVG unit is one pixel, so the PNG has the SVG's width and height.
  return sharp(Buffer.from(svg), { density: 72 }).png({ compressionLevel: 9 }).toBuffer();
}

/**
 * Width of a text in pixels, estimated (librsvg does not report it): DejaVu Sans averages about
 * 0.6 em per character for mixed text, a little wider than most, so layouts err on the roomy side.
 */
export function textWidth(content: string, size: number): number {
  return content.length * size * 0.6;
}

/** Rounds a coordinate to 0.1 px: shorter SVG, no visible difference. */
export function round(x: number): number {
  return Math.round(x * 10) / 10;
}

/**
 * "Nice" tick values (1, 2, 2.5, 5 × 10^k steps) covering [min, max], about `count` of them.
 * Returns the ticks and the rounded-out domain they span.
 */
export function niceTicks(min: number, max: number, count = 5): { ticks: number[]; min: number; max: number } {
  if (!(max > min)) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    return niceTicks(min - pad, max + pad, count);
  }
  const rough = (max - min) / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? 10 * magnitude;
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = lo; v <= hi + step * 1e-6; v += step) ticks.push(Number(v.toPrecision(12)));
  return { ticks, min: lo, max: hi };
}

/** A tick label without float noise: 0.30000000000000004 → "0.3". */
export function formatTick(v: number): string {
  return String(Number(v.toPrecision(6)));
}

/** A learning rate as people write it, to 3 significant digits: 0.001 → "1e-3", 0.00025 → "2.5e-4". */
export function formatLr(lr: number): string {
  if (lr === 0) return '0';
  return Number(lr.toPrecision(3)).toExponential().replace('e+', 'e');
}

/** Linear interpolation between two #rrggbb colours, t in [0, 1]. */
export function mixColor(from: string, to: string, t: number): string {
  const a = parseHex(from);
  const b = parseHex(to);
  const c = a.map((v, i) => Math.round(v + (b[i]! - v) * Math.min(1, Math.max(0, t))));
  return '#' + c.map((v) => v.toString(16).padStart(2, '0')).join('');
}

function parseHex(color: string): number[] {
  const hex = color.replace('#', '');
  return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

/** Relative luminance-ish brightness in [0, 1], to pick black or white text on a fill. */
export function brightness(color: string): number {
  const [r, g, b] = parseHex(color) as [number, number, number];
  return (0.299 * r + 0.587 * g + 0.114 * b) / 255;
}

/** A picture with one centred message, for when there is nothing to draw. */
export async function messagePng(width: number, height: number, message: string, note?: string): Promise<Buffer> {
  const body = [text(width / 2, height / 2 - (note ? 10 : 0), message, { size: 20, anchor: 'middle', fill: COLORS.muted })];
  if (note) body.push(text(width / 2, height / 2 + 20, note, { size: 13, anchor: 'middle', fill: COLORS.muted }));
  return svgToPng(svgDocument(width, height, body));
}
