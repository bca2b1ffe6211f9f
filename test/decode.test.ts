import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAll, decodeImage } from '../src/data/decode.js';
import { needShared, sharedPath } from './helpers/shared.js';

const HYMENOPTERA = 'datasets/hymenoptera_data';
const hymenoptera = sharedPath(HYMENOPTERA);

type RGB = [number, number, number];
const RED: RGB = [255, 0, 0];
const GREEN: RGB = [0, 255, 0];
const BLUE: RGB = [0, 0, 255];
const WHITE: RGB = [255, 255, 255];
const BLACK: RGB = [0, 0, 0];

/** A raw RGB image filled by `f(x, y)`. */
function raw(width: number, height: number, f: (x: number, y: number) => RGB) {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set(f(x, y), (y * width + x) * 3);
  }
  return sharp(data, { raw: { width, height, channels: 3 } });
}
const solid = (c: RGB, w = 16, h = 16) => raw(w, h, () => c);

function px(img: Uint8Array, size: number, x: number, y: number): RGB {
  const i = (y * size + x) * 3;
  return [img[i]!, img[i + 1]!, img[i + 2]!];
}
function expectColour(actual: RGB, expected: RGB, tolerance = 8): void {
  const ok = actual.every((v, i) => Math.abs(v - expected[i]!) <= tolerance);
  if (!ok) expect(actual, `expected ≈ ${expected} (±${tolerance})`).toEqual(expected);
}
function expectAll(img: Uint8Array, size: number, c: RGB, tolerance = 8): void {
  expect(img).toHaveLength(size * size * 3);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) expectColour(px(img, size, x, y), c, tolerance);
}

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'finetune-decode-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});
async function write(name: string, data: Buffer | string): Promise<string> {
  const p = path.join(tmp, name);
  await fsp.writeFile(p, data);
  return p;
}

const S = 8;
const stretch = { size: S, resize: 'stretch' } as const;

