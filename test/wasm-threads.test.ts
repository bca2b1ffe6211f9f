/**
 * The WASM thread pool's worker script is a file Node executes: finetune must never run one that
 * someone else planted, swapped or linked there (src/engine/worker-script.ts).
 *
 * The planted scripts write a marker file when run; every test asserts the marker never appears.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../src/engine/backend.js';
import { threadedWasmWorkerScript } from '../src/engine/tfjs-internals.js';
import { privateWorkerScript } from '../src/engine/worker-script.js';

const root = mkdtempSync(join(tmpdir(), 'finetune-worker-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const script = threadedWasmWorkerScript();
const hash = createHash('sha256').update(script).digest('hex');
const fileName = `wasm-worker-${hash.slice(0, 16)}.cjs`;
const posix = process.platform !== 'win32';

let n = 0;
let dir: string;
let marker: string;
/** A script that leaves `marker` behind if anything runs it. */
let evil: string;

beforeEach(() => {
  dir = join(root, `case-${n++}`);
  mkdirSync(dir);
  marker = join(dir, 'MARKER-planted-script-ran');
  evil = `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran');\n`;
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** Rejects as soon as the marker exists (polling), so that a planted script that ran fails the test at once. */
async function markerAppears(): Promise<never> {
  for (;;) {
    if (existsSync(marker)) throw new Error('a planted worker script ran');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The file finetune will hand to Node's Worker, checked as it is before each worker starts. */
function expectIsTheScript(file: { path: string; verifiedPath(): string }): void {
  expect(file.verifiedPath()).toBe(file.path);
  expect(lstatSync(file.path).isFile()).toBe(true);
  expect(readFileSync(file.path, 'utf8')).toBe(script);
  if (posix) expect(statSync(file.path).mode & 0o077).toBe(0);
}

describe('privateWorkerScript', () => {
  it('creates its folder with mode 0700 and the script in it, readable by this user only', () => {
    const folder = join(dir, 'cache', 'wasm-threads');
    const file = privateWorkerScript(script, { folder });
    expect(file.path).toBe(join(folder, fileName));
    expectIsTheScript(file);
    if (posix) expect(statSync(folder).mode & 0o777).toBe(0o700);
    // Found again, intact, by the next process.
    expect(privateWorkerScript(script, { folder }).path).toBe(file.path);
  });

  it('replaces a file with other content at its path instead of running it', () => {
    const folder = join(dir, 'wasm-threads');
    mkdirSync(folder, { mode: 0o700 });
    writeFileSync(join(folder, fileName), evil);
    const file = privateWorkerScript(script, { folder });
    expectIsTheScript(file);
    expect(existsSync(marker)).toBe(false);
  });

  it('replaces a symbolic link at its path, leaving the link target alone', (ctx) => {
    if (!posix) ctx.skip('symbolic links need privileges on Windows');
    const folder = join(dir, 'wasm-threads');
    mkdirSync(folder, { mode: 0o700 });
    const target = join(dir, 'evil.cjs');
    writeFileSync(target, evil);
    symlinkSync(target, join(folder, fileName));
    const file = privateWorkerScript(script, { folder });
    expectIsTheScript(file);
    expect(readFileSync(target, 'utf8')).toBe(evil);
    expect(existsSync(marker)).toBe(false);
  });

  it('does not use a folder others can write to, or a link to a folder, and says so', (ctx) => {
    if (!posix) ctx.skip('POSIX modes and links');
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    writeFileSync(join(open, fileName), evil);
    const fromOpen = privateWorkerScript(script, { folder: open });
    expect(fromOpen.path.startsWith(open)).toBe(false);
    expectIsTheScript(fromOpen);
    expect(readFileSync(join(open, fileName), 'utf8')).toBe(evil);

    const linked = join(dir, 'linked');
    symlinkSync(open, linked);
    const fromLink = privateWorkerScript(script, { folder: linked });
    expect(fromLink.path.startsWith(linked)).toBe(false);
    expectIsTheScript(fromLink);

    expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
      expect.stringMatching(/open is writable by other users \(mode 777\), so the WASM worker script goes to a private temporary folder/),
      expect.stringMatching(/linked is a symbolic link, so the WASM worker script goes to a private temporary folder/),
    ]);
    expect(existsSync(marker)).toBe(false);
  });

  it('refuses the file once it has changed, or become a link, after it was written', (ctx) => {
    const folder = join(dir, 'wasm-threads');
    const file = privateWorkerScript(script, { folder });
    writeFileSync(file.path, evil);
    expect(() => file.verifiedPath()).toThrow(/has changed .*it was not run/);
    if (!posix) ctx.skip('symbolic links need privileges on Windows');
    rmSync(file.path);
    const target = join(dir, 'evil.cjs');
    writeFileSync(target, script); // even the right content, through a link
    symlinkSync(target, file.path);
    expect(() => file.verifiedPath()).toThrow(/is a symbolic link; it was not run/);
    expect(existsSync(marker)).toBe(false);
  });
});

describe('the WASM thread pool', () => {
  it('never runs a script planted at the old shared-temp path or at its own path, and still runs threaded', async (ctx) => {
    if (!posix) ctx.skip('POSIX links and modes');
    // finetune before this fix ran `<tmp>/finetune-wasm-worker-<hash>.cjs` if it existed: plant one there
    // (as a link, which it followed), and a different script at the new path.
    const tmp = join(dir, 'tmp');
    const home = join(dir, 'home');
    mkdirSync(tmp);
    mkdirSync(join(home, 'wasm-threads'), { recursive: true, mode: 0o700 });
    const planted = join(dir, 'evil.cjs');
    writeFileSync(planted, evil);
    symlinkSync(planted, join(tmp, `finetune-wasm-worker-${hash.slice(0, 16)}.cjs`));
    writeFileSync(join(home, 'wasm-threads', fileName), evil);

    const saved = { TMPDIR: process.env.TMPDIR, FINETUNE_HOME: process.env.FINETUNE_HOME };
    process.env.TMPDIR = tmp;
    process.env.FINETUNE_HOME = home;
    try {
      // A planted script that ran would leave the pool waiting for it forever: stop at its marker.
      const info = await Promise.race([initEngine('wasm', { threads: 2 }), markerAppears()]);
      expect(info.detail).toBe('wasm, SIMD, 2 threads');
      const x = tf.randomUniform([2, 16, 16, 8], -1, 1, 'float32', 1) as tf.Tensor4D;
      const w = tf.randomUniform([3, 3, 8, 16], -1, 1, 'float32', 2) as tf.Tensor4D;
      const y = tf.conv2d(x, w, 1, 'same');
      expect(Number.isFinite((await y.sum().data())[0])).toBe(true);
      tf.dispose([x, w, y]);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    expect(existsSync(marker)).toBe(false);
    expect(readlinkSync(join(tmp, `finetune-wasm-worker-${hash.slice(0, 16)}.cjs`))).toBe(planted);
    expect(readFileSync(join(home, 'wasm-threads', fileName), 'utf8')).toBe(script);
  }, 60_000);
});
