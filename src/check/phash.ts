/**
 * A perceptual hash (the DCT "pHash"): a 63-bit fingerprint that survives resizing, re-encoding and
 * brightness changes. The image is shrunk to 32×32 grey, transformed with a 2-D DCT, and each of the
 * 63 lowest-frequency coefficients (the 8×8 corner without the DC term, which only holds the mean
 * brightness) becomes one bit: above or below their median. Photos that are the same picture differ
 * in a few bits; different photos in about half of them.
 */

/** Side of the grey thumbnail the DCT runs on. */
const THUMB = 32;
/** Side of the low-frequency corner kept. */
const KEEP = 8;

/** A 63-bit hash as two 32-bit words. */
export type PerceptualHash = [number, number];

/** Precomputed DCT-II basis: cos((2x + 1) u π / 2N) for u < KEEP, x < THUMB. */
const BASIS: Float64Array = (() => {
  const b = new Float64Array(KEEP * THUMB);
  for (let u = 0; u < KEEP; u++) {
    for (let x = 0; x < THUMB; x++) b[u * THUMB + x] = Math.cos(((2 * x + 1) * u * Math.PI) / (2 * THUMB));
  }
  return b;
})();

/** A square part of an image: its top-left corner and side, in pixels. */
export interface Region {
  x: number;
  y: number;
  side: number;
}

/**
 * Summed-area table of the image's luma (ITU-R BT.601, as most pHash implementations use):
 * `(size + 1)²` entries, so that any rectangle's sum takes four lookups. One pass per image serves
 * the whole picture and all five crops.
 */
export function lumaIntegral(pixels: Uint8Array, size: number): Float64Array {
  if (pixels.length !== size * size * 3) throw new RangeError(`expected ${size}×${size}×3 bytes, got ${pixels.length}`);
  const w = size + 1;
  const table = new Float64Array(w * w);
  for (let y = 0; y < size; y++) {
    let rowSum = 0;
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      rowSum += 0.299 * pixels[i]! + 0.587 * pixels[i + 1]! + 0.114 * pixels[i + 2]!;
      table[(y + 1) * w + x + 1] = table[y * w + x + 1]! + rowSum;
    }
  }
  return table;
}

/**
 * Grey 32×32 thumbnail of a square part of an image, from its summed-area table: each cell is the
 * mean of the pixels whose position, scaled to 32, falls in it.
 */
export function greyThumbnailFromIntegral(table: Float64Array, size: number, region: Region): Float64Array {
  const { x: x0, y: y0, side } = region;
  if (side < THUMB) throw new RangeError(`perceptual hash needs at least ${THUMB} px, got ${side}`);
  const w = size + 1;
  // Pixel offset d belongs to cell floor(d·32/side): cell k starts at ceil(k·side/32) (exact: /32 is a power of 2).
  const start = Int32Array.from({ length: THUMB + 1 }, (_, k) => Math.ceil((k * side) / THUMB));
  const out = new Float64Array(THUMB * THUMB);
  for (let cy = 0; cy < THUMB; cy++) {
    const top = y0 + start[cy]!;
    const bottom = y0 + start[cy + 1]!;
    for (let cx = 0; cx < THUMB; cx++) {
      const left = x0 + start[cx]!;
      const right = x0 + start[cx + 1]!;
      const sum = table[bottom * w + right]! - table[top * w + right]! - table[bottom * w + left]! + table[top * w + left]!;
      out[cy * THUMB + cx] = sum / ((bottom - top) * (right - left));
    }
  }
  return out;
}

/** Grey 32×32 thumbnail of a square part (default: all) of a square `size × size × 3` RGB image. */
export function greyThumbnail(pixels: Uint8Array, size: number, region: Region = { x: 0, y: 0, side: size }): Float64Array {
  return greyThumbnailFromIntegral(lumaIntegral(pixels, size), size, region);
}

