/**
 * `--augment randaugment`: RandAugment (Cubuk et al. 2020) for photos. Each training image gets a
 * random horizontal flip (50 %), then N = 2 operations drawn uniformly (with repetition) from the
 * list below, each at magnitude M = 9 of 10 — the paper's ImageNet setting — with a random sign
 * where an operation has one. The magnitudes follow the paper and timm:
 *
 * | operation    | at magnitude M (of 10)                                  |
 * |--------------|---------------------------------------------------------|
 * | identity     | nothing                                                 |
 * | autoContrast | each channel stretched to 0–255                         |
 * | equalize     | each channel's histogram equalized (as PIL)             |
 * | rotate       | ±30° · M/10                                             |
 * | shearX/Y     | ±0.3 · M/10                                             |
 * | translateX/Y | ±0.45 · M/10 of the image size                          |
 * | color        | saturation × (1 ± 0.9 · M/10)                           |
 * | contrast     | contrast × (1 ± 0.9 · M/10)                             |
 * | brightness   | brightness × (1 ± 0.9 · M/10)                           |
 * | sharpness    | sharpness × (1 ± 0.9 · M/10) (PIL's 3×3 smoothing blend)|
 * | posterize    | 8 − round(4 · M/10) bits kept per channel                |
 *
 * Left out of the paper's list: solarize (inverts bright pixels, a colour no photo of the class
 * has). Geometric operations sample bilinearly with the edge pixels repeated, as `augmentImage`.
 */
import type { Rng } from './rng.js';

export const RANDAUGMENT_OPS = [
  'identity', 'autoContrast', 'equalize', 'rotate', 'shearX', 'shearY', 'translateX', 'translateY',
  'color', 'contrast', 'brightness', 'sharpness', 'posterize',
] as const;
export type RandAugmentOp = (typeof RANDAUGMENT_OPS)[number];

/** Operations per image and their magnitude (0–10) of `--augment randaugment`. */
export const RANDAUGMENT = Object.freeze({ ops: 2, magnitude: 9, flipProbability: 0.5 });

/**
 * Returns a RandAugment-ed copy of `pixels` (`size × size × 3` bytes, HWC): a flip with probability
 * 0.5, then `ops` operations at `magnitude`. All randomness comes from `rng` (same state, same output).
 */
export function randAugment(
  pixels: Uint8Array,
  size: number,
  rng: Rng,
  options: { ops?: number; magnitude?: number } = {},
): Uint8Array {
  const { ops = RANDAUGMENT.ops, magnitude = RANDAUGMENT.magnitude } = options;
  let image = rng.next() < RANDAUGMENT.flipProbability ? flipped(pixels, size) : pixels;
  for (let i = 0; i < ops; i++) {
    const op = RANDAUGMENT_OPS[rng.int(RANDAUGMENT_OPS.length)]!;
    const sign = rng.next() < 0.5 ? -1 : 1;
    image = applyRandAugmentOp(op, image, size, magnitude, sign);
  }
  return image === pixels ? pixels.slice() : image;
}

/** One operation at `magnitude` (0–10), in direction `sign` where it has one; returns a new array (or `pixels` for identity). */
export function applyRandAugmentOp(op: RandAugmentOp, pixels: Uint8Array, size: number, magnitude: number, sign: 1 | -1): Uint8Array {
  const m = magnitude / 10;
  const factor = 1 + sign * 0.9 * m;
  const c = (size - 1) / 2;
  switch (op) {
    case 'identity':
      return pixels;
    case 'autoContrast':
      return autoContrast(pixels);
    case 'equalize':
      return equalize(pixels);
    case 'rotate': {
      // Inverse map: source = R(−θ)(out − c) + c.
      const t = (sign * 30 * m * Math.PI) / 180;
      const cos = Math.cos(t);
      const sin = Math.sin(t);
      return affine(pixels, size, [cos, sin, c - cos * c - sin * c, -sin, cos, c + sin * c - cos * c]);
    }
    case 'shearX':
      return affine(pixels, size, [1, sign * 0.3 * m, -sign * 0.3 * m * c, 0, 1, 0]);
    case 'shearY':
      return affine(pixels, size, [1, 0, 0, sign * 0.3 * m, 1, -sign * 0.3 * m * c]);
    case 'translateX':
      return affine(pixels, size, [1, 0, -sign * 0.45 * m * size, 0, 1, 0]);
    case 'translateY':
      return affine(pixels, size, [1, 0, 0, 0, 1, -sign * 0.45 * m * size]);
    case 'color':
      return blend(pixels, grayscale(pixels), factor);
    case 'contrast': {
      const gray = grayscale(pixels);
      let sum = 0;
      for (let i = 0; i < gray.length; i += 3) sum += gray[i]!;
      const mean = Math.round(sum / (gray.length / 3));
      return blend(pixels, new Uint8Array(pixels.length).fill(mean), factor);
    }
    case 'brightness':
      return blend(pixels, new Uint8Array(pixels.length), factor);
    case 'sharpness':
      return blend(pixels, smoothed(pixels, size), factor);
    case 'posterize': {
      const bits = 8 - Math.round(4 * m);
      const mask = (0xff << (8 - bits)) & 0xff;
      return pixels.map((v) => v & mask);
    }
  }
}

