import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { proxyFor, resolveImagenetWeights } from '../src/backbones/imagenet.js';
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
    } else if (req.url?.startsWith('/stall-body/')) {
      // The first bytes, then nothing: a connection that hangs mid-download.
      res.writeHead(200, { 'content-length': String(content.length) });
      res.write(content.subarray(0, 1000));
    } else if (req.url?.startsWith('/stall-head/')) {
      // No response at all.
    } else {
      res.writeHead(404);
      res.end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** Proxy settings of the environment this file runs in: cleared, so each test sets its own. */
const PROXY_VARIABLES = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'NO_PROXY', 'no_proxy'];
beforeEach(() => {
  const saved = PROXY_VARIABLES.map((name) => [name, process.env[name]] as const);
  for (const name of PROXY_VARIABLES) delete process.env[name];
  return () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
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
    expect(err.message).toMatch(/failed \(fetch failed: ECONNREFUSED; directly: no proxy, set HTTP_PROXY if you need one\)/);
    expect(err.message).toContain('--weights <path>');
    expect(err.message).toContain(kerasDir);
  });

  it('allowDownload: false only looks', async () => {
    const err = await rejection(resolveImagenetWeights(file(`${base}/good/w.h5`), { home, kerasDir, allowDownload: false }));
    expect(err.message).toMatch(/not in .* and downloading is off/);
    expect(hits).toBe(0);
  });

  for (const [what, where] of [
    ['mid-download', 'stall-body'],
    ['before the response', 'stall-head'],
  ] as const) {
    it(`a server that stops sending ${what}: fails after the stall timeout, names the URL, the route and the folders`, async () => {
      const url = `${base}/${where}/w.h5`;
      const err = await rejection(resolveImagenetWeights(file(url), { home, kerasDir, stallTimeoutMs: 300 }));
      expect(err.message).toContain(`downloading ${url} failed (no data for 0.3 s; directly: no proxy, set HTTP_PROXY if you need one)`);
      expect(err.message).toContain(`put it in ${path.join(home, 'weights')} or ${kerasDir}`);
      expect(await listCache()).toEqual([]);
    });
  }
});

/** A forward proxy on 127.0.0.1 that tunnels CONNECT and forwards absolute-URI requests, and lists what it was asked for. */
async function startProxy(options: { answer?: boolean } = {}) {
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const proxy = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const upstream = request(req.url!, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode!, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  proxy.on('connect', (req, client: Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    sockets.add(client);
    if (options.answer === false) return; // a proxy that hangs
    const [host, port] = req.url!.split(':');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    const end = () => (upstream.destroy(), client.destroy());
    upstream.on('error', end);
    client.on('error', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    seen,
    async close() {
      for (const socket of sockets) socket.destroy();
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

describe('resolveImagenetWeights through a proxy', () => {
  it('with HTTPS_PROXY and HTTP_PROXY set, the download goes through the proxy', async () => {
    const proxy = await startProxy();
    try {
      process.env.HTTPS_PROXY = proxy.url;
      process.env.HTTP_PROXY = proxy.url;
      const got = await resolveImagenetWeights(file(`${base}/good/w.h5`, md5), { home, kerasDir });
      expect((await fs.readFile(got)).equals(content)).toBe(true);
      expect(proxy.seen.length).toBeGreaterThan(0);
      const target = new URL(base).host;
      expect(proxy.seen.every((line) => line === `CONNECT ${target}` || line === `GET ${base}/good/w.h5`)).toBe(true);
      expect(hits).toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it('NO_PROXY covering the host: straight to the server', async () => {
    const proxy = await startProxy();
    try {
      process.env.HTTP_PROXY = proxy.url;
      process.env.NO_PROXY = 'localhost,127.0.0.1';
      await resolveImagenetWeights(file(`${base}/good/w.h5`, md5), { home, kerasDir });
      expect(proxy.seen).toEqual([]);
      expect(hits).toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it('a proxy that never answers: the stall message names the proxy and where it came from, without its password', async () => {
    const proxy = await startProxy({ answer: false });
    try {
      const withPassword = proxy.url.replace('http://', 'http://user:secret@');
      process.env.HTTP_PROXY = withPassword;
      const url = `${base}/good/w.h5`;
      const err = await rejection(resolveImagenetWeights(file(url), { home, kerasDir, stallTimeoutMs: 300 }));
      expect(err.message).toContain(`downloading ${url} failed (no data for 0.3 s; through the proxy ${proxy.url.replace('http://', 'http://***@')} from HTTP_PROXY)`);
      expect(err.message).not.toContain('secret');
      expect(err.message).toContain(path.join(home, 'weights'));
      expect(proxy.seen).toEqual([`CONNECT ${new URL(base).host}`]);
      expect(hits).toBe(0);
    } finally {
      await proxy.close();
    }
  });
});

describe('proxyFor', () => {
  const https = new URL('https://storage.googleapis.com/w.h5');
  const http = new URL('http://127.0.0.1:8080/w.h5');

  it('reads the variables as curl does: lower case first, https falls back to the http proxy', () => {
    expect(proxyFor(https, { HTTPS_PROXY: 'http://a:1', https_proxy: 'http://b:2' })).toEqual({ uri: 'http://b:2', variable: 'https_proxy' });
    expect(proxyFor(https, { HTTP_PROXY: 'http://c:3' })).toEqual({ uri: 'http://c:3', variable: 'HTTP_PROXY' });
    expect(proxyFor(http, { HTTPS_PROXY: 'http://a:1' })).toBeUndefined();
    expect(proxyFor(http, { HTTP_PROXY: 'proxy.corp:3128' })).toEqual({ uri: 'http://proxy.corp:3128', variable: 'HTTP_PROXY' });
    expect(proxyFor(https, {})).toBeUndefined();
  });

  it('NO_PROXY: *, hosts, domains with or without a leading dot, and ports', () => {
    const env = (noProxy: string) => ({ HTTPS_PROXY: 'http://a:1', HTTP_PROXY: 'http://a:1', NO_PROXY: noProxy });
    expect(proxyFor(https, env('*'))).toBeUndefined();
    expect(proxyFor(https, env('localhost, googleapis.com'))).toBeUndefined();
    expect(proxyFor(https, env('.googleapis.com'))).toBeUndefined();
    expect(proxyFor(https, env('*.googleapis.com'))).toBeUndefined();
    expect(proxyFor(https, env('apis.com'))).toBeDefined(); // not a domain boundary
    expect(proxyFor(http, env('127.0.0.1:8080'))).toBeUndefined();
    expect(proxyFor(http, env('127.0.0.1:9090'))).toBeDefined();
    expect(proxyFor(https, { ...env(''), no_proxy: 'storage.googleapis.com' })).toBeUndefined();
  });

  it('a proxy value that is not an address: says which variable to fix', () => {
    expect(() => proxyFor(https, { HTTPS_PROXY: 'http://[bad' })).toThrow(/HTTPS_PROXY=http:\/\/\[bad is not a proxy address: set it to http:\/\/host:port/);
  });
});
