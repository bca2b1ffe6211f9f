/**
 * A synthetic "shapes" dataset for tests and demos: one coloured shape per image on a random
 * background, one class per shape. Easy for any backbone (each class has its own shape *and* a typical
 * colour) but no two images alike: hue, size, position, rotation, background and noise all vary.
 *
 *   dir/train/<class>/<class>_000.png
 *   dir/valid/<class>/<class>_000.png      (unless validPerClass is 0)
 *   dir/test/unknown/<class>_000.png       (the true class is the file-name prefix, for tests)
 *
 * Images are SVG drawings rendered by sharp (librsvg). Everything comes
 * from the seed: the same options write the same bytes (with the same sharp/libvips version).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { Rng } from './rng.js';

export interface ShapesOptions {
  /** Class names; a name that is a known shape draws that shape. Default ['circle', 'square', 'triangle']. */
  classes?: string[];
  /** Training images per class. Default 30. */
  trainPerClass?: number;
  /** Validation images per class; 0 writes no valid/ folder. Default 10. */
  validPerClass?: number;
  /** Unlabelled images in test/unknown/, classes in turn. Default 12. */
  testCount?: number;
  /** Width and height in pixels. Default 64. */
  size?: number;
  /** Default 42. */
  seed?: number;
  /** File format. Default 'png'. */
  format?: 'png' | 'jpeg';
}

/** Shapes that can be drawn, with their typical hue in degrees (circle reddish, square greenish, …). */
export const SHAPES: Readonly<Record<string, number>> = Object.freeze({
  circle: 0,
  square: 120,
  triangle: 225,
  star: 52,
  cross: 285,
  diamond: 28,
  hexagon: 178,
  ring: 325,
});

const SHAPE_NAMES = Object.keys(SHAPES);

/**
 * Writes a shapes dataset into `dir` (created if needed; existing files of the same names are
 * overwritten, nothing is deleted). Returns the class names and the number of files written.
 */
export async function makeShapesDataset(
  dir: string,
  options: ShapesOptions = {},
): Promise<{ classes: string[]; files: number }> {
  const classes = options.classes ?? ['circle', 'square', 'triangle'];
  const trainPerClass = options.trainPerClass ?? 30;
  const validPerClass = options.validPerClass ?? 10;
  const testCount = options.testCount ?? 12;
  const size = options.size ?? 64;
  const seed = options.seed ?? 42;
  const format = options.format ?? 'png';

  for (const [name, v] of Object.entries({ trainPerClass, validPerClass, testCount })) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`makeShapesDataset: ${name} must be an integer ≥ 0, got ${v}`);
  }
  if (!Number.isInteger(size) || size < 8 || size > 1024) {
    throw new RangeError(`makeShapesDataset: size must be an integer from 8 to 1024, got ${size}`);
  }
  if (format !== 'png' && format !== 'jpeg') throw new RangeError(`makeShapesDataset: format must be 'png' or 'jpeg'`);
  if (classes.length < 1 || new Set(classes).size !== classes.length) {
    throw new RangeError('makeShapesDataset: classes must be a non-empty list of distinct names');
  }
  for (const c of classes) {
    if (c === '' || c.startsWith('.') || /[/\\\0]/.test(c) || c === '..') {
      throw new RangeError(`makeShapesDataset: ${JSON.stringify(c)} cannot be a folder name`);
    }
  }

  const styles = assignStyles(classes);
  const ext = format === 'png' ? 'png' : 'jpg';
  const root = new Rng(seed);
  const jobs: { file: string; style: Style; rng: Rng }[] = [];
  const name = (cls: string, i: number) => `${cls}_${String(i).padStart(3, '0')}.${ext}`;

  const splits: [string, number][] = [['train', trainPerClass]];
  if (validPerClass > 0) splits.push(['valid', validPerClass]);
  for (const [split, count] of splits) {
    classes.forEach((cls, ci) => {
      for (let i = 0; i < count; i++) {
        // One stream per image: changing a count does not change the other images.
        jobs.push({ file: path.join(dir, split, cls, name(cls, i)), style: styles[ci]!, rng: root.fork(`${split}/${cls}/${i}`) });
      }
    });
  }
  const start = root.fork('test-order').int(classes.length);
  for (let i = 0; i < testCount; i++) {
    // Classes in turn from a seeded start, so every class appears when testCount ≥ classes.
    const ci = (start + i) % classes.length;
    jobs.push({
      file: path.join(dir, 'test', 'unknown', name(classes[ci]!, i)),
      style: styles[ci]!,
      rng: root.fork(`test/${i}`),
    });
  }

  const folders = new Set(jobs.map((j) => path.dirname(j.file)));
  for (const f of folders) await fsp.mkdir(f, { recursive: true });
  // A few renders at a time: sharp work runs on libuv's pool (4 threads) anyway.
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      await fsp.writeFile(job.file, await renderShape(job.style, size, job.rng, format));
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return { classes: classes.slice(), files: jobs.length };
}