/** PIL's ImageEnhance: `degenerate + factor · (image − degenerate)`, rounded and clamped. */
function blend(image: Uint8Array, degenerate: Uint8Array, factor: number): Uint8Array {
  const out = new Uint8ClampedArray(image.length);
  for (let i = 0; i < image.length; i++) out[i] = degenerate[i]! + factor * (image[i]! - degenerate[i]!);
  return new Uint8Array(out.buffer);
}

/** Each pixel's luma (ITU-R 601, as PIL's 'L'), in all three channels. */
function grayscale(image: Uint8Array): Uint8Array {
  const out = new Uint8Array(image.length);
  for (let i = 0; i < image.length; i += 3) {
    const l = Math.round(0.299 * image[i]! + 0.587 * image[i + 1]! + 0.114 * image[i + 2]!);
    out[i] = out[i + 1] = out[i + 2] = l;
  }
  return out;
}

/** PIL's SMOOTH filter ([1 1 1; 1 5 1; 1 1 1] / 13), border pixels unchanged (as ImageEnhance.Sharpness). */
function smoothed(image: Uint8Array, size: number): Uint8Array {
  const out = image.slice();
  const stride = size * 3;
  for (let y = 1; y < size - 1; y++) {
    for (let x = 1; x < size - 1; x++) {
      for (let ch = 0; ch < 3; ch++) {
        const i = y * stride + x * 3 + ch;
        let sum = 4 * image[i]!;
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) sum += image[i + dy * stride + dx * 3]!;
        out[i] = Math.round(sum / 13);
      }
    }
  }
  return out;
}

function flipped(image: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(image.length);
  const stride = size * 3;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const from = y * stride + (size - 1 - x) * 3;
      const to = y * stride + x * 3;
      out[to] = image[from]!;
      out[to + 1] = image[from + 1]!;
      out[to + 2] = image[from + 2]!;
    }
  }
  return out;
}

/** Each channel stretched linearly so its darkest value becomes 0 and its brightest 255. */
function autoContrast(image: Uint8Array): Uint8Array {
  const out = new Uint8Array(image.length);
  for (let ch = 0; ch < 3; ch++) {
    let lo = 255;
    let hi = 0;
    for (let i = ch; i < image.length; i += 3) {
      lo = Math.min(lo, image[i]!);
      hi = Math.max(hi, image[i]!);
    }
    const scale = hi > lo ? 255 / (hi - lo) : 1;
    for (let i = ch; i < image.length; i += 3) out[i] = hi > lo ? Math.round((image[i]! - lo) * scale) : image[i]!;
  }
  return out;
}

/** Per-channel histogram equalization, as PIL's ImageOps.equalize. */
function equalize(image: Uint8Array): Uint8Array {
  const out = new Uint8Array(image.length);
  for (let ch = 0; ch < 3; ch++) {
    const histogram = new Array<number>(256).fill(0);
    for (let i = ch; i < image.length; i += 3) histogram[image[i]!]! += 1;
    const used = histogram.filter((n) => n > 0);
    const step = Math.floor((used.reduce((a, b) => a + b, 0) - used.at(-1)!) / 255);
    const lut = Array.from({ length: 256 }, (_, v) => v);
    if (step > 0) {
      let n = Math.floor(step / 2);
      for (let v = 0; v < 256; v++) {
        lut[v] = Math.min(255, Math.floor(n / step));
        n += histogram[v]!;
      }
    }
    for (let i = ch; i < image.length; i += 3) out[i] = lut[image[i]!]!;
  }
  return out;
}

/**
 * Samples `image` through the inverse map `source = (a·x + b·y + c, d·x + e·y + f)` bilinearly,
 * coordinates outside the image reading the nearest edge pixel.
 */
function affine(image: Uint8Array, size: number, [a, b, c, d, e, f]: readonly number[]): Uint8Array {
  const out = new Uint8ClampedArray(image.length);
  const max = size - 1;
  const stride = size * 3;
  let o = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const sx = Math.min(max, Math.max(0, a! * x + b! * y + c!));
      const sy = Math.min(max, Math.max(0, d! * x + e! * y + f!));
      const x0 = sx | 0;
      const y0 = sy | 0;
      const fx = sx - x0;
      const fy = sy - y0;
      const i00 = y0 * stride + x0 * 3;
      const i01 = i00 + (x0 < max ? 3 : 0);
      const i10 = i00 + (y0 < max ? stride : 0);
      const i11 = i10 + (x0 < max ? 3 : 0);
      for (let ch = 0; ch < 3; ch++) {
        out[o + ch] =
          image[i00 + ch]! * (1 - fx) * (1 - fy) + image[i01 + ch]! * fx * (1 - fy) + image[i10 + ch]! * (1 - fx) * fy + image[i11 + ch]! * fx * fy;
      }
      o += 3;
    }
  }
  return new Uint8Array(out.buffer);
}
