/**
 * One measurement in its own process (started by bench/jobs.ts):
 *   vite-node bench/job.ts <job.json> <out.json>
 * Starts the job's backend, runs it, writes a JobOutput to out.json.
 */
import { readFileSync } from 'node:fs';
import { initEngine } from '../src/engine/backend.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { accuracyRun } from './accuracy.js';
import { countsJob } from './counts.js';
import type { Job, JobOutput } from './jobs.js';
import { errorLine, isOutOfMemory } from './measure.js';
import { measureOnce, modelLabel } from './model-speed.js';
import { benchStaged } from './staged.js';

const [specFile, outFile] = process.argv.slice(2);
if (!specFile || !outFile) {
  console.error('usage: vite-node bench/job.ts <job.json> <out.json>');
  process.exit(2);
}
const job = JSON.parse(readFileSync(specFile, 'utf8')) as Job;

// Orphaned (the benchmark was killed): stop at the next chance rather than compute for no one.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(1);
}, 1000).unref();
const log = (line: string) => console.error(`  [${job.backend}] ${line}`);

let output: JobOutput = {};
try {
  output.engine = await initEngine(job.backend);
  if (job.kind === 'speed') {
    log(`${job.measurement} ${modelLabel(job.config)}, batch ${job.batch}…`);
    const measured = await measureOnce(job.config, job.measurement, job.batch, job.budget);
    const t = measured.timing;
    log(`  ${measured.imagesPerSecond} img/s (${t.steps} steps in ${t.seconds} s after ${t.warmupSeconds} s of warm-up)`);
    output.result = measured;
  } else if (job.kind === 'staged') {
    output.result = await benchStaged(job.options, log);
  } else if (job.kind === 'counts') {
    output.result = await countsJob(job.counts, output.engine.detail, log);
  } else {
    output.result = await accuracyRun(job.run, job.backend, log);
  }
} catch (e) {
  output = { ...output, error: errorLine(e), outOfMemory: isOutOfMemory(e) };
  log(`failed: ${output.error}`);
}
await writeFileAtomic(outFile, JSON.stringify(output));
// A GPU backend can keep handles open; the result is written.
process.exit(0);
