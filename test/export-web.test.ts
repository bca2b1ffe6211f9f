/**
 * `finetune export --format web`, checked as a person would use it: the folder's index.html opened
 * from disk (file://) in headless Chromium with no network, images given to its file input, and
 * the labels it shows compared with `finetune predict`'s for the same files.
 *
 * Needs Debian's chromium (/usr/bin/chromium, or FINETUNE_CHROMIUM): without it these tests skip,
 * saying so, and under CI they fail (CI installs it).
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import puppeteer, { type Browser } from 'puppeteer-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { decodeImage } from '../src/data/decode.js';
import { initEngine } from '../src/engine/backend.js';
import { webFormat, WEB_FILES } from '../src/export/web.js';
import { writeColorModel } from './helpers/color-model.js';
import { writeExportRun } from './helpers/export-run.js';
import { runCli } from './helpers/run-cli.js';
import { inCI, needShared, repoRoot, sharedPath, TM_WEIGHTS, tmWeightsDir } from './helpers/shared.js';

const chromium = process.env.FINETUNE_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(chromium);
const bin = path.join(repoRoot, 'bin/finetune.js');

/** Skips (locally) or fails (under CI) when there is no Chromium to open the page in. */
function needChromium(ctx: TestContext): void {
  if (haveChromium) return;
  const reason = `the web export's browser check needs Chromium at ${chromium} (apt-get install chromium, or set FINETUNE_CHROMIUM)`;
  if (inCI()) throw new Error(`${reason}: CI must run it`);
  ctx.skip(reason);
}