/** The pHash of a grey 32×32 thumbnail. */
function hashOfThumbnail(grey: Float64Array): PerceptualHash {
  // Separable DCT, only the KEEP lowest frequencies in each direction.
  const rows = new Float64Array(THUMB * KEEP); // [y][v]
  for (let y = 0; y < THUMB; y++) {
    for (let v = 0; v < KEEP; v++) {
      let s = 0;
      for (let x = 0; x < THUMB; x++) s += grey[y * THUMB + x]! * BASIS[v * THUMB + x]!;
      rows[y * KEEP + v] = s;
    }
  }
  const coeffs: number[] = [];
  for (let u = 0; u < KEEP; u++) {
    for (let v = 0; v < KEEP; v++) {
      if (u === 0 && v === 0) continue; // DC: the mean brightness
      let s = 0;
      for (let y = 0; y < THUMB; y++) s += rows[y * KEEP + v]! * BASIS[u * THUMB + y]!;
      coeffs.push(s);
    }
  }
  const median = [...coeffs].sort((a, b) => a - b)[coeffs.length >> 1]!;
  const hash: PerceptualHash = [0, 0];
  coeffs.forEach((c, bit) => {
    if (c > median) hash[bit >> 5]! |= 1 << (bit & 31);
  });
  hash[0] >>>= 0;
  hash[1] >>>= 0;
  return hash;
}

/** The pHash of a square `size × size × 3` RGB image (size ≥ 32), or of a square part of it. */
export function perceptualHash(pixels: Uint8Array, size: number, region?: Region): PerceptualHash {
  return hashOfThumbnail(greyThumbnail(pixels, size, region));
}

/** Number of set bits of a 32-bit word. */
export function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Number of differing bits (0 … 63). */
export function hammingDistance(a: PerceptualHash, b: PerceptualHash): number {
  return popcount((a[0] ^ b[0]) >>> 0) + popcount((a[1] ^ b[1]) >>> 0);
}

/** Share of the side that the crops of `cropRegions` keep: a 10 % crop, as a copy is often trimmed. */
const CROP_KEEP = 0.9;

/**
 * The whole `size × size` image (first), then five 90 % squares of it: the centre and the four
 * corners. A copy trimmed by about 10 % on some sides looks like one of these crops of its
 * original.
 */
export function cropRegions(size: number): Region[] {
  const side = Math.round(size * CROP_KEEP);
  const far = size - side;
  const mid = Math.round(far / 2);
  const corners: [number, number][] = [
    [mid, mid],
    [0, 0],
    [far, 0],
    [0, far],
    [far, far],
  ];
  return [{ x: 0, y: 0, side: size }, ...corners.map(([x, y]) => ({ x, y, side }))];
}

/**
 * The pHash of the whole image (first) and of its five 90 % crops (cropRegions), which the
 * whole-image hash alone misses: a 10 % corner crop moves 20–32 of the 63 bits (see near.ts).
 */
export function cropHashes(pixels: Uint8Array, size: number): PerceptualHash[] {
  const table = lumaIntegral(pixels, size);
  return cropRegions(size).map((region) => hashOfThumbnail(greyThumbnailFromIntegral(table, size, region)));
}

/**
 * The best of `score(i, j)` over the pairings of whole with whole, crop with whole and whole with
 * crop (i, j index cropRegions): how two images compare when one may be a 90 % crop of the other.
 */
export function bestAlignment(count: number, score: (i: number, j: number) => number, better: (x: number, y: number) => boolean): number {
  let best = score(0, 0);
  for (let i = 1; i < count; i++) {
    for (const s of [score(i, 0), score(0, i)]) if (better(s, best)) best = s;
  }
  return best;
}

/**
 * How many bits two images' hashes differ by, allowing one to be a ~10 % crop of the other: the
 * least distance between either whole-image hash and the other's whole or cropped hashes.
 */
export function cropTolerantDistance(a: readonly PerceptualHash[], b: readonly PerceptualHash[]): number {
  return bestAlignment(Math.min(a.length, b.length), (i, j) => hammingDistance(a[i]!, b[j]!), (x, y) => x < y);
}
