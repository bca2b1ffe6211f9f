/**
 * Decoding image files into the backbone's input: `size × size × 3` 8-bit sRGB bytes, HWC.
 *
 * Every image goes through the same sharp pipeline, in training and in prediction:
 *   1. first frame only (animated GIF / WebP / multi-page TIFF),
 *   2. EXIF orientation applied (phone photos come out upright),
 *   3. alpha flattened onto white (how browsers and image viewers show transparent images),
 *   4. any colour space (CMYK, grayscale, palette, 16-bit, embedded ICC profile) → 8-bit sRGB,
 *   5. resized to size × size with sharp's default Lanczos-3 kernel (it antialiases when shrinking,
 *      like PIL's resize that produced the ImageNet training images; Keras's tf.image.resize
 *      'bilinear' does not antialias, so pixels differ slightly from Keras — not the accuracy).
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import sharp from 'sharp';
import type { ResizeMode } from './types.js';

export interface DecodeOptions {
  /** Output width and height in pixels. */
  size: number;
  /**
   * How a non-square image is fitted:
   * - 'stretch': resize to size × size, ignoring the aspect ratio (what Keras does);
   * - 'crop':    resize the short side to `size`, then cut the centre square (finetune's default: how
   *              ImageNet backbones were evaluated, and fastai's and timm's choice);
   * - 'pad':     fit the whole image inside, then pad with black.
   */
  resize: ResizeMode;
}

export interface DecodeAllOptions extends DecodeOptions {
  /** Images decoded at the same time. Default: the number of CPUs (os.availableParallelism()). */
  concurrency?: number;
  /** Called after each file, decoded or failed. */
  onProgress?: (done: number, total: number) => void;
}

export interface DecodeAllResult {
  /** One entry per input file, in input order; undefined where decoding failed. */
  images: (Uint8Array | undefined)[];
  /** Files that could not be decoded, in input order, with a short reason. */
  failures: { path: string; reason: string }[];
}

const RESIZE_FIT = { stretch: 'fill', crop: 'cover', pad: 'contain' } as const;

let sharpConfigured = false;

/**
 * Sharp's defaults suit one big image at a time; here we decode thousands of small ones, once each:
 * - cache off: libvips's operation cache only pays when the same operation repeats, and it would keep
 *   up to 50 MB and 20 open files of images that are never read again;
 * - one libvips thread per image: decodeAll runs several images at once instead (libuv's pool runs up
 *   to 4 sharp jobs), which keeps the cores busier than splitting a small image into tiles, and
 *   keeps memory low (it is also sharp's own default on glibc Linux).
 */
function configureSharp(): void {
  if (sharpConfigured) return;
  sharpConfigured = true;
  sharp.cache(false);
  sharp.concurrency(1);
}

function checkOptions(options: DecodeOptions): void {
  const { size, resize } = options;
  if (!Number.isInteger(size) || size < 1 || size > 4096) {
    throw new RangeError(`decode size must be an integer from 1 to 4096, got ${size}`);
  }
  if (!(resize in RESIZE_FIT)) {
    throw new RangeError(`resize must be 'stretch', 'crop' or 'pad', got ${String(resize)}`);
  }
}

/**
 * Decodes one image file (path or file contents) into `size × size × 3` RGB bytes (HWC).
 *
 * Throws a plain Error whose message is a short reason a person can act on, e.g. "empty file" or
 * "cannot decode: unsupported image format"; callers record it and go on with the other files.
 */
export async function decodeImage(file: string | Buffer, options: DecodeOptions): Promise<Uint8Array> {
  checkOptions(options);
  configureSharp();
  const { size, resize } = options;

  let input: Buffer;
  if (typeof file === 'string') {
    try {
      // Read the bytes ourselves: an empty file and a missing one get clear reasons, and sharp keeps
      // no file handle open.
      input = await fsp.readFile(file);
    } catch (err) {
      throw new Error(fileErrorReason(err));
    }
  } else {
    input = file;
  }
  if (input.length === 0) throw new Error('empty file');

  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    // failOn 'truncated': a cut-off download is an error, but the harmless warnings many real JPEGs
    // carry ("extraneous bytes before marker") are not — PIL and TensorFlow read those too.
    ({ data, info } = await sharp(input, { failOn: 'truncated', autoOrient: true })
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .resize(size, size, {
        fit: RESIZE_FIT[resize],
        position: 'centre',
        background: { r: 0, g: 0, b: 0, alpha: 1 },
      })
      .raw()
      .toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new Error(sharpErrorReason(err, input));
  }
  return toRgb(data, info, size);
}

/**
 * Decodes many files with bounded concurrency. Keeps the input order, decodes a path that occurs
 * twice only once, and never throws for a bad file: it is listed in `failures` and its image is
 * undefined.
 */
