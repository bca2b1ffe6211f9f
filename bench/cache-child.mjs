// One `finetune` CLI run for bench/cache.ts, through dist/ as a user runs it, that also reports the
// process's own CPU time (all its threads: WebAssembly workers included) into the file named first.
//   node bench/cache-child.mjs <result.json> <finetune arguments…>
import { writeFileSync } from 'node:fs';

const [resultFile, ...args] = process.argv.slice(2);
const { main } = await import(new URL('../dist/cli/main.js', import.meta.url).href);
const status = await main([process.argv[0], 'finetune', ...args]);
const cpu = process.cpuUsage();
writeFileSync(resultFile, JSON.stringify({ status, cpuSeconds: (cpu.user + cpu.system) / 1e6 }));
process.exit(status);
