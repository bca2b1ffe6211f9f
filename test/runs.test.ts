import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { Command, CommanderError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addRunsCommand } from '../src/cli/runs.js';
import { FinetuneError } from '../src/errors.js';
import {
  diffRuns,
  differingOptions,
  findRuns,
  formatDiff,
  formatRunsTable,
  sortRuns,
  type RunSummary,
} from '../src/runs/runs.js';

let dir: string;

const TRAINING = {
  backbone: 'mobilenetv2',
  alpha: 0.35,
  imageSize: 224,
  weights: 'imagenet',
  valSplit: 0.2,
  resize: 'stretch',
  preprocess: 'backbone',
  augment: 'light',
  epochs: 10,
  lr: 0.001,
  batchSize: 32,
  dropout: 0.2,
  unfreeze: 2,
  fineTuneEpochs: 5,
  fineTuneLr: 0.0001,
  trainBatchNorm: false,
  patience: 5,
  classWeight: 'auto',
  seed: 42,
  backend: 'auto',
};

interface FakeRun {
  training?: Partial<typeof TRAINING> & Record<string, unknown>;
  /** Omitted: a run still training (checkpoint, no results). */
  results?: { valAccuracy: number | null; valLoss: number | null; seconds: number };
  fingerprint?: string;
  f1?: Record<string, number>;
}

