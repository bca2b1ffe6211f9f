/**
 * Every test file gets its own empty persistent cache (FINETUNE_CACHE_DIR, inherited by the CLI
 * processes tests start): the suite neither reads nor fills the user's ~/.cache/finetune/cache, and
 * no test depends on what another left there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll } from 'vitest';

const dir = mkdtempSync(path.join(tmpdir(), 'finetune-test-cache-'));
process.env.FINETUNE_CACHE_DIR = dir;
afterAll(() => rmSync(dir, { recursive: true, force: true }));