interface Style {
  shape: string;
  hue: number;
}

/** A class named like a shape draws that shape; other classes take the unused shapes in turn. */
function assignStyles(classes: string[]): Style[] {
  const isShape = (c: string) => Object.hasOwn(SHAPES, c);
  const unused = SHAPE_NAMES.filter((s) => !classes.includes(s));
  const pool = unused.length > 0 ? unused : SHAPE_NAMES;
  const timesUsed = new Map<string, number>();
  let u = 0;
  return classes.map((cls) => {
    const shape = isShape(cls) ? cls : pool[u++ % pool.length]!;
    // Beyond 8 classes shapes repeat: each repeat gets another hue so the classes stay apart.
    const k = timesUsed.get(shape) ?? 0;
    timesUsed.set(shape, k + 1);
    return { shape, hue: (SHAPES[shape]! + k * 137.5) % 360 };
  });
}

function hsl(h: number, s: number, l: number): string {
  return `hsl(${h.toFixed(1)},${(s * 100).toFixed(1)}%,${(l * 100).toFixed(1)}%)`;
}

/** Points of a regular polygon (or star when `inner` is set), as an SVG points string. */
function polygon(cx: number, cy: number, r: number, n: number, rot: number, inner?: number): string {
  const pts: string[] = [];
  const steps = inner === undefined ? n : 2 * n;
  for (let i = 0; i < steps; i++) {
    const rr = inner !== undefined && i % 2 === 1 ? r * inner : r;
    const t = rot - Math.PI / 2 + (2 * Math.PI * i) / steps;
    pts.push(`${(cx + rr * Math.cos(t)).toFixed(2)},${(cy + rr * Math.sin(t)).toFixed(2)}`);
  }
  return pts.join(' ');
}

function shapeSvg(shape: string, cx: number, cy: number, r: number, rot: number, fill: string): string {
  const deg = (rot * 180) / Math.PI;
  switch (shape) {
    case 'circle':
      return `<circle cx="${cx.toFixed(2)}" cy="${cy.toFixed(2)}" r="${r.toFixed(2)}" fill="${fill}"/>`;
    case 'ring':
      return `<circle cx="${cx.toFixed(2)}" cy="${cy.toFixed(2)}" r="${(r * 0.8).toFixed(2)}" fill="none" stroke="${fill}" stroke-width="${(r * 0.4).toFixed(2)}"/>`;
    case 'square': {
      const h = r * 0.85;
      return `<rect x="${(cx - h).toFixed(2)}" y="${(cy - h).toFixed(2)}" width="${(2 * h).toFixed(2)}" height="${(2 * h).toFixed(2)}" fill="${fill}" transform="rotate(${deg.toFixed(1)} ${cx.toFixed(2)} ${cy.toFixed(2)})"/>`;
    }
    case 'diamond': {
      // A rhombus taller than wide, so it never looks like a rotated square.
      const p = (x: number, y: number) => `${(cx + x).toFixed(2)},${(cy + y).toFixed(2)}`;
      const pts = [p(0, -r * 1.1), p(r * 0.65, 0), p(0, r * 1.1), p(-r * 0.65, 0)].join(' ');
      return `<polygon points="${pts}" fill="${fill}" transform="rotate(${(deg * 0.4).toFixed(1)} ${cx.toFixed(2)} ${cy.toFixed(2)})"/>`;
    }
    case 'triangle':
      return `<polygon points="${polygon(cx, cy + r * 0.15, r * 1.1, 3, rot)}" fill="${fill}"/>`;
    case 'hexagon':
      return `<polygon points="${polygon(cx, cy, r, 6, rot)}" fill="${fill}"/>`;
    case 'star':
      return `<polygon points="${polygon(cx, cy, r * 1.1, 5, rot, 0.45)}" fill="${fill}"/>`;
    case 'cross': {
      const w = r * 0.38;
      const t = `transform="rotate(${deg.toFixed(1)} ${cx.toFixed(2)} ${cy.toFixed(2)})"`;
      return (
        `<rect x="${(cx - r).toFixed(2)}" y="${(cy - w).toFixed(2)}" width="${(2 * r).toFixed(2)}" height="${(2 * w).toFixed(2)}" fill="${fill}" ${t}/>` +
        `<rect x="${(cx - w).toFixed(2)}" y="${(cy - r).toFixed(2)}" width="${(2 * w).toFixed(2)}" height="${(2 * r).toFixed(2)}" fill="${fill}" ${t}/>`
      );
    }
    default:
      throw new Error(`unknown shape ${shape}`);
  }
}

