/** `--augment randaugment`: each operation does what its name says, and the whole is seeded. */
import { describe, expect, it } from 'vitest';
import { augmentImage } from '../src/data/augment.js';
import { applyRandAugmentOp, randAugment } from '../src/data/randaugment.js';
import { Rng } from '../src/data/rng.js';

/** A low-contrast, coloured test picture: a horizontal ramp 80–160 in red, a vertical one in green, blue 100, a bright square. */
function picture(size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      const square = x >= size / 4 && x < size / 2 && y >= size / 4 && y < size / 2;
      out[i] = 80 + Math.round((80 * x) / (size - 1));
      out[i + 1] = square ? 170 : 80 + Math.round((80 * y) / (size - 1));
      out[i + 2] = 100;
    }
  }
  return out;
}

const mean = (a: Uint8Array) => a.reduce((s, v) => s + v, 0) / a.length;
const channel = (a: Uint8Array, c: number) => a.filter((_, i) => i % 3 === c);
/** Mean over pixels of (max channel − min channel): 0 for grey. */
const saturation = (a: Uint8Array) => {
  let sum = 0;
  for (let i = 0; i < a.length; i += 3) sum += Math.max(a[i]!, a[i + 1]!, a[i + 2]!) - Math.min(a[i]!, a[i + 1]!, a[i + 2]!);
  return sum / (a.length / 3);
};
const at = (a: Uint8Array, size: number, x: number, y: number) => Array.from(a.subarray((y * size + x) * 3, (y * size + x) * 3 + 3));

describe('RandAugment operations', () => {
  const size = 40;
  const image = picture(size);

  it('identity and magnitude 0 leave the picture as it is', () => {
    expect(applyRandAugmentOp('identity', image, size, 9, 1)).toEqual(image);
    for (const op of ['rotate', 'shearX', 'shearY', 'translateX', 'translateY', 'color', 'contrast', 'brightness', 'sharpness', 'posterize'] as const) {
      expect(applyRandAugmentOp(op, image, size, 0, 1), op).toEqual(image);
    }
  });

  it('brightness scales the values by 1 ± 0.9·M/10; color moves pixels towards or away from grey', () => {
    expect(mean(applyRandAugmentOp('brightness', image, size, 10, -1))).toBeCloseTo(0.1 * mean(image), 0);
    expect(mean(applyRandAugmentOp('brightness', image, size, 5, 1))).toBeCloseTo(1.45 * mean(image), 0);
    expect(saturation(applyRandAugmentOp('color', image, size, 10, -1))).toBeLessThan(0.15 * saturation(image));
    expect(saturation(applyRandAugmentOp('color', image, size, 5, 1))).toBeGreaterThan(1.3 * saturation(image));
  });

  it('contrast spreads the values about the mean; autoContrast and equalize stretch each channel to 0–255', () => {
    const spread = (a: Uint8Array) => Math.max(...a) - Math.min(...a);
    expect(spread(applyRandAugmentOp('contrast', image, size, 5, 1))).toBeGreaterThan(1.3 * spread(image));
    for (const op of ['autoContrast', 'equalize'] as const) {
      const out = applyRandAugmentOp(op, image, size, 9, 1);
      for (const c of [0, 1]) {
        expect(Math.min(...channel(out, c)), `${op} channel ${c}`).toBeLessThanOrEqual(1);
        expect(Math.max(...channel(out, c)), `${op} channel ${c}`).toBeGreaterThanOrEqual(250);
      }
      expect(new Set(channel(out, 2)), `${op}: a flat channel stays flat`).toEqual(new Set([channel(out, 2)[0]]));
    }
  });

  it('posterize keeps 8 − round(4·M/10) bits', () => {
    const out = applyRandAugmentOp('posterize', image, size, 10, 1);
    expect(out.every((v) => (v & 0x0f) === 0)).toBe(true);
    expect(out.every((v, i) => v === (image[i]! & 0xf0))).toBe(true);
  });

  it('translate moves the picture by 0.45·M/10 of its size; rotate and shear keep the centre', () => {
    const shifted = applyRandAugmentOp('translateX', image, size, 10, 1); // 18 px to the right
    for (const [x, y] of [[0, 5], [10, 20], [21, 39]]) expect(at(shifted, size, x! + 18, y!)).toEqual(at(image, size, x!, y!));
    const down = applyRandAugmentOp('translateY', image, size, 10, -1); // 18 px up
    expect(at(down, size, 12, 0)).toEqual(at(image, size, 12, 18));
    const odd = 41; // an exact centre pixel
    const centred = picture(odd);
    for (const op of ['rotate', 'shearX', 'shearY'] as const) {
      const out = applyRandAugmentOp(op, centred, odd, 9, -1);
      expect(out, op).not.toEqual(centred);
      expect(at(out, odd, 20, 20), op).toEqual(at(centred, odd, 20, 20));
    }
  });
});

describe('randAugment', () => {
  const size = 32;
  const image = picture(size);

  it('is seeded: the same seed gives the same picture, other seeds other pictures; the input is untouched', () => {
    const copy = image.slice();
    const outputs = [1, 2, 3, 4, 5, 6].map((seed) => randAugment(image, size, new Rng(seed)));
    expect(image).toEqual(copy);
    expect(randAugment(image, size, new Rng(3))).toEqual(outputs[2]);
    expect(new Set(outputs.map((o) => Buffer.from(o).toString('hex'))).size).toBeGreaterThanOrEqual(5);
    expect(outputs.filter((o) => o.some((v, i) => v !== image[i])).length).toBeGreaterThanOrEqual(5);
  });

  it('is what augmentImage gives for the level randaugment', () => {
    const out = new Uint8Array(image.length);
    expect(augmentImage(image, size, 'randaugment', new Rng(9), out)).toBe(out);
    expect(out).toEqual(randAugment(image, size, new Rng(9)));
  });
});
