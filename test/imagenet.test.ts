import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveImagenetWeights } from '../src/backbones/imagenet.js';
import type { ImagenetWeightsFile } from '../src/backbones/types.js';
import { FinetuneError } from '../src/errors.js';

const content = Buffer.alloc(300_000, 7); // several chunks
const md5 = createHash('md5').update(content).digest('hex');

let server: Server;
let base: string;
let hits = 0;
let tmp: string;
let home: string;
let kerasDir: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    hits++;
    if (req.url?.startsWith('/good/')) {
      res.writeHead(200, { 'content-length': String(content.length) });
      res.end(content);
    } else {
      res.writeHead(404);
      res.end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'finetune-imagenet-'));
  home = path.join(tmp, 'home');
  kerasDir = path.join(tmp, 'keras-models');
  hits = 0;
  return () => fs.rm(tmp, { recursive: true, force: true });
});

const file = (url: string, hex?: string): ImagenetWeightsFile => ({
  fileName: 'weights_notop.h5',
  url,
  ...(hex ? { checksum: { algorithm: 'md5', hex } } : {}),
});

async function rejection(p: Promise<unknown>): Promise<FinetuneError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(FinetuneError);
  return e as FinetuneError;
}

const listCache = () => fs.readdir(path.join(home, 'weights')).catch(() => [] as string[]);

describe('resolveImagenetWeights', () => {
  it('downloads into <home>/weights with progress and a checked md5, then reuses the copy', async () => {
    const progress: [number, number | undefined][] = [];
    const got = await resolveImagenetWeights(file(`${base}/good/w.h5`, md5), { home, kerasDir, onProgress: (r, t) => progress.push([r, t]) });
    expect(got).toBe(path.join(home, 'weights', 'weights_notop.h5'));
    expect((await fs.readFile(got)).equals(content)).toBe(true);
    expect(progress.at(-1)).toEqual([content.length, content.length]);
    expect(await listCache()).toEqual(['weights_notop.h5']); // no temporary left
    expect(await resolveImagenetWeights(file(`${base}/good/w.h5`, md5), { home, kerasDir })).toBe(got);
    expect(hits).toBe(1);
  });

  it('uses a file already in ~/.keras/models without downloading', async () => {
    await fs.mkdir(kerasDir, { recursive: true });
    await fs.writeFile(path.join(kerasDir, 'weights_notop.h5'), content);
    expect(await resolveImagenetWeights(file(`${base}/good/w.h5`, md5), { home, kerasDir, allowDownload: false })).toBe(
      path.join(kerasDir, 'weights_notop.h5'),
    );
    expect(hits).toBe(0);
  });

  it('passes over a damaged cached copy and replaces it', async () => {
    await fs.mkdir(path.join(home, 'weights'), { recursive: true });
    await fs.writeFile(path.join(home, 'weights', 'weights_notop.h5'), 'half a file');
    const got = await resolveImagenetWeights(file(`${base}/good/w.h5`, md5), { home, kerasDir });
    expect((await fs.readFile(got)).equals(content)).toBe(true);
    expect(hits).toBe(1);
  });

  it('checksum mismatch: deletes the download and says so', async () => {
    const err = await rejection(resolveImagenetWeights(file(`${base}/good/w.h5`, '0'.repeat(32)), { home, kerasDir }));
    expect(err.message).toContain(`its md5 is ${md5}, expected ${'0'.repeat(32)}; the partial file was deleted`);
    expect(await listCache()).toEqual([]);
  });

  it('HTTP 404: names the file, the URL, both folders and --weights', async () => {
    const url = `${base}/missing/w.h5`;
    const err = await rejection(resolveImagenetWeights(file(url), { home, kerasDir }));
    expect(err.message).toContain('weights_notop.h5');
    expect(err.message).toContain(`downloading ${url} failed (HTTP 404`);
    expect(err.message).toContain(path.join(home, 'weights'));
    expect(err.message).toContain(kerasDir);
    expect(err.message).toContain('--weights <path>');
    expect(await listCache()).toEqual([]);
  });

  it('refused connection (offline): the same advice, with the reason', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const err = await rejection(resolveImagenetWeights(file(`http://127.0.0.1:${port}/w.h5`), { home, kerasDir }));
    expect(err.message).toMatch(/failed \(fetch failed: ECONNREFUSED\)/);
    expect(err.message).toContain('--weights <path>');
    expect(err.message).toContain(kerasDir);
  });

  it('allowDownload: false only looks', async () => {
    const err = await rejection(resolveImagenetWeights(file(`${base}/good/w.h5`), { home, kerasDir, allowDownload: false }));
    expect(err.message).toMatch(/not in .* and downloading is off/);
    expect(hits).toBe(0);
  });
});
