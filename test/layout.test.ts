import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FinetuneError } from '../src/errors.js';
import { compareCodePoints, discoverLayout } from '../src/data/layout.js';
import { needSharedForSuite, sharedPath } from './helpers/shared.js';

const HYMENOPTERA = 'datasets/hymenoptera_data';
const FLOWERS = 'datasets/flowers_kaggle_128';
const hymenoptera = sharedPath(HYMENOPTERA);
const flowers = sharedPath(FLOWERS);

let tmp: string;
let counter = 0;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'finetune-layout-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Creates a fresh folder holding the given (empty) files; returns its path. */
async function tree(files: string[]): Promise<string> {
  const root = path.join(tmp, `case${counter++}`);
  await fsp.mkdir(root, { recursive: true });
  for (const f of files) {
    const p = path.join(root, f);
    if (f.endsWith('/')) {
      await fsp.mkdir(p, { recursive: true });
    } else {
      await fsp.mkdir(path.dirname(p), { recursive: true });
      await fsp.writeFile(p, 'x');
    }
  }
  return root;
}

const range = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));
const rel = (root: string, files: { path: string }[] | string[]) =>
  files.map((f) => path.relative(root, typeof f === 'string' ? f : f.path).split(path.sep).join('/'));

async function errorOf(p: Promise<unknown>): Promise<FinetuneError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FinetuneError);
    return err as FinetuneError;
  }
  throw new Error('expected a FinetuneError');
}

