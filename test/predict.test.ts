import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { fineTune } from '../src/finetune.js';
import { loadClassifier } from '../src/predict/classifier.js';
import { parseCsv } from '../src/predict/formats.js';
import { predict, type Prediction } from '../src/predict/predict.js';
import { Sorter } from '../src/predict/sort.js';
import { runCli } from './helpers/run-cli.js';
import { needShared, repoRoot, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
let dir: string;
let model: string;
/** 12 shape images (true class = file-name prefix), in imgs/ and imgs/more/. */
let imgs: string;
let shapeFiles: string[];

/** Runs the CLI without blocking this worker (a long spawnSync starves vitest's own messages). */
function finetune(args: string[], options: { input?: string; cwd?: string } = {}) {
  return runCli(process.execPath, [bin, ...args], { cwd: options.cwd ?? dir, input: options.input, timeout: 120_000 });
}
const predictCli = (args: string[], options: { input?: string; cwd?: string } = {}) =>
  finetune(['predict', model, ...args, '--backend', 'wasm', '--batch-size', '5'], options);

const csvRows = (text: string) => parseCsv(text);
/** `make()` run once, on first use, by whichever test needs it first. */
function once<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
/** Every file below `root`, relative, sorted. */
function listTree(root: string): string[] {
  if (!existsSync(root)) return [];
  return (readdirSync(root, { recursive: true }) as string[])
    .filter((f) => !lstatSync(path.join(root, f)).isDirectory())
    .map((f) => f.split(path.sep).join('/'))
    .sort();
}

beforeAll(async () => {
  if (!existsSync(path.join(repoRoot, 'dist/predict/predict.js'))) throw new Error('dist/ is missing or old: run `npm run build` (npm test does it first)');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-predict-'));
  const data = path.join(dir, 'data');
  await makeShapesDataset(data, { trainPerClass: 16, validPerClass: 6, testCount: 12, size: 64, seed: 11 });
  const weights = sharedMobileNetWeights();
  model = path.join(dir, 'run');
  await fineTune({
    data, out: model, backbone: 'mobilenetv2', alpha: 0.35, imageSize: 96, weights: weights ?? 'none',
    epochs: 3, fineTuneEpochs: 0, augment: 'none', backend: 'wasm',
  });
  imgs = path.join(dir, 'imgs');
  mkdirSync(path.join(imgs, 'more'), { recursive: true });
  const test = path.join(data, 'test/unknown');
  readdirSync(test).sort().forEach((f, i) => copyFileSync(path.join(test, f), path.join(imgs, i < 8 ? f : `more/${f}`)));
  writeFileSync(path.join(imgs, 'notes.txt'), 'not an image, and not an image name: passed over in a folder');
  writeFileSync(path.join(imgs, '.hidden.png'), 'hidden: passed over');
  shapeFiles = listTree(imgs).filter((f) => f.endsWith('.png') && !f.startsWith('.'));
  expect(shapeFiles).toHaveLength(12);
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('finetune predict (child process)', () => {
  const labelImgs = once(() => predictCli(['imgs']));

  it('writes CSV to stdout, one row per image, and nothing else there', async () => {
    const run = await labelImgs();
    expect(run.status, run.stderr).toBe(0);
    const rows = csvRows(run.stdout);
    expect(rows[0]).toEqual(['file', 'label', 'confidence', 'circle', 'square', 'triangle', 'error']);
    expect(rows.slice(1).map((r) => r[0])).toEqual(shapeFiles.map((f) => `imgs/${f}`));
    for (const [, label, confidence, ...rest] of rows.slice(1)) {
      const p = rest.slice(0, 3).map(Number);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      expect(Number(confidence)).toBe(Math.max(...p));
      expect(label).toBe(['circle', 'square', 'triangle'][p.indexOf(Math.max(...p))]);
      expect(rest[3]).toBe('');
    }
    // Progress and the summary went to stderr only.
    expect(run.stdout).not.toMatch(/labelling|finetune predict|warning|backend/);
    expect(run.stderr).toMatch(/labelled 12 files/);
    expect(run.stderr).toMatch(/1 without an image extension, 1 hidden/);
  });

  // A random backbone labels at chance: label correctness is checked on real weights.
  it('with pretrained weights the labels are right: ≥ 9 of 12 shapes', async (ctx) => {
    needShared(ctx, 'label correctness after fine-tuning real ImageNet weights', TM_WEIGHTS);
    const run = await labelImgs();
    expect(run.status, run.stderr).toBe(0);
    const rows = csvRows(run.stdout).slice(1);
    expect(rows).toHaveLength(12);
    expect(rows.filter((r) => path.basename(r[0]!).startsWith(r[1]!)).length).toBeGreaterThanOrEqual(9);
  });

  it('writes jsonl, json and kaggle, each parsing with one record per image', async () => {
    const jsonl = await predictCli(['imgs', '--format', 'jsonl']);
    expect(jsonl.status, jsonl.stderr).toBe(0);
    const lines = jsonl.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((o) => o.file)).toEqual(shapeFiles.map((f) => `imgs/${f}`));
    expect(Object.keys(lines[0].probabilities)).toEqual(['circle', 'square', 'triangle']);

    const json = await predictCli(['imgs', '--format', 'json']);
    expect(json.status, json.stderr).toBe(0);
    const array = JSON.parse(json.stdout);
    expect(array).toHaveLength(12);
    expect(array).toEqual(lines);

    const kaggle = await predictCli(['imgs', '--format', 'kaggle', '--proba-of', 'square']);
    expect(kaggle.status, kaggle.stderr).toBe(0);
    const rows = csvRows(kaggle.stdout);
    expect(rows[0]).toEqual(['id', 'label']);
    expect(rows.slice(1).map((r) => r[0])).toEqual(shapeFiles.map((f) => path.basename(f, '.png')));
    rows.slice(1).forEach((r, i) => expect(Number(r[1])).toBe(lines[i].probabilities.square));

    const labels = await predictCli(['imgs', '--format', 'kaggle']);
    expect(csvRows(labels.stdout).slice(1).map((r) => r[1])).toEqual(lines.map((o) => o.label));
  });

  it('--top-k adds the k best labels; --threshold turns weak labels into --unknown-label', async () => {
    const top = await predictCli(['imgs', '--top-k', '2']);
    expect(top.status, top.stderr).toBe(0);
    const rows = csvRows(top.stdout);
    expect(rows[0]).toEqual(['file', 'label', 'confidence', 'circle', 'square', 'triangle', 'top1_label', 'top1_probability', 'top2_label', 'top2_probability', 'error']);
    for (const r of rows.slice(1)) {
      const p = r.slice(3, 6).map(Number);
      const order = [0, 1, 2].sort((a, b) => p[b]! - p[a]!);
      expect(r.slice(6, 10)).toEqual([['circle', 'square', 'triangle'][order[0]!], String(p[order[0]!]), ['circle', 'square', 'triangle'][order[1]!], String(p[order[1]!])]);
      expect(r[6]).toBe(r[1]);
    }

    const confidences = rows.slice(1).map((r) => Number(r[2]));
    // A cut between two distinct confidences near the middle. A model trained from random weights
    // (without ../shared) can give every image the same confidence: then a cut just above it.
    const distinct = [...new Set(confidences)].sort((a, b) => a - b);
    const middle = Math.max(1, Math.floor(distinct.length / 2));
    const cut = distinct.length > 1 ? (distinct[middle - 1]! + distinct[middle]!) / 2 : distinct[0]! + 1e-6;
    const under = confidences.filter((c) => c < cut).length;
    const thresholded = await predictCli(['imgs', '--threshold', String(cut), '--unknown-label', 'not-sure']);
    expect(thresholded.status, thresholded.stderr).toBe(0);
    const labels = csvRows(thresholded.stdout).slice(1).map((r) => r[1]);
    labels.forEach((label, i) => expect(label).toBe(confidences[i]! < cut ? 'not-sure' : rows[i + 1]![1]));
    expect(labels.filter((l) => l === 'not-sure')).toHaveLength(under);
    expect(thresholded.stderr).toMatch(new RegExp(`${under} of them under --threshold`));
  });

  type JsonlRecord = { probabilities: Record<string, number> };
  /** --tta, plain and mirrored-file predictions of the same 4 images. */
  const ttaRuns = once(async () => {
    // At the model's input size (96 px) decoding does not resample, so mirroring the file mirrors the input exactly.
    const straight = path.join(dir, 'tta-straight');
    const mirrored = path.join(dir, 'tta-mirrored');
    mkdirSync(straight);
    mkdirSync(mirrored);
    for (const f of readdirSync(path.join(imgs, 'more'))) {
      const resized = await sharp(path.join(imgs, 'more', f)).resize(96, 96).png().toBuffer();
      writeFileSync(path.join(straight, f), resized);
      await sharp(resized).flop().toFile(path.join(mirrored, f));
    }
    const jsonl = async (args: string[]): Promise<JsonlRecord[]> => {
      const run = await predictCli([...args, '--format', 'jsonl']);
      expect(run.status, run.stderr).toBe(0);
      return run.stdout.trim().split('\n').map((l) => JSON.parse(l));
    };
    return { tta: await jsonl(['tta-straight', '--tta']), plain: await jsonl(['tta-straight']), flipped: await jsonl(['tta-mirrored']) };
  });

  it('--tta averages each image with its mirror image', async () => {
    const { tta, plain, flipped } = await ttaRuns();
    expect(tta).toHaveLength(4);
    tta.forEach((t, i) => {
      for (const c of ['circle', 'square', 'triangle']) {
        expect(Math.abs(t.probabilities[c]! - (plain[i]!.probabilities[c]! + flipped[i]!.probabilities[c]!) / 2)).toBeLessThan(2e-5);
      }
    });
  });

  // A model trained from random weights may predict the same for an image and its mirror image.
  it('with pretrained weights --tta changes the predictions (mirroring is not a no-op)', async (ctx) => {
    needShared(ctx, 'a model whose predictions depend on orientation (real ImageNet weights)', TM_WEIGHTS);
    const { tta, plain } = await ttaRuns();
    const changed = tta.filter((t, i) => ['circle', 'square', 'triangle'].some((c) => Math.abs(t.probabilities[c]! - plain[i]!.probabilities[c]!) > 1e-4));
    expect(changed.length).toBeGreaterThan(0);
  });

  it('gives corrupt and non-image files an error row and exit status 3; 1 when nothing could be read', async () => {
    const bad = path.join(dir, 'bad');
    mkdirSync(bad, { recursive: true });
    writeFileSync(path.join(bad, 'corrupt.jpg'), 'this is not a jpeg');
    writeFileSync(path.join(bad, 'empty.png'), '');
    writeFileSync(path.join(bad, 'readme.txt'), 'plain text');
    const run = await predictCli(['imgs/more', 'bad', 'bad/readme.txt', 'missing.png']);
    expect(run.status).toBe(3);
    const rows = csvRows(run.stdout);
    expect(rows).toHaveLength(1 + 4 + 4);
    const errors = Object.fromEntries(rows.slice(1).filter((r) => r[1] === '').map((r) => [r[0], r.at(-1)]));
    expect(Object.keys(errors).sort()).toEqual(['bad/corrupt.jpg', 'bad/empty.png', 'bad/readme.txt', 'missing.png']);
    expect(errors['bad/empty.png']).toBe('empty file');
    expect(errors['missing.png']).toBe('file not found');
    expect(errors['bad/corrupt.jpg']).toMatch(/cannot decode/);
    for (const r of rows.slice(1)) if (r[1] === '') expect(r.slice(2, -1).every((x) => x === '')).toBe(true);
    expect(run.stderr).toMatch(/labelled 4 files/);
    expect(run.stderr).toMatch(/4 files could not be read/);

    const jsonl = await predictCli(['bad/corrupt.jpg', 'imgs/more/triangle_011.png', '--format', 'jsonl']);
    expect(jsonl.status).toBe(3);
    const first = JSON.parse(jsonl.stdout.split('\n')[0]!);
    expect(first).toMatchObject({ file: 'bad/corrupt.jpg', label: null });
    expect(first.error).toMatch(/cannot decode/);

    const kaggle = await predictCli(['bad/corrupt.jpg', 'imgs/more/triangle_011.png', '--format', 'kaggle']);
    expect(kaggle.status).toBe(3);
    expect(csvRows(kaggle.stdout).map((r) => r[0])).toEqual(['id', 'triangle_011']); // no room for errors in a submission

    const none = await predictCli(['bad']);
    expect(none.status).toBe(1);
    expect(csvRows(none.stdout)).toHaveLength(1 + 2);
  });

  it('reads paths from stdin with -, and takes glob patterns', async () => {
    const input = ['imgs/circle_000.png', '', 'imgs/more', 'nope.png'].join('\n') + '\n';
    const run = await predictCli(['-'], { input });
    expect(run.status).toBe(3);
    const rows = csvRows(run.stdout).slice(1);
    expect(rows.map((r) => r[0])).toEqual(['imgs/circle_000.png', ...shapeFiles.filter((f) => f.startsWith('more/')).map((f) => `imgs/${f}`), 'nope.png']);

    const glob = await predictCli(['imgs/**/square_*.png']);
    expect(glob.status, glob.stderr).toBe(0);
    expect(csvRows(glob.stdout).slice(1).map((r) => r[0])).toEqual(shapeFiles.filter((f) => /square_/.test(f)).map((f) => `imgs/${f}`));
  });

  it('--shard i/n splits the inputs into disjoint parts that cover them all', async () => {
    const parts: string[][] = [];
    for (const i of [1, 2, 3]) {
      const run = await predictCli(['imgs', '--shard', `${i}/3`]);
      expect(run.status, run.stderr).toBe(0);
      parts.push(csvRows(run.stdout).slice(1).map((r) => r[0]!));
    }
    const all = parts.flat();
    expect(new Set(all).size).toBe(all.length);
    expect(all.sort()).toEqual(shapeFiles.map((f) => `imgs/${f}`).sort());
    expect(parts.every((p) => p.length < 12)).toBe(true);
    const again = await predictCli(['imgs', '--shard', '2/3']);
    expect(csvRows(again.stdout).slice(1).map((r) => r[0])).toEqual(parts[1]);
  });

  it('--output writes atomically; --resume skips the files already there and retries failed ones', async () => {
    const out = path.join(dir, 'labels.csv');
    const first = await predictCli(['imgs/more', 'missing.png', '--output', out]);
    expect(first.status).toBe(3);
    expect(first.stdout).toBe('');
    expect(existsSync(`${out}.partial`)).toBe(false);
    expect(csvRows(readFileSync(out, 'utf8'))).toHaveLength(1 + 5);

    const resumed = await predictCli(['imgs', 'missing.png', '--output', out, '--resume']);
    expect(resumed.status).toBe(3);
    expect(resumed.stderr).toMatch(/4 files skipped: already labelled/);
    expect(resumed.stderr).toMatch(/labelled 8 files/);
    const rows = csvRows(readFileSync(out, 'utf8')).slice(1);
    expect(rows.map((r) => r[0]).sort()).toEqual([...shapeFiles.map((f) => `imgs/${f}`), 'missing.png'].sort());
    expect(rows.filter((r) => r[0] === 'missing.png')).toHaveLength(1); // the failed file was tried again, not kept twice

    // An interrupted run leaves labels.jsonl.partial; its complete records are kept, a cut-off one is not.
    const jsonl = path.join(dir, 'labels.jsonl');
    const full = (await predictCli(['imgs/more', '--format', 'jsonl'])).stdout.split('\n');
    writeFileSync(`${jsonl}.partial`, `${full[0]}\n${full[1]}\n${full[2]!.slice(0, 30)}`);
    const cont = await predictCli(['imgs/more', '--format', 'jsonl', '--output', jsonl, '--resume']);
    expect(cont.status, cont.stderr).toBe(0);
    expect(cont.stderr).toMatch(/2 files skipped/);
    expect(readFileSync(jsonl, 'utf8').trim().split('\n').map((l) => JSON.parse(l).file)).toEqual(
      shapeFiles.filter((f) => f.startsWith('more/')).map((f) => `imgs/${f}`),
    );
    expect(existsSync(`${jsonl}.partial`)).toBe(false);

    const otherFormat = await predictCli(['imgs', '--output', out, '--resume', '--top-k', '2']);
    expect(otherFormat.status).toBe(2);
    expect(otherFormat.stderr).toMatch(/written with other options/);
  });

  describe('--sort-into', () => {
    const originals = () => Object.fromEntries(shapeFiles.map((f) => [f, sha(path.join(imgs, f))]));

    it('copies into <dir>/<label>/ and never overwrites (a clash gets a new name)', async () => {
      const sorted = path.join(dir, 'sorted-copy');
      mkdirSync(path.join(sorted, 'circle'), { recursive: true });
      writeFileSync(path.join(sorted, 'circle', 'circle_000.png'), 'already here');
      const before = originals();
      const run = await predictCli(['imgs', '--sort-into', sorted]);
      expect(run.status, run.stderr).toBe(0);
      const labels = Object.fromEntries(csvRows(run.stdout).slice(1).map((r) => [path.basename(r[0]!), r[1]!]));
      expect(readFileSync(path.join(sorted, 'circle', 'circle_000.png'), 'utf8')).toBe('already here');
      const tree = listTree(sorted);
      expect(tree).toHaveLength(13);
      for (const [name, label] of Object.entries(labels)) {
        const clash = label === 'circle' && name === 'circle_000.png';
        expect(tree).toContain(`${label}/${clash ? 'circle_000-1.png' : name}`);
      }
      expect(originals()).toEqual(before); // the originals are untouched

      const again = await predictCli(['imgs', '--sort-into', sorted, '--copy']);
      expect(again.status, again.stderr).toBe(0);
      expect(listTree(sorted)).toHaveLength(25); // every file once more, under new names
    });

    it('--dry-run prints the plan and changes nothing', async () => {
      const sorted = path.join(dir, 'sorted-dry');
      const run = await predictCli(['imgs/more', '--sort-into', sorted, '--move', '--dry-run']);
      expect(run.status, run.stderr).toBe(0);
      expect(existsSync(sorted)).toBe(false);
      expect(listTree(path.join(imgs, 'more'))).toHaveLength(4);
      const labels = csvRows(run.stdout).slice(1).map((r) => [r[0]!, r[1]!]);
      for (const [file, label] of labels) {
        expect(run.stderr).toContain(`move ${file} -> ${path.relative(dir, path.join(sorted, label, path.basename(file)))}`);
      }
      expect(run.stderr).toMatch(/dry run: 4 files would be moved/);
    });

    it('--link makes symbolic links to the originals', async () => {
      const sorted = path.join(dir, 'sorted-link');
      const run = await predictCli(['imgs/more', '--sort-into', sorted, '--link']);
      expect(run.status, run.stderr).toBe(0);
      for (const [file, label] of csvRows(run.stdout).slice(1).map((r) => [r[0]!, r[1]!])) {
        const link = path.join(sorted, label, path.basename(file));
        expect(lstatSync(link).isSymbolicLink()).toBe(true);
        expect(readlinkSync(link)).toBe(path.join(dir, file));
      }
    });

    it('--move moves every file exactly once, losing none and overwriting none', async () => {
      const source = path.join(dir, 'to-move');
      mkdirSync(source);
      const hashes = new Map<string, string>();
      for (const f of shapeFiles) {
        const target = path.join(source, path.basename(f));
        copyFileSync(path.join(imgs, f), target);
        hashes.set(sha(target), path.basename(f));
      }
      const sorted = path.join(dir, 'sorted-move');
      mkdirSync(path.join(sorted, 'square'), { recursive: true });
      writeFileSync(path.join(sorted, 'square', 'square_001.png'), 'keep me');
      const run = await predictCli(['to-move', '--sort-into', sorted, '--move']);
      expect(run.status, run.stderr).toBe(0);
      expect(readdirSync(source)).toEqual([]);
      expect(readFileSync(path.join(sorted, 'square', 'square_001.png'), 'utf8')).toBe('keep me');
      const moved = listTree(sorted).filter((f) => f !== 'square/square_001.png');
      expect(moved).toHaveLength(12);
      expect(new Set(moved.map((f) => sha(path.join(sorted, f))))).toEqual(new Set(hashes.keys()));
      const labels = Object.fromEntries(csvRows(run.stdout).slice(1).map((r) => [path.basename(r[0]!), r[1]!]));
      for (const f of moved) expect(labels[hashes.get(sha(path.join(sorted, f)))!]).toBe(f.split('/')[0]);
      expect(run.stderr).toMatch(/12 files moved into/);
    });
  });

  it('accepts the model/ folder too, and says what is wrong with a broken model folder', async () => {
    const viaModel = await finetune(['predict', path.join(model, 'model'), 'imgs/more', '--backend', 'wasm']);
    expect(viaModel.status, viaModel.stderr).toBe(0);

    const broken = path.join(dir, 'broken-run');
    mkdirSync(path.join(broken, 'model'), { recursive: true });
    copyFileSync(path.join(model, 'model/model.json'), path.join(broken, 'model/model.json'));
    const config = JSON.parse(readFileSync(path.join(model, 'finetune.json'), 'utf8'));
    writeFileSync(path.join(broken, 'finetune.json'), JSON.stringify(config));
    const noWeights = await finetune(['predict', broken, 'imgs/more', '--backend', 'wasm']);
    expect(noWeights.status).toBe(1);
    expect(noWeights.stderr).toMatch(/incomplete: cannot read weights-[0-9a-f]+\.bin/);

    writeFileSync(path.join(broken, 'finetune.json'), JSON.stringify({ ...config, format: 'finetune-model/99' }));
    const newer = await finetune(['predict', broken, 'imgs/more']);
    expect(newer.status).toBe(1);
    expect(newer.stderr).toMatch(/format finetune-model\/99.*newer finetune/);

    const notModel = await finetune(['predict', imgs, 'imgs/more']);
    expect(notModel.status).toBe(1);
    expect(notModel.stderr).toMatch(/not a finetune model folder: it has no finetune.json/);
  });

  it('rejects bad flags with exit status 2', async () => {
    const cases: [string[], RegExp][] = [
      [['imgs', '--resume'], /--resume needs --output/],
      [['imgs', '--sort-into', 'x', '--copy', '--move'], /one of --copy, --move and --link/],
      [['imgs', '--move'], /--move goes with --sort-into/],
      [['imgs', '--shard', '4/3'], /--shard 4\/3 is not valid/],
      [['imgs', '--threshold', '1.5'], /--threshold 1.5/],
      [['imgs', '--top-k', '4'], /--top-k 4 is not valid.*\(3\)/],
      [['imgs', '--format', 'kaggle', '--proba-of', 'dog'], /no such class; its classes are circle, square, triangle/],
      [['imgs', '--format', 'xml'], /Allowed choices are csv, jsonl, json, kaggle/],
    ];
    for (const [args, message] of cases) {
      const run = await predictCli(args);
      expect(run.status, args.join(' ')).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(run.stdout).toBe('');
    }
  });
});

describe('predict (library)', () => {
  it('streams results batch by batch with a flat tensor count', async () => {
    const clf = await loadClassifier(model, { backend: 'wasm' });
    try {
      const base = tf.memory().numTensors;
      const counts: number[] = [];
      const results: Prediction[] = [];
      for await (const p of predict(clf, [imgs, imgs /* named twice: once */], { batchSize: 3, tta: true, topK: 3 })) {
        counts.push(tf.memory().numTensors);
        results.push(p);
      }
      expect(results).toHaveLength(12);
      expect(new Set(counts)).toEqual(new Set([base])); // nothing left behind by 4 batches
      const p = results[0]!;
      expect(p.error).toBeUndefined();
      if (p.error === undefined) {
        expect(p.top!.map((t) => t.label).sort()).toEqual(['circle', 'square', 'triangle']);
        expect(p.top![0]!.label).toBe(p.label);
      }
    } finally {
      clf.dispose();
    }
  });

  it('loads and frees the model itself when given a folder, and stops when the loop breaks', async () => {
    const before = tf.memory().numTensors;
    let n = 0;
    for await (const p of predict(model, [imgs], { batchSize: 4, backend: 'wasm' })) {
      expect(p.label).not.toBeNull();
      if (++n === 5) break;
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('moves across file systems by copy, verify, then delete (when /dev/shm is another file system)', async () => {
    const other = '/dev/shm';
    if (!existsSync(other) || statSync(other).dev === statSync(dir).dev) {
      console.warn('note: no second file system here; cross-device move not tested');
      return;
    }
    const target = mkdtempSync(path.join(other, 'finetune-sort-'));
    try {
      const source = path.join(dir, 'cross.png');
      copyFileSync(path.join(imgs, shapeFiles[0]!), source);
      const hash = sha(source);
      const sorter = new Sorter({ dir: target, mode: 'move' });
      const outcome = await sorter.place(source, 'circle');
      expect(outcome).toEqual({ action: 'move', destination: path.join(target, 'circle', 'cross.png'), dryRun: false });
      expect(existsSync(source)).toBe(false);
      expect(sha(outcome.destination)).toBe(hash);
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });
});