/** Writes a run folder by hand: finetune.json as training writes it, and metrics.json when it has results. */
async function writeRun(name: string, run: FakeRun): Promise<void> {
  const folder = path.join(dir, name);
  await mkdir(path.join(folder, 'model'), { recursive: true });
  const training = { ...TRAINING, ...run.training };
  const config: Record<string, unknown> = {
    format: 'finetune-model/1',
    created: '2026-01-01T00:00:00.000Z',
    classes: ['ants', 'bees'],
    backbone: { name: training.backbone, alpha: training.backbone === 'mobilenetv2' ? training.alpha : undefined, weights: training.weights },
    input: { size: training.imageSize, channels: 3, resize: training.resize },
    training,
    data: { root: '/data/hymenoptera', fingerprint: run.fingerprint ?? '0123456789abcdef', validSource: 'val', train: { ants: 10, bees: 10 }, valid: { ants: 5, bees: 5 }, test: 0, skipped: 0 },
    engine: { backend: 'wasm', detail: 'wasm, SIMD, 1 thread' },
    versions: { finetune: '0.1.0', tfjs: '4.22.0', sharp: '0.34.5', node: '20.0.0' },
  };
  if (run.results) {
    config.results = { bestEpoch: { stage: 1, epoch: 3 }, stageSeconds: [run.results.seconds], ...run.results };
    if (run.results.valAccuracy !== null) {
      const f1 = run.f1 ?? { ants: run.results.valAccuracy, bees: run.results.valAccuracy };
      const perClass = Object.fromEntries(Object.entries(f1).map(([c, v]) => [c, { precision: v, recall: v, f1: v, support: 5 }]));
      await writeFile(
        path.join(folder, 'metrics.json'),
        JSON.stringify({ classes: ['ants', 'bees'], samples: 10, accuracy: run.results.valAccuracy, loss: run.results.valLoss, balancedAccuracy: run.results.valAccuracy, perClass, confusionMatrix: [[4, 1], [1, 4]] }),
      );
    }
  } else {
    config.checkpoint = { stage: 1, epoch: 2 };
  }
  await writeFile(path.join(folder, 'finetune.json'), JSON.stringify(config, null, 2));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-runs-'));
  await writeRun('baseline', { results: { valAccuracy: 0.9, valLoss: 0.3, seconds: 100 }, f1: { ants: 0.88, bees: 0.92 } });
  await writeRun('lr/3e-4', { training: { lr: 0.0003 }, results: { valAccuracy: 0.93, valLoss: 0.25, seconds: 200 }, f1: { ants: 0.95, bees: 0.91 } });
  await writeRun('lr/run-10', { training: { augment: 'strong' }, results: { valAccuracy: 0.85, valLoss: 0.4, seconds: 50 } });
  await writeRun('lr/run-2', { training: { augment: 'strong', seed: 7 }, results: { valAccuracy: 0.85, valLoss: 0.35, seconds: 3700 } });
  await writeRun('no-valid', { results: { valAccuracy: null, valLoss: null, seconds: 10 } });
  await writeRun('a/b/training', {});
  // Beyond the default depth of 3, inside a run's own folder, in node_modules and hidden folders: not runs.
  await writeRun('a/b/c/d/too-deep', { results: { valAccuracy: 0.99, valLoss: 0.01, seconds: 1 } });
  await writeRun('baseline/model/nested', { results: { valAccuracy: 0.99, valLoss: 0.01, seconds: 1 } });
  await writeRun('node_modules/pkg', { results: { valAccuracy: 0.99, valLoss: 0.01, seconds: 1 } });
  await writeRun('.hidden', { results: { valAccuracy: 0.99, valLoss: 0.01, seconds: 1 } });
  // Broken or foreign finetune.json files are reported and skipped.
  await mkdir(path.join(dir, 'broken'));
  await writeFile(path.join(dir, 'broken/finetune.json'), '{ not json');
  await mkdir(path.join(dir, 'foreign'));
  await writeFile(path.join(dir, 'foreign/finetune.json'), JSON.stringify({ name: 'something else' }));
  await mkdir(path.join(dir, 'empty'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const names = (runs: readonly RunSummary[]) => runs.map((r) => r.name);

describe('findRuns', () => {
  it('finds every run up to the depth, named relative to the folder, and skips what is not a run', async () => {
    const skipped: string[] = [];
    const runs = await findRuns(dir, { onSkip: (file) => skipped.push(path.relative(dir, file)) });
    expect(names(runs)).toEqual(['a/b/training', 'baseline', 'lr/3e-4', 'lr/run-2', 'lr/run-10', 'no-valid']);
    expect(skipped.sort()).toEqual(['broken/finetune.json', 'foreign/finetune.json']);

    const baseline = runs.find((r) => r.name === 'baseline')!;
    expect(baseline).toMatchObject({ backbone: 'mobilenetv2 0.35', complete: true, valAccuracy: 0.9, valLoss: 0.3, seconds: 100, balancedAccuracy: 0.9 });
    expect(baseline.path).toBe(path.join(dir, 'baseline'));
    expect(baseline.f1).toEqual({ ants: 0.88, bees: 0.92 });
    const training = runs.find((r) => r.name === 'a/b/training')!;
    expect(training.complete).toBe(false);
    expect(training.valAccuracy).toBeUndefined();
  });

  it('honours depth, names the folder itself ".", and fails on a missing folder', async () => {
    expect(names(await findRuns(dir, { depth: 1 }))).toEqual(['baseline', 'no-valid']);
    expect(names(await findRuns(dir, { depth: 5 }))).toContain('a/b/c/d/too-deep');
    expect(names(await findRuns(path.join(dir, 'baseline')))).toEqual(['.']);
    expect(await findRuns(path.join(dir, 'empty'))).toEqual([]);
    await expect(findRuns(path.join(dir, 'nowhere'))).rejects.toThrow(FinetuneError);
  });
});

describe('differingOptions', () => {
  it('lists only the training options that differ, in finetune.json order', async () => {
    const runs = await findRuns(dir);
    expect(differingOptions(runs)).toEqual(['augment', 'lr', 'seed']);
    expect(differingOptions(runs.filter((r) => ['baseline', 'no-valid'].includes(r.name)))).toEqual([]);
  });

  it('counts an option present in one run only as differing', async () => {
    const runs = await findRuns(dir);
    const [a, b] = runs;
    const withExtra = { ...b!, config: { ...b!.config, training: { ...b!.config.training, unfreezeFrom: 'block_14_add' } } };
    expect(differingOptions([a!, withExtra])).toContain('unfreezeFrom');
  });
});

describe('sortRuns', () => {
  it('sorts by accuracy, best first, by default; runs without the value last', async () => {
    const runs = await findRuns(dir);
    // Ties (0.85) keep natural name order: run-2 before run-10.
    expect(names(sortRuns(runs, 'val_accuracy'))).toEqual(['lr/3e-4', 'baseline', 'lr/run-2', 'lr/run-10', 'a/b/training', 'no-valid']);
    expect(names(sortRuns(runs, 'val_accuracy', 'asc'))).toEqual(['lr/run-2', 'lr/run-10', 'baseline', 'lr/3e-4', 'a/b/training', 'no-valid']);
  });

  it('sorts by loss (lowest first), time and name', async () => {
    const runs = await findRuns(dir);
    expect(names(sortRuns(runs, 'val_loss'))).toEqual(['lr/3e-4', 'baseline', 'lr/run-2', 'lr/run-10', 'a/b/training', 'no-valid']);
    expect(names(sortRuns(runs, 'val_loss', 'desc'))).toEqual(['lr/run-10', 'lr/run-2', 'baseline', 'lr/3e-4', 'a/b/training', 'no-valid']);
    expect(names(sortRuns(runs, 'time'))).toEqual(['no-valid', 'lr/run-10', 'baseline', 'lr/3e-4', 'lr/run-2', 'a/b/training']);
    expect(names(sortRuns(runs, 'name', 'desc'))).toEqual(['no-valid', 'lr/run-10', 'lr/run-2', 'lr/3e-4', 'baseline', 'a/b/training']);
    expect(runs).not.toBe(sortRuns(runs, 'name')); // a copy
  });
});

describe('formatRunsTable', () => {
  it('shows name, backbone, only the differing options, metrics to 4 decimals and time, aligned', async () => {
    const table = formatRunsTable(sortRuns(await findRuns(dir), 'val_accuracy'));
    const lines = table.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^name\s+backbone\s+augment\s+lr\s+seed\s+val acc\s+val loss\s+time$/);
    expect(table).not.toMatch(/epochs|batch-size|dropout/);
    expect(lines[2]).toMatch(/^lr\/3e-4\s+mobilenetv2 0\.35\s+light\s+0\.0003\s+42\s+0\.9300\s+0\.2500\s+3m20s$/);
    expect(table).toContain('1h02m'); // 3700 s
    expect(table).toMatch(/a\/b\/training \*/);
    expect(table).toContain('* incomplete');
    // Right-aligned numbers: every row's "val acc" ends at the header's end.
    const end = lines[0]!.indexOf('val acc') + 'val acc'.length;
    for (const line of lines.slice(2, 8)) expect(line[end - 1]).toMatch(/\d|—/);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(100);
  });

  it('names the option columns that do not fit the width, and notes identical runs', async () => {
    const runs = await findRuns(dir);
    const narrow = formatRunsTable(runs, { width: 70 });
    expect(narrow).toMatch(/Also differing \(no room\): .*augment/);
    for (const line of narrow.split('\n').filter((l) => !l.startsWith('Also') && !l.startsWith('*'))) expect(line.length).toBeLessThanOrEqual(70);
    const same = formatRunsTable(runs.filter((r) => ['baseline', 'no-valid'].includes(r.name)));
    expect(same).toContain('All runs have the same options and data.');
  });

  it('adds a data column when the runs saw different data', async () => {
    await writeRun('other-data/run', { fingerprint: 'fedcba9876543210', results: { valAccuracy: 0.8, valLoss: 0.5, seconds: 10 } });
    try {
      const table = formatRunsTable(await findRuns(path.join(dir), { depth: 3 }));
      expect(table.split('\n')[0]).toMatch(/\bdata\b/);
      expect(table).toContain('fedcba98');
    } finally {
      rmSync(path.join(dir, 'other-data'), { recursive: true, force: true });
    }
  });
});

describe('diffRuns and formatDiff', () => {
  it('lists the differing options and how every metric moved', async () => {
    const runs = await findRuns(dir);
    const a = runs.find((r) => r.name === 'baseline')!;
    const b = runs.find((r) => r.name === 'lr/3e-4')!;
    const diff = diffRuns(a, b);
    expect(diff.options).toEqual([{ key: 'lr', a: 0.001, b: 0.0003 }]);
    const metric = (key: string) => diff.metrics.find((m) => m.key === key)!;
    expect(diff.metrics.map((m) => m.key)).toEqual(['val_accuracy', 'val_loss', 'balanced_accuracy', 'time', 'f1:ants', 'f1:bees']);
    expect(metric('val_accuracy').delta).toBeCloseTo(0.03);
    expect(metric('val_loss').delta).toBeCloseTo(-0.05);
    expect(metric('time')).toEqual({ key: 'time', a: 100, b: 200, delta: 100 });
    expect(metric('f1:bees').delta).toBeCloseTo(-0.01);

    const text = formatDiff(a, b, diff);
    expect(text).toMatch(/^a: baseline/);
    expect(text).toMatch(/\nb: lr\/3e-4/);
    expect(text).toMatch(/--lr\s+0\.001\s+0\.0003/);
    expect(text).not.toMatch(/--seed|--augment/);
    expect(text).toMatch(/val accuracy\s+0\.9000\s+0\.9300\s+\+0\.0300\s+better/);
    expect(text).toMatch(/val loss\s+0\.3000\s+0\.2500\s+-0\.0500\s+better/);
    expect(text).toMatch(/time\s+1m40s\s+3m20s\s+\+1m40s\s+slower/);
    expect(text).toMatch(/bees\s+0\.9200\s+0\.9100\s+-0\.0100\s+worse/);
  });

  it('reports data and version differences, and identical runs', async () => {
    const runs = await findRuns(dir);
    const a = runs.find((r) => r.name === 'baseline')!;
    const b = { ...a, config: { ...a.config, data: { ...a.config.data, fingerprint: 'ffff' }, versions: { ...a.config.versions, tfjs: '4.23.0' } } };
    expect(diffRuns(a, b).options).toEqual([
      { key: 'data.fingerprint', a: '0123456789abcdef', b: 'ffff' },
      { key: 'versions.tfjs', a: '4.22.0', b: '4.23.0' },
    ]);
    expect(formatDiff(a, a)).toContain('Options: the same');
    // A run still training has no metrics to compare.
    const training = runs.find((r) => r.name === 'a/b/training')!;
    expect(formatDiff(training, training)).toContain('neither run has results yet');
  });
});

describe('finetune runs (command)', () => {
  /** Runs `finetune runs …` through commander with captured output. */
  async function cli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const sink = (write: (s: string) => void) =>
      new Writable({
        write(chunk, _encoding, done) {
          write(String(chunk));
          done();
        },
      });
    const program = new Command('finetune').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    addRunsCommand(program, { stdout: sink((s) => (stdout += s)), stderr: sink((s) => (stderr += s)) });
    await program.parseAsync(['runs', ...args], { from: 'user' });
    return { stdout, stderr };
  }

  it('prints the table, best accuracy first, and warns about unreadable runs', async () => {
    const { stdout, stderr } = await cli(dir);
    expect(stdout).toMatch(/^6 runs under .*, by val_accuracy \(descending\)/);
    const rows = stdout.split('\n').filter((l) => /^(lr|baseline|a\/|no-valid)/.test(l)).map((l) => l.split(/\s+/)[0]);
    expect(rows).toEqual(['lr/3e-4', 'baseline', 'lr/run-2', 'lr/run-10', 'a/b/training', 'no-valid']);
    expect(stderr).toMatch(/skipping .*broken\/finetune\.json: not valid JSON/);
  });

  it('sorts by another key and direction', async () => {
    const { stdout } = await cli(dir, '--sort', 'time', '--desc');
    const rows = stdout.split('\n').filter((l) => /^(lr|baseline|a\/|no-valid)/.test(l)).map((l) => l.split(/\s+/)[0]);
    expect(rows).toEqual(['lr/run-2', 'lr/3e-4', 'baseline', 'lr/run-10', 'no-valid', 'a/b/training']);
  });

  it('prints JSON for scripts', async () => {
    const { stdout } = await cli(dir, '--json', '--sort', 'val_loss');
    const json = JSON.parse(stdout);
    expect(json.sort).toBe('val_loss');
    expect(json.direction).toBe('asc');
    expect(json.differingOptions).toEqual(['augment', 'lr', 'seed']);
    expect(json.runs.map((r: { name: string }) => r.name)).toEqual(['lr/3e-4', 'baseline', 'lr/run-2', 'lr/run-10', 'a/b/training', 'no-valid']);
    expect(json.runs[0]).toMatchObject({ valAccuracy: 0.93, valLoss: 0.25, seconds: 200, complete: true, training: { lr: 0.0003 } });
    expect(json.runs[5].valAccuracy).toBeNull();
  });

  it('diffs two runs given as two values or one comma-separated value, by name under dir or by path', async () => {
    const two = await cli(dir, '--diff', 'baseline', 'lr/3e-4');
    const comma = await cli(dir, '--diff', 'baseline,lr/3e-4');
    const paths = await cli('--diff', path.join(dir, 'baseline'), path.join(dir, 'lr/3e-4', 'finetune.json'));
    expect(two.stdout).toMatch(/--lr\s+0\.001\s+0\.0003/);
    expect(comma.stdout).toBe(two.stdout);
    expect(paths.stdout).toMatch(/--lr\s+0\.001\s+0\.0003/);
    const json = JSON.parse((await cli(dir, '--diff', 'baseline', 'lr/3e-4', '--json')).stdout);
    expect(json.options).toEqual([{ key: 'lr', a: 0.001, b: 0.0003 }]);
    expect(json.a).toBe('baseline');
  });

  it('fails clearly: no runs (status 1), a missing run (1), not two runs to diff (2), bad flags', async () => {
    const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (e: unknown) => e);
    const none = await failure(cli(path.join(dir, 'empty')));
    expect(none).toBeInstanceOf(FinetuneError);
    expect((none as FinetuneError).exitCode).toBe(1);
    expect((none as Error).message).toMatch(/no runs under .*empty/);
    const missing = await failure(cli(dir, '--diff', 'baseline', 'nope'));
    expect((missing as FinetuneError).exitCode).toBe(1);
    expect((missing as Error).message).toMatch(/no run at nope/);
    const one = await failure(cli(dir, '--diff', 'baseline'));
    expect((one as FinetuneError).exitCode).toBe(2);
    expect(await failure(cli(dir, '--asc', '--desc'))).toBeInstanceOf(CommanderError);
    expect(await failure(cli(dir, '--sort', 'accuracy'))).toBeInstanceOf(CommanderError);
  });
});