describe('discoverLayout', () => {
  it('reads the Kaggle layout: train/, valid/, test/unknown/', async () => {
    const root = await tree([
      'train/dog/2.jpg',
      'train/dog/1.jpg',
      'train/cat/a.png',
      'valid/cat/v.jpg',
      'valid/dog/w.jpg',
      'test/unknown/t2.jpg',
      'test/unknown/t1.jpg',
    ]);
    const layout = await discoverLayout(root);
    expect(layout.root).toBe(root);
    expect(layout.classes).toEqual(['cat', 'dog']);
    expect(layout.validSource).toBe('valid');
    expect(rel(root, layout.train)).toEqual(['train/cat/a.png', 'train/dog/1.jpg', 'train/dog/2.jpg']);
    expect(layout.train.map((f) => f.label)).toEqual([0, 1, 1]);
    expect(rel(root, layout.valid)).toEqual(['valid/cat/v.jpg', 'valid/dog/w.jpg']);
    expect(layout.valid.map((f) => f.label)).toEqual([0, 1]);
    expect(rel(root, layout.test)).toEqual(['test/unknown/t1.jpg', 'test/unknown/t2.jpg']);
    for (const f of [...layout.train, ...layout.valid]) expect(path.isAbsolute(f.path)).toBe(true);
    expect(layout.test.every((p) => path.isAbsolute(p))).toBe(true);
    expect(layout.ignored).toEqual({ hidden: 0, notImage: 0 });
    expect(layout.skipped).toEqual([]);
  });

  it.each(['val', 'validation', 'Valid', 'VAL'])('finds the validation folder named %s', async (name) => {
    const root = await tree(['train/a/1.jpg', 'train/b/1.jpg', `${name}/a/2.jpg`, `${name}/b/2.jpg`, 'test/x.jpg']);
    const layout = await discoverLayout(root);
    expect(layout.validSource).toBe(name);
    expect(rel(root, layout.valid)).toEqual([`${name}/a/2.jpg`, `${name}/b/2.jpg`]);
    expect(rel(root, layout.test)).toEqual(['test/x.jpg']);
  });

  it('splits train when there is no validation folder: stratified, seeded, disjoint', async () => {
    const root = await tree([...range(20, (i) => `train/a/${i}.jpg`), ...range(10, (i) => `train/b/${i}.jpg`), 'train/c/1.jpg', 'train/c/2.jpg', 'train/d/only.jpg']);
    const l1 = await discoverLayout(root, { seed: 1 });
    expect(l1.validSource).toBe('split');
    const count = (files: { label: number }[], label: number) => files.filter((f) => f.label === label).length;
    // round(n · 0.2), at least 1 for a class of 2+, none for a class of 1
    expect([0, 1, 2, 3].map((c) => count(l1.valid, c))).toEqual([4, 2, 1, 0]);
    expect([0, 1, 2, 3].map((c) => count(l1.train, c))).toEqual([16, 8, 1, 1]);
    expect(l1.warnings).toEqual(['Class "d" has only 1 image: none held out for validation.']);
    const trainPaths = new Set(l1.train.map((f) => f.path));
    expect(l1.valid.some((f) => trainPaths.has(f.path))).toBe(false);
    expect(trainPaths.size + l1.valid.length).toBe(33);
    // labels follow the folder
    for (const f of [...l1.train, ...l1.valid]) expect(f.path.split(path.sep).at(-2)).toBe(l1.classes[f.label]);
    // sorted output
    expect(l1.valid.map((f) => f.path)).toEqual(l1.valid.map((f) => f.path).sort(compareCodePoints));

    const again = await discoverLayout(root, { seed: 1 });
    expect(again.valid).toEqual(l1.valid);
    const other = await discoverLayout(root, { seed: 2 });
    expect(other.valid.map((f) => f.path)).not.toEqual(l1.valid.map((f) => f.path));

    const half = await discoverLayout(root, { seed: 1, valSplit: 0.5 });
    expect(count(half.valid, 0)).toBe(10);

    const none = await discoverLayout(root, { valSplit: 0 });
    expect(none.validSource).toBe('none');
    expect(none.valid).toEqual([]);
    expect(none.train).toHaveLength(33);
  });

  it('rejects a validation split outside [0, 1)', async () => {
    const root = await tree(['train/a/1.jpg', 'train/b/1.jpg']);
    await expect(discoverLayout(root, { valSplit: 1 })).rejects.toThrow(/validation split/);
    await expect(discoverLayout(root, { valSplit: -0.1 })).rejects.toThrow(/validation split/);
  });

  it('takes class folders directly in the root when there is no train/ folder', async () => {
    const root = await tree(['roses/1.jpg', 'roses/2.jpg', 'tulips/1.jpg', 'tulips/2.jpg', 'test/q.jpg', 'val/roses/v.jpg', 'README.md']);
    const layout = await discoverLayout(root);
    expect(layout.classes).toEqual(['roses', 'tulips']);
    expect(layout.validSource).toBe('val');
    expect(rel(root, layout.valid)).toEqual(['val/roses/v.jpg']);
    expect(rel(root, layout.test)).toEqual(['test/q.jpg']);
    expect(layout.train).toHaveLength(4);
  });

  it('puts images in nested subfolders into their class; reads extensions in any case', async () => {
    const root = await tree([
      'train/a/x/y/deep.JPG',
      'train/a/top.Png',
      'train/b/1.JPEG',
      'train/b/2.webp',
      'train/b/3.GIF',
      'train/b/4.tif',
      'train/b/5.TIFF',
      'train/b/6.avif',
    ]);
    const layout = await discoverLayout(root, { valSplit: 0 });
    expect(rel(root, layout.train)).toEqual([
      'train/a/top.Png',
      'train/a/x/y/deep.JPG',
      'train/b/1.JPEG',
      'train/b/2.webp',
      'train/b/3.GIF',
      'train/b/4.tif',
      'train/b/5.TIFF',
      'train/b/6.avif',
    ]);
    expect(layout.train.map((f) => f.label)).toEqual([0, 0, 1, 1, 1, 1, 1, 1]);
  });

  it('counts hidden and non-image files, and skips images outside class folders', async () => {
    const root = await tree([
      'train/a/1.jpg',
      'train/a/.DS_Store',
      'train/a/._1.jpg',
      'train/a/.thumbs/t.jpg',
      'train/a/notes.txt',
      'train/a/data.csv',
      'train/b/1.jpg',
      'train/.ipynb_checkpoints/c.jpg',
      'train/stray.jpg',
      'train/labels.txt',
      'test/readme.md',
      'test/.hidden.jpg',
      'test/1.jpg',
    ]);
    const layout = await discoverLayout(root, { valSplit: 0 });
    expect(rel(root, layout.train)).toEqual(['train/a/1.jpg', 'train/b/1.jpg']);
    expect(layout.ignored).toEqual({ hidden: 5, notImage: 4 });
    expect(rel(root, layout.test)).toEqual(['test/1.jpg']);
    expect(layout.skipped).toHaveLength(1);
    expect(layout.skipped[0]!.path).toBe(path.join(root, 'train/stray.jpg'));
    expect(layout.skipped[0]!.split).toBe('train');
    expect(layout.skipped[0]!.reason).toMatch(/class folder/);
  });

  it('follows symbolic links and survives link loops', async () => {
    const outside = await tree(['pics/1.jpg', 'pics/2.jpg']);
    const root = await tree(['train/a/1.jpg', 'train/b/']);
    await fsp.symlink(path.join(outside, 'pics'), path.join(root, 'train/b/linked'));
    await fsp.symlink('..', path.join(root, 'train/a/loop')); // train/a/loop → train/
    await fsp.symlink('.', path.join(root, 'train/a/self'));
    await fsp.symlink(path.join(root, 'missing.jpg'), path.join(root, 'train/a/broken.jpg'));
    const layout = await discoverLayout(root, { valSplit: 0 });
    expect(rel(root, layout.train)).toEqual(['train/a/1.jpg', 'train/b/linked/1.jpg', 'train/b/linked/2.jpg']);
    expect(layout.skipped.map((s) => s.reason)).toEqual([expect.stringMatching(/broken symbolic link/)]);

    // Two folders linking to each other, twice: still finishes, each file seen once per way in.
    const cross = await tree(['train/a/1.jpg', 'train/b/2.jpg']);
    for (const [from, to] of [['a', 'b'], ['b', 'a']] as const) {
      await fsp.symlink(`../${to}`, path.join(cross, `train/${from}/to-${to}`));
      await fsp.symlink(`../${to}`, path.join(cross, `train/${from}/to-${to}-again`));
    }
    const crossed = await discoverLayout(cross, { valSplit: 0 });
    expect(rel(cross, crossed.train)).toEqual([
      'train/a/1.jpg',
      'train/a/to-b-again/2.jpg',
      'train/a/to-b/2.jpg',
      'train/b/2.jpg',
      'train/b/to-a-again/1.jpg',
      'train/b/to-a/1.jpg',
    ]);
  });

  it('sorts class names by code point, like Python', async () => {
    const names = ['b', 'B', 'a', '\u{1F600}', '\uFF21', 'ä'];
    const root = await tree(names.map((n) => `train/${n}/1.jpg`));
    const layout = await discoverLayout(root, { valSplit: 0 });
    expect(layout.classes).toEqual(['B', 'a', 'b', 'ä', '\uFF21', '\u{1F600}']);
  });

  it('names a validation class that train lacks', async () => {
    const root = await tree(['train/ants/1.jpg', 'train/bees/1.jpg', 'valid/wasps/1.jpg', 'valid/Ants/2.jpg']);
    const err = await errorOf(discoverLayout(root));
    expect(err.message).toMatch(/"wasps"/);
    expect(err.message).toMatch(/"Ants" \(did you mean "ants"\?\)/);
    expect(err.message).toMatch(/ants, bees/);
  });

  it('says which training class has no images', async () => {
    const root = await tree(['train/ants/1.jpg', 'train/bees/readme.txt', 'train/wasps/']);
    const err = await errorOf(discoverLayout(root));
    expect(err.message).toMatch(/bees \(1 file, none with an image extension\)/);
    expect(err.message).toMatch(/wasps/);
    expect(err.message).not.toMatch(/ants/);
  });

  it('warns about an empty validation class folder', async () => {
    const root = await tree(['train/a/1.jpg', 'train/b/1.jpg', 'valid/a/1.jpg', 'valid/b/']);
    const layout = await discoverLayout(root);
    expect(layout.warnings).toEqual(['valid/b has no images.']);
  });

  it('explains the expected layout when the folder does not fit', async () => {
    const missing = await errorOf(discoverLayout(path.join(tmp, 'no-such-folder')));
    expect(missing.message).toMatch(/not found/);
    expect(missing.message).toMatch(/train\/<class>\/\*\.jpg/);
    expect(missing.message).toMatch(/valid\/<class>\/\*\.jpg/);
    expect(missing.message).toMatch(/test\/\*\.jpg/);

    const file = path.join(await tree(['x.jpg']), 'x.jpg');
    expect((await errorOf(discoverLayout(file))).message).toMatch(/is a file, not a folder/);

    const flat = await tree(['1.jpg', '2.jpg']);
    const noClasses = await errorOf(discoverLayout(flat));
    expect(noClasses.message).toMatch(/No "train" folder and no class folders/);
    expect(noClasses.message).toMatch(/train\/<class>/);

    const one = await errorOf(discoverLayout(await tree(['train/only/1.jpg', 'train/only/2.jpg'])));
    expect(one.message).toMatch(/only 1 class \("only"\).*at least 2/s);
    expect(one.message).toMatch(/train\/<class>/);

    const emptyTrain = await errorOf(discoverLayout(await tree(['train/'])));
    expect(emptyTrain.message).toMatch(/no class folders/);
  });
});