describe('decodeImage', () => {
  it('flattens an RGBA PNG onto white', async () => {
    // left half opaque red, right half fully transparent
    const rgba = Buffer.alloc(16 * 16 * 4);
    for (let y = 0; y < 16; y++) for (let x = 0; x < 8; x++) rgba.set([255, 0, 0, 255], (y * 16 + x) * 4);
    const png = await sharp(rgba, { raw: { width: 16, height: 16, channels: 4 } }).png().toBuffer();
    const img = await decodeImage(png, stretch);
    expect(img).toHaveLength(S * S * 3);
    expectColour(px(img, S, 1, 4), RED);
    expectColour(px(img, S, 6, 4), WHITE);
  });

  it('reads grayscale, 16-bit and palette PNGs as RGB', async () => {
    const grey = await solid([100, 100, 100]).toColourspace('b-w').png().toBuffer();
    expect((await sharp(grey).metadata()).channels).toBe(1);
    expectAll(await decodeImage(grey, stretch), S, [100, 100, 100], 2);

    const rgb16 = await solid([200, 50, 10]).toColourspace('rgb16').png().toBuffer();
    expect((await sharp(rgb16).metadata()).depth).toBe('ushort');
    expectAll(await decodeImage(rgb16, stretch), S, [200, 50, 10], 2);

    const grey16 = await solid([30, 30, 30]).toColourspace('grey16').png().toBuffer();
    expect((await sharp(grey16).metadata()).depth).toBe('ushort');
    expectAll(await decodeImage(grey16, stretch), S, [30, 30, 30], 2);

    const palette = await solid([20, 120, 220]).png({ palette: true }).toBuffer();
    expect((await sharp(palette).metadata()).isPalette).toBe(true);
    expectAll(await decodeImage(palette, stretch), S, [20, 120, 220], 4);
  });

  it('converts a CMYK JPEG to sRGB', async () => {
    const cmyk = await solid([220, 40, 40]).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
    expect((await sharp(cmyk).metadata()).space).toBe('cmyk');
    const img = await decodeImage(cmyk, stretch);
    expectAll(img, S, [220, 40, 40], 30); // CMYK round trips are approximate
  });

  it('takes the first frame of an animated GIF and WebP', async () => {
    const frames = [await solid(RED).png().toBuffer(), await solid(BLUE).png().toBuffer()];
    for (const format of ['gif', 'webp'] as const) {
      const anim = await sharp(frames, { join: { animated: true } }).toFormat(format).toBuffer();
      expect((await sharp(anim).metadata()).pages).toBe(2);
      expectAll(await decodeImage(anim, stretch), S, RED, 12);
    }
  });

  it('reads WebP, TIFF and AVIF', async () => {
    const c: RGB = [40, 160, 90];
    expectAll(await decodeImage(await solid(c).webp({ lossless: true }).toBuffer(), stretch), S, c, 2);
    expectAll(await decodeImage(await solid(c).tiff().toBuffer(), stretch), S, c, 2);
    expectAll(await decodeImage(await solid(c).avif({ quality: 90 }).toBuffer(), stretch), S, c, 12);
  });

  it('scales a 1×1 image up', async () => {
    const one = await solid([10, 200, 30], 1, 1).png().toBuffer();
    expectAll(await decodeImage(one, { size: 32, resize: 'crop' }), 32, [10, 200, 30], 1);
  });

  it('applies EXIF orientation: a rotated phone photo comes out upright', async () => {
    // Stored 40×20 with a red top-left corner; orientation 6 means "rotate 90° clockwise to show".
    // Shown upright it is 20×40 and the red corner is top-right.
    const stored = raw(40, 20, (x, y) => (x < 10 && y < 10 ? RED : [128, 128, 128]));
    const jpeg = await sharp(await stored.jpeg({ quality: 95 }).toBuffer()).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer();
    expect((await sharp(jpeg).metadata()).orientation).toBe(6);
    const img = await decodeImage(jpeg, { size: 20, resize: 'stretch' });
    expectColour(px(img, 20, 17, 2), RED, 30);
    expectColour(px(img, 20, 2, 2), [128, 128, 128], 20);
    expectColour(px(img, 20, 17, 17), [128, 128, 128], 20);
  });

  it('fits a non-square image by stretch, crop and pad', async () => {
    // 60×20: red | green | blue stripes, 20 px each
    const png = await raw(60, 20, (x) => (x < 20 ? RED : x < 40 ? GREEN : BLUE)).png().toBuffer();
    const N = 12;
    const stretched = await decodeImage(png, { size: N, resize: 'stretch' });
    for (const y of [0, 6, 11]) {
      expectColour(px(stretched, N, 1, y), RED, 20);
      expectColour(px(stretched, N, 6, y), GREEN, 20);
      expectColour(px(stretched, N, 10, y), BLUE, 20);
    }
    const cropped = await decodeImage(png, { size: N, resize: 'crop' });
    expectAll(cropped, N, GREEN, 20);
    const padded = await decodeImage(png, { size: N, resize: 'pad' });
    // 60×20 fits as 12×4, centred: rows 4–7 hold the stripes, the rest is black
    for (const y of [0, 3, 8, 11]) for (const x of [0, 6, 11]) expectColour(px(padded, N, x, y), BLACK, 20);
    expectColour(px(padded, N, 1, 5), RED, 40);
    expectColour(px(padded, N, 6, 5), GREEN, 40);
    expectColour(px(padded, N, 10, 5), BLUE, 40);
  });

  it('fits a square image the same way in every mode (so square datasets train as before the crop default)', async () => {
    // A textured 128×128 JPEG, as flowers_kaggle_128's: enlarged to 224 and reduced to 96.
    const jpeg = await raw(128, 128, (x, y) => [(x * 7 + y * 3) % 256, (x * y) % 256, (x ^ y) * 2 % 256]).jpeg().toBuffer();
    for (const size of [224, 96]) {
      const stretched = await decodeImage(jpeg, { size, resize: 'stretch' });
      expect(Buffer.from(await decodeImage(jpeg, { size, resize: 'crop' })).equals(Buffer.from(stretched))).toBe(true);
      expect(Buffer.from(await decodeImage(jpeg, { size, resize: 'pad' })).equals(Buffer.from(stretched))).toBe(true);
    }
  });

  it('pads a transparent image with black and flattens its transparent part white', async () => {
    const rgba = Buffer.alloc(40 * 20 * 4); // fully transparent 40×20
    const png = await sharp(rgba, { raw: { width: 40, height: 20, channels: 4 } }).png().toBuffer();
    const img = await decodeImage(png, { size: 10, resize: 'pad' });
    expectColour(px(img, 10, 5, 0), BLACK, 10);
    expectColour(px(img, 10, 5, 5), WHITE, 10);
  });

  it('throws plain errors with short reasons', async () => {
    await expect(decodeImage(Buffer.alloc(0), stretch)).rejects.toThrow(/^empty file$/);
    await expect(decodeImage(path.join(tmp, 'nope.jpg'), stretch)).rejects.toThrow(/^file not found$/);
    await expect(decodeImage(Buffer.from('BM\x00\x00 not really'), stretch)).rejects.toThrow(/BMP/);
    await expect(decodeImage(Buffer.from('<!DOCTYPE html><html>404</html>'), stretch)).rejects.toThrow(/HTML/);
    await expect(decodeImage(Buffer.from('x'), { size: 0, resize: 'stretch' })).rejects.toThrow(RangeError);
  });
});