/** Draws one image: gradient background, a few thin distractor lines and specks, then the shape. */
async function renderShape(style: Style, S: number, rng: Rng, format: 'png' | 'jpeg'): Promise<Buffer> {
  // Background: two muted colours, random direction.
  const bgHue = rng.uniform(0, 360);
  const bg1 = hsl(bgHue, rng.uniform(0, 0.25), rng.uniform(0.3, 0.85));
  const bg2 = hsl((bgHue + rng.uniform(-60, 60) + 360) % 360, rng.uniform(0, 0.25), rng.uniform(0.3, 0.85));
  const ga = rng.uniform(0, 2 * Math.PI);
  const gx = Math.cos(ga) / 2;
  const gy = Math.sin(ga) / 2;
  let body =
    `<defs><linearGradient id="g" x1="${(0.5 - gx).toFixed(3)}" y1="${(0.5 - gy).toFixed(3)}" x2="${(0.5 + gx).toFixed(3)}" y2="${(0.5 + gy).toFixed(3)}">` +
    `<stop offset="0" stop-color="${bg1}"/><stop offset="1" stop-color="${bg2}"/></linearGradient></defs>` +
    `<rect width="${S}" height="${S}" fill="url(#g)"/>`;
  const lines = 1 + rng.int(3);
  for (let i = 0; i < lines; i++) {
    const [x1, y1, x2, y2] = [rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0, S)];
    const col = hsl(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.2, 0.9));
    body += `<line x1="${x1.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="${col}" stroke-width="${(S / 64 * rng.uniform(0.8, 2)).toFixed(2)}" opacity="0.7"/>`;
  }
  // Specks: sparse noise (dense pixel noise would triple the PNG size of the committed fixture).
  const specks = Math.round((S * S) / 160) + rng.int(Math.round((S * S) / 160) + 1);
  for (let i = 0; i < specks; i++) {
    const col = hsl(rng.uniform(0, 360), rng.uniform(0, 0.5), rng.uniform(0.1, 0.95));
    body += `<rect x="${rng.int(S)}" y="${rng.int(S)}" width="1" height="1" fill="${col}" opacity="${rng.uniform(0.3, 0.8).toFixed(2)}"/>`;
  }
  // The shape: class hue ± 18°, varied saturation and lightness, size, position and rotation.
  const r = S * rng.uniform(0.17, 0.28);
  const cx = rng.uniform(r + S * 0.04, S - r - S * 0.04);
  const cy = rng.uniform(r + S * 0.04, S - r - S * 0.04);
  const rot = (rng.uniform(-25, 25) * Math.PI) / 180;
  const fill = hsl((style.hue + rng.uniform(-18, 18) + 360) % 360, rng.uniform(0.55, 0.9), rng.uniform(0.38, 0.58));
  body += shapeSvg(style.shape, cx, cy, r, rot, fill);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${S}" height="${S}" viewBox="0 0 ${S} ${S}">${body}</svg>`;

  const img = sharp(Buffer.from(svg)).removeAlpha();
  return format === 'png' ? img.png({ compressionLevel: 9, adaptiveFiltering: true }).toBuffer() : img.jpeg({ quality: 90 }).toBuffer();
}