describe('hymenoptera_data (shared)', () => {
  needSharedForSuite('the layout of a real dataset (train/ and val/)', HYMENOPTERA);

  it('has 2 classes, validation from val/, the GIF and the file name with a space', async () => {
    const layout = await discoverLayout(hymenoptera);
    expect(layout.classes).toEqual(['ants', 'bees']);
    expect(layout.validSource).toBe('val');
    expect(layout.train).toHaveLength(245);
    expect(layout.valid).toHaveLength(153);
    const names = layout.train.map((f) => path.basename(f.path));
    expect(names).toContain('imageNotFound.gif');
    expect(names).toContain('ant photos.jpg');
    expect(layout.test).toEqual([]);
  });
});

describe('flowers_kaggle_128 (shared)', () => {
  needSharedForSuite('the layout of a real dataset with no split', FLOWERS);

  it('has 5 root-level classes and a 20 % stratified split', async () => {
    const layout = await discoverLayout(flowers);
    expect(layout.classes).toEqual(['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']);
    expect(layout.validSource).toBe('split');
    expect(layout.train.length + layout.valid.length).toBe(4317);
    const sizes = [764, 1052, 784, 733, 984];
    sizes.forEach((n, c) => expect(layout.valid.filter((f) => f.label === c)).toHaveLength(Math.round(n * 0.2)));
  });
});
