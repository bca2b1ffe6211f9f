/**
 * The check that a pair the perceptual hash finds close is one photo twice: the two images' colour
 * thumbnails (32×32 RGB, of the whole picture or of a 90 % crop, whichever pairing matches best)
 * correlate almost perfectly when one is a resized, re-encoded, trimmed or brightened copy of the
 * other (0.94–0.99), and much less for two photos that only share a layout (a pale flower on a dark
 * background: up to 0.91 in flowers_kaggle_128). Each thumbnail is centred and scaled as a whole,
 * not channel by channel, so brightness and contrast changes cancel out but colour differences (a
 * white rose against a yellow one) count. Numbers: near.ts.
 */
import { bestAlignment, cropRegions, type Region } from './phash.js';

/** Side of the colour thumbnails compared. */
const SIDE = 32;

/** A `SIDE × SIDE × 3` thumbnail of a square part of a `size × size × 3` RGB image, centred and scaled to unit variance. */
export function normalizedThumbnail(pixels: Uint8Array, size: number, region: Region): Float32Array {
  const sum = new Float64Array(SIDE * SIDE * 3);
  const count = new Float64Array(SIDE * SIDE);
  for (let y = region.y; y < region.y + region.side; y++) {
    const row = Math.floor(((y - region.y) * SIDE) / region.side) * SIDE;
    for (let x = region.x; x < region.x + region.side; x++) {
      const cell = row + Math.floor(((x - region.x) * SIDE) / region.side);
      const i = (y * size + x) * 3;
      sum[cell * 3]! += pixels[i]!;
      sum[cell * 3 + 1]! += pixels[i + 1]!;
      sum[cell * 3 + 2]! += pixels[i + 2]!;
      count[cell]! += 1;
    }
  }
  let mean = 0;
  for (let k = 0; k < sum.length; k++) mean += (sum[k]! /= count[Math.floor(k / 3)]!);
  mean /= sum.length;
  let variance = 0;
  for (const v of sum) variance += (v - mean) ** 2;
  const scale = 1 / (Math.sqrt(variance / sum.length) || 1);
  return Float32Array.from(sum, (v) => (v - mean) * scale);
}

/** The thumbnails of an image's whole picture and 90 % crops (cropRegions order). */
export function alignedThumbnails(pixels: Uint8Array, size: number): Float32Array[] {
  return cropRegions(size).map((region) => normalizedThumbnail(pixels, size, region));
}

function correlation(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) s += a[k]! * b[k]!;
  return s / a.length;
}

/** The best correlation (−1 … 1) of two images' thumbnails over the crop pairings (as cropTolerantDistance pairs hashes). */
export function alignedCorrelation(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  return bestAlignment(Math.min(a.length, b.length), (i, j) => correlation(a[i]!, b[j]!), (x, y) => x > y);
}