let tmp: string;
let browser: Browser | undefined;
beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-web-'));
  await initEngine('wasm');
  if (!haveChromium) return;
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--user-data-dir=${path.join(tmp, 'chromium-profile')}`,
    ],
  });
});
afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface Labelled {
  file: string;
  label: string;
  probabilities: number[];
}

/** Opens the export's index.html from disk, gives it `files`, and returns what the page shows (in the files' order) and every URL it asked for. */
async function labelInPage(webDir: string, files: string[]): Promise<{ results: Labelled[]; requests: string[]; status: string }> {
  const page = await browser!.newPage();
  const requests: string[] = [];
  page.on('request', (request) => requests.push(request.url()));
  try {
    await page.goto(pathToFileURL(path.join(webDir, 'index.html')).href);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 120_000 });
    const input = await page.$('#files');
    await input!.uploadFile(...files);
    await page.waitForFunction(`document.body.dataset.done === '${files.length}'`, { timeout: 300_000 });
    const shown = await page.$$eval('#results .result', (items) =>
      items.map((li) => ({
        file: li.getAttribute('data-file') ?? '',
        label: li.getAttribute('data-label') ?? '',
        probabilities: JSON.parse(li.getAttribute('data-probabilities') ?? '[]') as number[],
        error: li.getAttribute('data-error'),
      })),
    );
    const status = await page.$eval('#status', (el) => el.textContent ?? '');
    const byName = new Map(shown.map((r) => [r.file, r]));
    const results = files.map((f) => {
      const r = byName.get(path.basename(f));
      if (r === undefined || r.error !== null) throw new Error(`the page shows no label for ${path.basename(f)}${r?.error ? `: ${r.error}` : ''}`);
      return r;
    });
    return { results, requests, status };
  } finally {
    await page.close();
  }
}

/** `finetune predict --format jsonl` for `files`, by file name. */
async function predictCli(run: string, files: string[]): Promise<Map<string, Labelled>> {
  const result = await runCli(process.execPath, [bin, 'predict', run, ...files, '--format', 'jsonl', '--backend', 'wasm', '--quiet'], { timeout: 300_000 });
  expect(result.stderr).not.toMatch(/error/i);
  expect(result.status).toBe(0);
  const classes = JSON.parse(readFileSync(path.join(run, 'finetune.json'), 'utf8')).classes as string[];
  const rows = result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { file: string; label: string; probabilities: Record<string, number> });
  return new Map(rows.map((r) => [path.basename(r.file), { file: r.file, label: r.label, probabilities: classes.map((c) => r.probabilities[c]!) }]));
}

async function exportWeb(run: string): Promise<string> {
  const out = path.join(run, 'export', 'web');
  const written = await webFormat.export({ runDir: run, out, log: () => undefined });
  expect(written.sort()).toEqual(WEB_FILES.map((f) => path.join('web', f)).sort());
  return out;
}

const maxDifference = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));

/** A PNG of bands of colour side by side (x) or stacked (y): [width or height in px, rgb] each. */
async function bandsPng(file: string, bands: [number, [number, number, number]][], across: 'x' | 'y', other: number): Promise<string> {
  const long = bands.reduce((n, [w]) => n + w, 0);
  const [width, height] = across === 'x' ? [long, other] : [other, long];
  const pixels = Buffer.alloc(width * height * 3);
  let start = 0;
  for (const [w, rgb] of bands) {
    for (let a = start; a < start + w; a++) {
      for (let b = 0; b < other; b++) {
        const [x, y] = across === 'x' ? [a, b] : [b, a];
        pixels.set(rgb, (y * width + x) * 3);
      }
    }
    start += w;
  }
  await sharp(pixels, { raw: { width, height, channels: 3 } }).png().toFile(file);
  return file;
}

/** Left half transparent, right half blue: training flattens transparency onto white. */
async function halfTransparentPng(file: string): Promise<string> {
  const blue = { create: { width: 30, height: 40, channels: 4 as const, background: { r: 20, g: 20, b: 230, alpha: 1 } } };
  await sharp({ create: { width: 60, height: 40, channels: 4, background: { r: 20, g: 20, b: 230, alpha: 0 } } })
    .composite([{ input: blue, left: 30, top: 0 }])
    .png()
    .toFile(file);
  return file;
}

describe('the web export in a browser', () => {
  it.for(['stretch', 'crop', 'pad'] as const)(
    'resize %s: the page shows the labels and probabilities finetune predict gives (a colour model, images of every shape)',
    async (resize, ctx) => {
      needChromium(ctx);
      // Class c is colour channel c: the label is the dominant colour of what the resize kept.
      const run = path.join(tmp, `colour-${resize}`);
      await writeColorModel(run, { classes: ['red', 'green', 'blue'], gain: 6, size: 16 });
      const config = JSON.parse(readFileSync(path.join(run, 'finetune.json'), 'utf8'));
      writeFileSync(path.join(run, 'finetune.json'), JSON.stringify({ ...config, input: { ...config.input, resize } }));
      const images = path.join(run, 'images');
      mkdirSync(images);
      const red: [number, number, number] = [230, 20, 20];
      const green: [number, number, number] = [20, 230, 20];
      const blue: [number, number, number] = [20, 20, 230];
      const files = [
        // Stretch and pad see mostly red; crop keeps only the green centre.
        await bandsPng(path.join(images, 'wide.png'), [[100, red], [100, green], [100, red]], 'x', 100),
        // Stretch and pad see mostly blue; crop keeps only the red centre.
        await bandsPng(path.join(images, 'tall.png'), [[90, blue], [90, red], [90, blue]], 'y', 90),
        await bandsPng(path.join(images, 'small.png'), [[5, green]], 'x', 5),
        await halfTransparentPng(path.join(images, 'half-transparent.png')),
      ];
      const expected = await predictCli(run, files);
      const web = await exportWeb(run);
      const { results, requests } = await labelInPage(web, files);
      for (const r of results) {
        const e = expected.get(r.file)!;
        expect(r.label, r.file).toBe(e.label);
        // Hard colour edges: the page's resampling is libvips's to within a level or two there.
        expect(maxDifference(r.probabilities, e.probabilities), r.file).toBeLessThan(0.02);
      }
      expect(results.map((r) => r.label)).toEqual(resize === 'crop' ? ['green', 'red', 'green', 'blue'] : ['red', 'blue', 'green', 'blue']);
      expect(requests.filter((url) => !url.startsWith('file://'))).toEqual([]);
    },
  );

  it("MobileNetV2 α=0.35 (ImageNet weights): the page gives finetune predict's labels and probabilities for photos", async (ctx) => {
    needChromium(ctx);
    needShared(ctx, 'the web export check on real photos', TM_WEIGHTS, 'datasets/hymenoptera_data');
    const size = 96;
    const run = await writeExportRun(path.join(tmp, 'mobilenet'), {
      backbone: 'mobilenetv2',
      alpha: 0.35,
      imageSize: size,
      classes: ['ants', 'bees'],
      weights: tmWeightsDir,
    });
    const photos = ['ants', 'bees'].flatMap((c) => {
      const dir = sharedPath(`datasets/hymenoptera_data/val/${c}`);
      return readdirSync(dir)
        .sort()
        .slice(0, 6)
        .map((f) => path.join(dir, f));
    });
    // The same photos already resized by finetune's own decoder: the browser then reads them
    // pixel for pixel, so what differs is the model's arithmetic alone (WebGL against WebAssembly).
    const exact = await Promise.all(
      photos.map(async (file) => {
        const out = path.join(run, `${path.basename(file, '.jpg')}-${size}.png`);
        const pixels = await decodeImage(file, { size, resize: 'stretch' });
        await sharp(Buffer.from(pixels), { raw: { width: size, height: size, channels: 3 } }).png().toFile(out);
        return out;
      }),
    );
    // And one with its left half transparent: both flatten it onto white before the model sees it.
    const seeThrough = path.join(run, 'half-transparent.png');
    const rgba = Buffer.from(await sharp(exact[0]!).ensureAlpha().raw().toBuffer());
    for (let y = 0; y < size; y++) for (let x = 0; x < size / 2; x++) rgba[(y * size + x) * 4 + 3] = 0;
    await sharp(rgba, { raw: { width: size, height: size, channels: 4 } }).png().toFile(seeThrough);
    exact.push(seeThrough);

    const expected = await predictCli(run, [...photos, ...exact]);
    const web = await exportWeb(run);
    const { results, status, requests } = await labelInPage(web, [...photos, ...exact]);
    expect(status).toMatch(/^Labelled 25 images/);
    expect(requests.filter((url) => !url.startsWith('file://'))).toEqual([]);

    for (const r of results.slice(photos.length)) {
      const e = expected.get(r.file)!;
      expect(r.label, r.file).toBe(e.label);
      expect(maxDifference(r.probabilities, e.probabilities), r.file).toBeLessThan(1e-3);
    }
    // Full-size photos: the page resizes them itself (sharp's shrink-on-load, box and Lanczos-3
    // steps, in JavaScript), within a level or so of finetune's decoder; labels must agree
    // wherever predict's answer is not a near tie.
    const clear = results.slice(0, photos.length).filter((r) => {
      const p = expected.get(r.file)!.probabilities;
      return Math.abs(p[0]! - p[1]!) >= 0.05;
    });
    expect(clear.length).toBeGreaterThanOrEqual(photos.length / 2);
    for (const r of clear) expect(r.label, r.file).toBe(expected.get(r.file)!.label);
    for (const r of results.slice(0, photos.length)) {
      expect(maxDifference(r.probabilities, expected.get(r.file)!.probabilities), r.file).toBeLessThan(0.03);
    }
  });
});
