/**
 * top-losses.png: the validation images the model got most wrong, each with its true label, the
 * predicted label and their probabilities — the quickest way to spot mislabelled or odd images.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import sharp from 'sharp';
import type { DiskCache } from '../cache/disk-cache.js';
import { abbreviateMiddle, COLORS, messagePng, svgDocument, text } from './svg.js';

/** One misclassified image. */
export interface TopLossItem {
  path: string;
  trueLabel: string;
  predicted: string;
  /** Probability of the predicted class. */
  probability: number;
  /** Cross-entropy of the true class, −ln p(true). */
  loss: number;
}

export interface TopLossesOptions {
  /** Images per row (default 4). */
  columns?: number;
  /** Thumbnail side in pixels (default 200). */
  thumb?: number;
  /** Most images shown (default 16). */
  limit?: number;
  /** Which images these are, for the title (default 'validation'; e.g. 'test' from `evaluate`). */
  split?: string;
  /**
   * The cache between runs: the finished picture is kept there, keyed by everything drawn in it
   * (the page and each thumbnail's pixels), so a rerun that draws the same picture skips encoding
   * it (the dithered palette PNG costs about 1.5 CPU s).
   */
  cache?: DiskCache;
}

/** Bump when the encoding below changes what it produces from the same page and thumbnails. */
const TOP_LOSSES_ENCODING = 'png palette q90 dither1 effort7 level9 v1';

const THUMB_BACKGROUND = '#f0f0f0';
const PAD = 12;
const CAPTION = 62;
const HEADER = 64;

/**
 * Renders up to `limit` items, highest loss first, as a grid of thumbnails (whole image, letterboxed)
 * with captions. An image that cannot be read becomes a grey placeholder saying so; no items give a
 * picture saying there were no misclassified images.
 */
export async function renderTopLosses(items: readonly TopLossItem[], options: TopLossesOptions = {}): Promise<Buffer> {
  const thumb = Math.max(48, Math.round(options.thumb ?? 200));
  const shown = [...items].sort((a, b) => b.loss - a.loss).slice(0, Math.max(1, options.limit ?? 16));
  const split = options.split ?? 'validation';
  if (items.length === 0) return messagePng(800, 220, 'no misclassified images', `every ${split} image got its true label`);

  const columns = Math.max(1, Math.min(options.columns ?? 4, shown.length));
  const rows = Math.ceil(shown.length / columns);
  const cellWidth = thumb + 2 * PAD;
  const cellHeight = thumb + CAPTION + PAD;
  const width = Math.max(columns * cellWidth + 2 * PAD, 640);
  const height = HEADER + rows * cellHeight + PAD;
  const left0 = (width - columns * cellWidth) / 2;

  const thumbnails = await Promise.all(shown.map((item) => thumbnail(item.path, thumb)));
  const body: string[] = [
    text(PAD + 4, 28, `Top losses: the ${shown.length} worst-classified ${split} image${shown.length === 1 ? '' : 's'}`, {
      size: 17,
      weight: 'bold',
    }),
    text(PAD + 4, 50, 'highest loss first · p: the probability the model gave that class', { size: 12, fill: COLORS.muted }),
  ];
  const composites: sharp.OverlayOptions[] = [];
  shown.forEach((item, i) => {
    const x = Math.round(left0 + (i % columns) * cellWidth + PAD);
    const y = Math.round(HEADER + Math.floor(i / columns) * cellHeight);
    const image = thumbnails[i];
    if (image) {
      composites.push({ input: image, left: x, top: y });
    } else {
      body.push(...placeholder(x, y, thumb));
    }
    body.push(...caption(item, x, y + thumb, thumb));
  });

  const svg = svgDocument(Math.ceil(width), Math.ceil(height), body);
  const key = options.cache ? pictureKey(svg, composites) : undefined;
  const cached = key ? await options.cache!.get('report', key) : undefined;
  if (cached) return Buffer.from(cached.buffer, cached.byteOffset, cached.byteLength);
  const base = sharp(Buffer.from(svg), { density: 72 });
  // Sixteen photos in a truecolour PNG come to ~1.5 MB; a dithered 256-colour palette looks the same
  // at thumbnail size at a fifth of that, which matters because report.html embeds the picture.
  const png = await base.composite(composites).png({ palette: true, quality: 90, dither: 1, effort: 7, compressionLevel: 9 }).toBuffer();
  if (key) await options.cache!.put('report', key, png);
  return png;
}

/** What decides the picture's bytes: the page, each thumbnail and where it goes, sharp's version and the encoding. */
function pictureKey(svg: string, composites: sharp.OverlayOptions[]): string {
  const hash = createHash('sha256').update(svg);
  for (const c of composites) hash.update(`|${c.left},${c.top}|`).update(c.input as Buffer);
  return `top-losses|${TOP_LOSSES_ENCODING}|sharp ${JSON.stringify(sharp.versions)}|${hash.digest('hex')}`;
}

/** The image fitted whole into a thumb × thumb square, upright; undefined when it cannot be read. */
async function thumbnail(file: string, thumb: number): Promise<Buffer | undefined> {
  try {
    return await sharp(file)
      .rotate() // EXIF orientation, as decoding for training does
      .resize(thumb, thumb, { fit: 'contain', background: THUMB_BACKGROUND })
      .flatten({ background: THUMB_BACKGROUND })
      .png()
      .toBuffer();
  } catch {
    return undefined;
  }
}

function placeholder(x: number, y: number, thumb: number): string[] {
  return [
    `<rect x="${x}" y="${y}" width="${thumb}" height="${thumb}" fill="${COLORS.placeholder}"/>`,
    text(x + thumb / 2, y + thumb / 2, 'cannot read image', { size: 13, anchor: 'middle', baseline: 'middle', fill: '#555555' }),
  ];
}

/** Three lines under a thumbnail: predicted (red), true (green), then the loss and the file name. */
function caption(item: TopLossItem, x: number, y: number, thumb: number): string[] {
  const pTrue = Math.exp(-item.loss);
  // Bold DejaVu Sans runs about 0.62 em a character; the label gives way, the probability stays.
  const line = (prefix: string, label: string, p: number) => {
    const suffix = `  p ${p.toFixed(2)}`;
    const room = Math.floor(thumb / (13 * 0.62)) - prefix.length - suffix.length;
    return prefix + abbreviateMiddle(label, Math.max(4, room)) + suffix;
  };
  const predicted = line('pred: ', item.predicted, item.probability);
  const truth = line('true: ', item.trueLabel, pTrue);
  const name = path.basename(item.path);
  const loss = `loss ${item.loss.toFixed(2)} · `;
  const file = loss + abbreviateMiddle(name, Math.max(6, Math.floor(thumb / (11 * 0.56)) - loss.length));
  return [
    text(x, y + 18, predicted, { size: 13, weight: 'bold', fill: COLORS.bad, title: item.predicted }),
    text(x, y + 36, truth, { size: 13, weight: 'bold', fill: COLORS.good, title: item.trueLabel }),
    text(x, y + 53, file, { size: 11, fill: COLORS.muted, title: item.path }),
  ];
}
