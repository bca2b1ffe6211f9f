/**
 * A small seeded pseudo-random number generator, so that splits, shuffles and augmentations repeat
 * exactly from a seed on every run and platform (Math.random cannot be seeded).
 *
 * The generator is sfc32 (Chris Doty-Humphrey's "Small Fast Counting" generator, 128 bits of state,
 * passes PractRand) seeded through splitmix32. It uses only 32-bit integer arithmetic (`| 0`,
 * `>>> 0`, `Math.imul`), which JavaScript defines bit-exactly, so the streams are identical everywhere.
 */

const TWO_32 = 4294967296;

/** splitmix32 step: turns a counter into a well-mixed 32-bit word. */
function splitmix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a over the UTF-16 code units of a string, finished with a splitmix round. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return splitmix32(h);
}

/** Maps any JavaScript number to a 32-bit seed word; integers up to 2^53 keep all their bits. */
function seedWord(seed: number): number {
  if (Number.isSafeInteger(seed)) {
    const lo = ((seed % TWO_32) + TWO_32) % TWO_32;
    const hi = Math.floor(seed / TWO_32) | 0;
    return (lo ^ splitmix32(hi)) >>> 0;
  }
  if (Number.isNaN(seed)) throw new RangeError('Rng seed must be a number, got NaN');
  return hashString(String(seed)); // fractions, ±Infinity: stable through their string form
}

/**
 * Seeded PRNG.
 *
 * ```ts
 * const rng = new Rng(42);
 * rng.next();            // 0 ≤ x < 1
 * rng.int(10);           // 0..9
 * rng.shuffle([1, 2, 3]); // in place
 * const aug = rng.fork('augment'); // independent stream, same for every run with seed 42
 * ```
 */
export class Rng {
  // sfc32 state: a, b, c, counter d; plus the seed word the forks derive from.
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;
  private seedKey = 0;

  constructor(seed: number) {
    this.init(seedWord(seed));
  }

  private init(key: number): void {
    this.seedKey = key >>> 0;
    let s = this.seedKey;
    this.a = splitmix32(s);
    s = (s + 0x9e3779b9) | 0;
    this.b = splitmix32(s);
    s = (s + 0x9e3779b9) | 0;
    this.c = splitmix32(s);
    this.d = 1;
    // Discard the first outputs: sfc32's authors recommend it to decorrelate nearby seeds.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** A uniformly distributed 32-bit unsigned integer. */
  nextUint32(): number {
    const a = this.a, b = this.b, c = this.c, d = this.d;
    const t = (((a + b) | 0) + d) | 0;
    this.d = (d + 1) | 0;
    this.a = b ^ (b >>> 9);
    this.b = (c + (c << 3)) | 0;
    this.c = (((c << 21) | (c >>> 11)) + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / TWO_32;
  }

  /** An integer in [0, n). `n` must be a positive integer up to 2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > TWO_32) {
      throw new RangeError(`Rng.int(n) needs a positive integer n ≤ 2^32, got ${n}`);
    }
    return Math.floor(this.next() * n);
  }

  /** A float in [a, b). */
  uniform(a: number, b: number): number {
    return a + (b - a) * this.next();
  }

  /** Fisher–Yates shuffle of `a` in place; returns `a`. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }

  /**
   * An independent generator derived from this generator's seed and `label` — not from its current
   * position, so `new Rng(42).fork('split')` is the same stream however many numbers were drawn
   * before. Different labels give unrelated streams.
   */
  fork(label: string | number): Rng {
    const child = Object.create(Rng.prototype) as Rng;
    const tag = typeof label === 'number' ? `#${label}` : `$${label}`;
    child.init(splitmix32(this.seedKey ^ hashString(tag)));
    return child;
  }

  /** The full state (5 integers) to save in a checkpoint; `setState` resumes from it exactly. */
  getState(): number[] {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0, this.seedKey >>> 0];
  }

  /** Restores a state from `getState()`. */
  setState(s: number[]): void {
    if (!Array.isArray(s) || s.length !== 5 || !s.every((v) => Number.isInteger(v) && v >= 0 && v < TWO_32)) {
      throw new RangeError('Rng.setState expects the 5 unsigned 32-bit integers returned by getState()');
    }
    this.a = s[0]! | 0;
    this.b = s[1]! | 0;
    this.c = s[2]! | 0;
    this.d = s[3]! | 0;
    this.seedKey = s[4]! >>> 0;
  }
}

/**
 * `count` uniform values in [0, 1) from mulberry32 seeded with `seed`: the fixed inputs of the
 * kernel checks (start-up, tests, the GPU check), the same on every machine.
 */
export function mulberry32Uniforms(count: number, seed: number): Float64Array {
  let a = seed >>> 0;
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / TWO_32;
  }
  return out;
}
