import { describe, expect, it } from 'vitest';
import { AUGMENT_PARAMS, augmentImage, type AugmentParams } from '../src/data/augment.js';
import { Rng } from '../src/data/rng.js';

const NO_CHANGE: AugmentParams = {
  flipProbability: 0,
  rotationDegrees: 0,
  shiftFraction: 0,
  zoomRange: [1, 1],
  brightness: 0,
  contrast: 0,
};

/** A smooth test image with some structure (gradients and a bright block). */
function testImage(size: number): Uint8Array {
  const img = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      const block = x > size * 0.2 && x < size * 0.5 && y > size * 0.3 && y < size * 0.6;
      img[i] = block ? 230 : Math.round((x / size) * 200 + 20);
      img[i + 1] = block ? 220 : Math.round((y / size) * 180 + 30);
      img[i + 2] = Math.round(((x + y) / (2 * size)) * 150 + 50);
    }
  }
  return img;
}
const mean = (a: Uint8Array) => a.reduce((s, v) => s + v, 0) / a.length;

describe('augmentImage', () => {
  const size = 32;
  const img = testImage(size);

  it("returns the input itself for 'none'", () => {
    expect(augmentImage(img, size, 'none', new Rng(1))).toBe(img);
  });

  it('is an exact copy when every parameter is "no change"', () => {
    const out = augmentImage(img, size, NO_CHANGE, new Rng(1));
    expect(out).not.toBe(img);
    expect(out).toEqual(img);
  });

  it('mirrors left–right with a flip-only configuration', () => {
    const out = augmentImage(img, size, { ...NO_CHANGE, flipProbability: 1 }, new Rng(1));
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) expect(out[(y * size + x) * 3 + c]).toBe(img[(y * size + (size - 1 - x)) * 3 + c]);
      }
    }
  });

  it('flips about half of the time at the light level', () => {
    const rng = new Rng(3);
    let flips = 0;
    const params = { ...AUGMENT_PARAMS.light, rotationDegrees: 0, shiftFraction: 0, zoomRange: [1, 1] as const, brightness: 0, contrast: 0 };
    for (let i = 0; i < 200; i++) if (augmentImage(img, size, params, rng)[0] !== img[0]) flips++;
    expect(flips).toBeGreaterThan(70);
    expect(flips).toBeLessThan(130);
  });

  it('gives the same output for the same seed and different outputs for different seeds', () => {
    for (const level of ['light', 'strong'] as const) {
      const a = augmentImage(img, size, level, new Rng(7));
      const b = augmentImage(img, size, level, new Rng(7));
      const c = augmentImage(img, size, level, new Rng(8));
      expect(a).toEqual(b);
      expect(a).not.toEqual(c);
      expect(a).not.toEqual(img);
    }
  });

  it('clamps to 0–255 instead of wrapping around, and fills edges with the nearest pixel', () => {
    const bright = new Uint8Array(size * size * 3).fill(250);
    const dark = new Uint8Array(size * size * 3).fill(3);
    const rng = new Rng(5);
    for (let i = 0; i < 50; i++) {
      const b = augmentImage(bright, size, 'strong', rng);
      expect(Math.min(...b)).toBeGreaterThanOrEqual(Math.floor(250 * 0.75 * 0.75) - 1);
      const d = augmentImage(dark, size, 'strong', rng);
      expect(Math.max(...d)).toBeLessThanOrEqual(6);
      expect(Math.min(...d)).toBeGreaterThanOrEqual(1); // no black corners from rotation or shift
    }
  });

  it('roughly preserves mean brightness', () => {
    const m0 = mean(img);
    const rng = new Rng(11);
    let sum = 0;
    const n = 100;
    for (let i = 0; i < n; i++) {
      const m = mean(augmentImage(img, size, 'strong', rng));
      expect(Math.abs(m - m0) / m0).toBeLessThan(0.4);
      sum += m;
    }
    expect(Math.abs(sum / n - m0) / m0).toBeLessThan(0.05);
  });

  it('writes into a given buffer and checks sizes', () => {
    const out = new Uint8Array(img.length);
    expect(augmentImage(img, size, 'light', new Rng(1), out)).toBe(out);
    expect(out).toEqual(augmentImage(img, size, 'light', new Rng(1)));
    expect(() => augmentImage(img, size + 1, 'light', new Rng(1))).toThrow(RangeError);
    expect(() => augmentImage(img, size, 'light', new Rng(1), img)).toThrow(RangeError);
  });

  it('publishes its parameter table', () => {
    expect(AUGMENT_PARAMS.light).toMatchObject({ flipProbability: 0.5, rotationDegrees: 10, shiftFraction: 0.1, zoomRange: [0.9, 1.1], brightness: 0.1, contrast: 0.1 });
    expect(AUGMENT_PARAMS.strong).toMatchObject({ rotationDegrees: 20, shiftFraction: 0.15, zoomRange: [0.8, 1.25], brightness: 0.25, contrast: 0.25 });
  });
});

describe('Rng', () => {
  it('repeats from a seed and differs between seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const xs = Array.from({ length: 5 }, () => a.next());
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(xs);
    expect(new Rng(43).next()).not.toBe(xs[0]);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });

  it('gives the same numbers on every platform (pinned values)', () => {
    const r = new Rng(42);
    expect([r.nextUint32(), r.nextUint32(), r.nextUint32()]).toEqual(PINNED_42);
  });

  it('has int, uniform and shuffle with the right ranges', () => {
    const r = new Rng(1);
    const counts = new Array(5).fill(0);
    for (let i = 0; i < 5000; i++) counts[r.int(5)]++;
    for (const c of counts) expect(c).toBeGreaterThan(850);
    for (let i = 0; i < 100; i++) {
      const u = r.uniform(-2, 3);
      expect(u >= -2 && u < 3).toBe(true);
    }
    const a = [1, 2, 3, 4, 5, 6, 7, 8];
    const s = r.shuffle(a);
    expect(s).toBe(a);
    expect([...s].sort()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() => r.int(0)).toThrow(RangeError);
  });

  it('forks independent streams that do not depend on draws made before', () => {
    const a = new Rng(42);
    const f1 = a.fork('augment').next();
    a.next();
    a.next();
    expect(a.fork('augment').next()).toBe(f1);
    expect(a.fork('split').next()).not.toBe(f1);
    expect(a.fork(1).next()).not.toBe(a.fork('1').next());
    expect(new Rng(43).fork('augment').next()).not.toBe(f1);
  });

  it('saves and restores its state', () => {
    const a = new Rng(9);
    a.next();
    const state = a.getState();
    const next = [a.next(), a.next()];
    const b = new Rng(0);
    b.setState(state);
    expect([b.next(), b.next()]).toEqual(next);
    expect(b.fork('x').next()).toBe(new Rng(9).fork('x').next());
    expect(() => b.setState([1, 2])).toThrow(RangeError);
  });

  it('accepts large and fractional seeds', () => {
    expect(new Rng(2 ** 40).next()).not.toBe(new Rng(0).next());
    expect(new Rng(0.5).next()).toBe(new Rng(0.5).next());
    expect(new Rng(-1).next()).not.toBe(new Rng(1).next());
  });
});

/** The first three 32-bit outputs of `new Rng(42)`; changing them changes every seeded run. */
const PINNED_42 = [2737435346, 901506917, 4216807374];