export async function decodeAll(files: string[], options: DecodeAllOptions): Promise<DecodeAllResult> {
  checkOptions(options);
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? defaultConcurrency()));
  const total = files.length;
  const images: (Uint8Array | undefined)[] = new Array(total).fill(undefined);
  const reasons: (string | undefined)[] = new Array(total).fill(undefined);
  const inFlight = new Map<string, Promise<Uint8Array>>();
  const decodeOpts: DecodeOptions = { size: options.size, resize: options.resize };

  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      const file = files[i]!;
      let job = inFlight.get(file);
      if (job === undefined) {
        job = decodeImage(file, decodeOpts);
        inFlight.set(file, job);
      }
      try {
        images[i] = await job;
      } catch (err) {
        reasons[i] = err instanceof Error ? err.message : String(err);
      }
      done++;
      options.onProgress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));

  const failures: { path: string; reason: string }[] = [];
  for (let i = 0; i < total; i++) {
    if (reasons[i] !== undefined) failures.push({ path: files[i]!, reason: reasons[i]! });
  }
  return { images, failures };
}

function defaultConcurrency(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : 4;
}

/** Makes sure the result is exactly size·size·3 bytes (sharp gives 3 bands for sRGB; guard anyway). */
function toRgb(data: Buffer, info: sharp.OutputInfo, size: number): Uint8Array {
  if (info.width !== size || info.height !== size) {
    throw new Error(`cannot decode: resized to ${info.width}×${info.height} instead of ${size}×${size}`);
  }
  const n = size * size;
  const ch = info.channels;
  if (ch === 3 && data.length === n * 3) {
    // Copy out of sharp's buffer: it may be a slice of a larger pooled allocation.
    return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  }
  if (data.length !== n * ch) throw new Error(`cannot decode: unexpected pixel data (${ch} channels, ${data.length} bytes)`);
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    if (ch < 3) {
      const v = data[i * ch]!;
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = v;
    } else {
      out[i * 3] = data[i * ch]!;
      out[i * 3 + 1] = data[i * ch + 1]!;
      out[i * 3 + 2] = data[i * ch + 2]!;
    }
  }
  return out;
}

function fileErrorReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return 'file not found';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied (cannot read the file)';
    case 'EISDIR':
      return 'is a folder, not a file';
    default:
      return `cannot read the file (${code ?? (err instanceof Error ? err.message : String(err))})`;
  }
}

/** Turns sharp/libvips messages into one short line, with a hint where the bytes tell more. */
function sharpErrorReason(err: unknown, input: Buffer): string {
  const msg = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
  if (/unsupported image format/i.test(msg)) {
    const kind = sniff(input);
    return `cannot decode: unsupported image format${kind ? ` (${kind})` : ''}`;
  }
  // libvips keeps its last error per thread; with several decodes in flight the text is sometimes
  // lost ("Unknown error"), so look at the bytes: a JPEG or PNG without its end marker was cut off.
  if (/premature end|truncated|read error|unexpected end|end of (file|stream)/i.test(msg) || (/unknown error/i.test(msg) && looksTruncated(input))) {
    return `cannot decode: truncated or corrupt file (${stripPrefix(msg)})`;
  }
  if (/exceeds pixel limit/i.test(msg)) return 'image too large (over sharp’s 268-megapixel limit)';
  return `cannot decode: ${stripPrefix(msg)}`;
}

function looksTruncated(b: Buffer): boolean {
  const isJpeg = b.length > 3 && b[0] === 0xff && b[1] === 0xd8;
  if (isJpeg) return !(b[b.length - 2] === 0xff && b[b.length - 1] === 0xd9);
  const isPng = b.length > 8 && b.subarray(1, 4).toString('latin1') === 'PNG';
  if (isPng) return b.subarray(b.length - 12).indexOf('IEND', 0, 'latin1') < 0;
  return false;
}

function stripPrefix(msg: string): string {
  return msg.replace(/^Input (buffer|file) (has|contains) corrupt header: /i, '');
}

/** Names what a non-image file seems to be, from its first bytes. */
function sniff(b: Buffer): string | undefined {
  const head = b.subarray(0, 512).toString('latin1');
  if (head.startsWith('BM')) return 'looks like a BMP file: convert it to PNG or JPEG';
  if (/^\s*<(!doctype html|html|\?xml|svg)/i.test(head)) return 'looks like an HTML/XML page, not an image';
  if (head.startsWith('%PDF')) return 'looks like a PDF file';
  if (head.length > 8 && /ftyp(heic|heix|mif1|msf1)/.test(head.slice(4, 12))) {
    return 'looks like a HEIC photo: convert it to JPEG';
  }
  // Mostly printable ASCII: a text file with an image extension.
  let printable = 0;
  for (let i = 0; i < head.length; i++) {
    const c = head.charCodeAt(i);
    if ((c >= 32 && c < 127) || c === 9 || c === 10 || c === 13) printable++;
  }
  if (head.length > 0 && printable / head.length > 0.95) return 'the file holds text, not an image';
  return undefined;
}