describe('decodeAll', () => {
  it('keeps order, reports bad files with readable reasons and goes on', async () => {
    const good1 = await write('good1.png', await solid(RED).png().toBuffer());
    const good2 = await write('good2.jpg', await solid(GREEN).jpeg({ quality: 95 }).toBuffer());
    const good3 = await write('good3.webp', await solid(BLUE).webp({ lossless: true }).toBuffer());
    const photo = await raw(200, 150, (x, y) => [x, y, (x + y) & 255]).jpeg().toBuffer();
    const empty = await write('empty.jpg', Buffer.alloc(0));
    const text = await write('text.jpg', 'this is a text file with an image extension\n');
    const truncated = await write('truncated.jpg', photo.subarray(0, Math.floor(photo.length * 0.6)));
    const files = [empty, good1, text, good2, truncated, good3, path.join(tmp, 'missing.png'), good1];

    const progress: number[] = [];
    const { images, failures } = await decodeAll(files, {
      ...stretch,
      concurrency: 3,
      onProgress: (done, total) => {
        expect(total).toBe(files.length);
        progress.push(done);
      },
    });
    expect(images).toHaveLength(files.length);
    expect(images.map((im) => im !== undefined)).toEqual([false, true, false, true, false, true, false, true]);
    expectAll(images[1]!, S, RED, 4);
    expectAll(images[3]!, S, GREEN, 8);
    expectAll(images[5]!, S, BLUE, 2);
    expect(images[7]).toEqual(images[1]); // the same path twice: decoded once, same pixels
    expect(failures.map((f) => path.basename(f.path))).toEqual(['empty.jpg', 'text.jpg', 'truncated.jpg', 'missing.png']);
    expect(failures[0]!.reason).toBe('empty file');
    expect(failures[1]!.reason).toMatch(/^cannot decode: unsupported image format \(the file holds text/);
    expect(failures[2]!.reason).toMatch(/^cannot decode: truncated or corrupt file/);
    expect(failures[3]!.reason).toBe('file not found');
    for (const f of failures) expect(f.reason).not.toMatch(/\n/);
    expect(progress).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('handles an empty list', async () => {
    expect(await decodeAll([], stretch)).toEqual({ images: [], failures: [] });
  });
});

describe('hymenoptera_data (shared)', () => {
  it('decodes the GIF placeholder and the file name with a space', async (ctx) => {
    needShared(ctx, 'decoding real photos (a GIF, a name with a space)', HYMENOPTERA);
    const files = ['train/ants/imageNotFound.gif', 'train/ants/ant photos.jpg'].map((f) => path.join(hymenoptera, f));
    const { images, failures } = await decodeAll(files, { size: 224, resize: 'crop' });
    expect(failures).toEqual([]);
    for (const im of images) expect(im).toHaveLength(224 * 224 * 3);
  });
});
