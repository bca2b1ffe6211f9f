/**
 * lr-find.png: the learning-rate range test's loss against the learning rate (log scale), each
 * batch's loss faint and the smoothed loss bold, with the suggested rate marked — fastai's
 * `lr_find` plot.
 */
import type { LrFindResult } from '../train/lr-find.js';
import { COLORS, formatLr, formatTick, messagePng, niceTicks, round, svgDocument, svgToPng, text } from './svg.js';

export async function renderLrFind(result: Pick<LrFindResult, 'lrs' | 'losses' | 'smoothed' | 'suggestion'>, size = { width: 800, height: 480 }): Promise<Buffer> {
  const { width, height } = size;
  const { lrs, losses, smoothed, suggestion } = result;
  if (lrs.length < 2) return messagePng(width, height, 'too few steps to plot');
  const box = { left: 70, top: 50, width: width - 100, height: height - 120 };
  const [lo, hi] = [Math.log10(lrs[0]!), Math.log10(lrs.at(-1)!)];
  const finite = smoothed.filter(Number.isFinite);
  // The y range follows the smoothed curve: single batches spike far above it, and are clipped.
  const domain = niceTicks(Math.min(...finite), Math.max(...finite), 5);
  const x = (lr: number) => box.left + ((Math.log10(lr) - lo) / Math.max(1e-12, hi - lo)) * box.width;
  const y = (v: number) => box.top + box.height - ((Math.min(Math.max(v, domain.min), domain.max) - domain.min) / (domain.max - domain.min)) * box.height;
  const path = (values: number[]) =>
    values
      .map((v, i) => (Number.isFinite(v) ? `${i === 0 || !Number.isFinite(values[i - 1]!) ? 'M' : 'L'}${round(x(lrs[i]!))} ${round(y(v))}` : ''))
      .join(' ');
  const body: string[] = [text(box.left, 30, 'Learning-rate range test', { size: 16, weight: 'bold' })];
  const bottom = box.top + box.height;
  for (const t of domain.ticks) {
    body.push(`<line x1="${box.left}" y1="${round(y(t))}" x2="${box.left + box.width}" y2="${round(y(t))}" stroke="${COLORS.grid}"/>`);
    body.push(text(box.left - 8, y(t), formatTick(t), { size: 12, anchor: 'end', baseline: 'middle', fill: COLORS.muted }));
  }
  for (let e = Math.ceil(lo - 1e-9); e <= Math.floor(hi + 1e-9); e++) {
    const at = x(10 ** e);
    body.push(`<line x1="${round(at)}" y1="${box.top}" x2="${round(at)}" y2="${bottom}" stroke="${COLORS.grid}"/>`);
    body.push(text(at, bottom + 19, `1e${e}`, { size: 12, anchor: 'middle', fill: COLORS.muted }));
  }
  body.push(`<rect x="${box.left}" y="${box.top}" width="${box.width}" height="${box.height}" fill="none" stroke="${COLORS.axis}"/>`);
  body.push(text(box.left + box.width / 2, bottom + 42, 'learning rate (log scale)', { size: 13, anchor: 'middle', fill: COLORS.muted }));
  body.push(text(18, box.top + box.height / 2, 'loss', { size: 13, anchor: 'middle', fill: COLORS.muted }));
  body.push(`<path d="${path(losses)}" fill="none" stroke="${COLORS.train}" stroke-opacity="0.3" stroke-width="1"/>`);
  body.push(`<path d="${path(smoothed)}" fill="none" stroke="${COLORS.train}" stroke-width="2.5" stroke-linejoin="round"/>`);
  const sx = x(suggestion.lr);
  const sy = y(smoothed[suggestion.index]!);
  body.push(`<line x1="${round(sx)}" y1="${box.top}" x2="${round(sx)}" y2="${bottom}" stroke="${COLORS.valid}" stroke-width="1.5" stroke-dasharray="5 4"/>`);
  body.push(`<circle cx="${round(sx)}" cy="${round(sy)}" r="6" fill="${COLORS.valid}"/>`);
  const label = `suggested ${formatLr(suggestion.lr)} (${suggestion.method})`;
  const right = sx > box.left + box.width * 0.65;
  body.push(text(sx + (right ? -8 : 8), box.top + 16, label, { size: 13, anchor: right ? 'end' : 'start', fill: COLORS.valid, weight: 'bold' }));
  return svgToPng(svgDocument(width, height, body));
}
