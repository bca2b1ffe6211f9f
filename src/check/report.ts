/**
 * How `finetune check` shows what it found: a summary for the terminal, check.json for scripts, and
 * check.html with the duplicate pairs and suspect images side by side as thumbnails (embedded as
 * data: URIs, so the page is one file that works offline).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../io/atomic.js';
import { escapeHtml } from '../report/html.js';
import { labelsConflict, type CheckReport, type Duplicate, type SuspectLabel } from './check.js';

/** Suspects listed in the terminal summary (all are in check.json). */
const SUMMARY_SUSPECTS = 10;
/** Duplicate groups listed in the terminal summary. */
const SUMMARY_DUPLICATES = 10;
/** Suspects and duplicates shown with thumbnails in check.html (the page stays a few MB). */
const HTML_ITEMS = 60;
/** Thumbnail size in check.html. */
const THUMB_PX = 160;

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** The report without the fields only this process needs; what --json prints and check.json holds. */
export function reportJson(report: CheckReport): string {
  return JSON.stringify(report, (_key, value: unknown) => (value === Infinity ? null : value), 2) + '\n';
}

/** The human summary (stdout). */
export function summaryText(report: CheckReport): string {
  const lines: string[] = [];
  const { counts, classes } = report;
  lines.push(`finetune check: ${report.data} (${report.seconds.toFixed(1)} s, ${report.backbone.name} α=${report.backbone.alpha} ${report.backbone.imageSize} px)`);
  lines.push('');
  const validNote =
    report.validSource === 'split'
      ? `valid: held out of train (--val-split ${report.valSplit}, seed ${report.seed})`
      : report.validSource === 'none'
        ? 'valid: none'
        : `valid: ${report.validSource}/`;
  lines.push(`images: ${counts.total} (${validNote}; test: ${counts.test})`);
  const width = Math.max(5, ...classes.map((c) => c.length));
  lines.push(`  ${'class'.padEnd(width)}  ${'train'.padStart(6)}  ${'valid'.padStart(6)}`);
  for (const c of classes) lines.push(`  ${c.padEnd(width)}  ${String(counts.train[c]).padStart(6)}  ${String(counts.valid[c]).padStart(6)}`);
  const ratio = Number.isFinite(report.imbalance.ratio) ? report.imbalance.ratio.toFixed(2) : '∞';
  lines.push(
    `  imbalance ${ratio} (largest '${report.imbalance.largest.class}' ${report.imbalance.largest.count} / smallest '${report.imbalance.smallest.class}' ${report.imbalance.smallest.count}): ${report.imbalance.advice}`,
  );
  if (report.ignored.hidden + report.ignored.notImage > 0) {
    lines.push(`  ignored: ${plural(report.ignored.hidden, 'hidden file')}, ${plural(report.ignored.notImage, 'file')} without an image extension`);
  }
  lines.push('');

  const cross = report.duplicates.filter((d) => d.crossSplit);
  const within = report.duplicates.filter((d) => !d.crossSplit);
  const crossExact = cross.filter((d) => d.kind === 'exact').length;
  lines.push(
    `duplicates across splits: ${cross.length === 0 ? 'none' : `${crossExact} exact, ${cross.length - crossExact} near`}` +
      (cross.length > 0 ? ' (validation accuracy counts these images twice: remove one copy of each)' : ''),
  );
  for (const d of cross.slice(0, SUMMARY_DUPLICATES)) lines.push(`  ${duplicateLine(d)}`);
  if (cross.length > SUMMARY_DUPLICATES) lines.push(`  … and ${cross.length - SUMMARY_DUPLICATES} more (see check.json / --json)`);
  lines.push(`exact duplicates within a split: ${within.length === 0 ? 'none' : plural(within.length, 'group')}`);
  for (const d of within.slice(0, SUMMARY_DUPLICATES)) lines.push(`  ${duplicateLine(d)}`);
  if (within.length > SUMMARY_DUPLICATES) lines.push(`  … and ${within.length - SUMMARY_DUPLICATES} more`);
  lines.push('');

  const lc = report.labelCheck;
  if (!lc.ran) lines.push(`suspect labels: ${lc.note ?? 'not checked'}`);
  else {
    lines.push(
      `suspect labels: ${report.suspectLabels.length} of ${lc.images} labelled images (a ${lc.folds}-fold linear probe on the backbone's features, ` +
        `out-of-fold accuracy ${(100 * (lc.outOfFoldAccuracy ?? 0)).toFixed(1)} %); most suspect first:`,
    );
    for (const s of report.suspectLabels.slice(0, SUMMARY_SUSPECTS)) lines.push(`  ${suspectLine(s)}`);
    if (report.suspectLabels.length > SUMMARY_SUSPECTS) lines.push(`  … and ${report.suspectLabels.length - SUMMARY_SUSPECTS} more (see check.json / --json)`);
  }
  lines.push('');

  lines.push(`unreadable files: ${report.unreadable.length === 0 ? 'none' : report.unreadable.length + ' (training skips them)'}`);
  for (const u of report.unreadable.slice(0, 10)) lines.push(`  ${u.file}: ${u.reason}`);
  if (report.unreadable.length > 10) lines.push(`  … and ${report.unreadable.length - 10} more`);
  for (const s of report.skipped.slice(0, 5)) lines.push(`  not used: ${s.file}: ${s.reason}`);
  if (report.skipped.length > 5) lines.push(`  … and ${report.skipped.length - 5} more files not used`);
  const byKind = new Map<string, number>();
  for (const n of report.images) byKind.set(n.kind, (byKind.get(n.kind) ?? 0) + 1);
  lines.push(`image notes: ${byKind.size === 0 ? 'none' : [...byKind].map(([k, n]) => `${n} ${k}`).join(', ')}`);
  for (const n of report.images.filter((x) => x.kind === 'tiny').slice(0, 5)) lines.push(`  tiny: ${n.file} (${n.detail})`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n') + '\n';
}

function duplicateLine(d: Duplicate): string {
  const files = d.files.map((f, i) => `${f} [${d.splits[i]}]`).join('  =  ');
  const conflict = labelsConflict(d) ? `  (labels differ: ${[...new Set(d.labels.filter((l) => l !== ''))].join(' ≠ ')})` : '';
  return (d.kind === 'exact' ? `exact: ${files}` : `near (cosine ${d.similarity.toFixed(3)}, pHash ${d.hashDistance}): ${files}`) + conflict;
}

function suspectLine(s: SuspectLabel): string {
  return `${s.score.toFixed(3)}  ${s.file} [${s.split}]: labelled '${s.label}', looks like '${s.predicted}' (p(${s.label}) = ${s.selfConfidence.toFixed(3)})`;
}

/** A thumbnail of an image file as a JPEG data: URI, or undefined when it cannot be read. */
async function thumbnail(file: string): Promise<string | undefined> {
  try {
    const jpeg = await sharp(file, { autoOrient: true, failOn: 'none' })
      .resize(THUMB_PX, THUMB_PX, { fit: 'inside' })
      .flatten({ background: '#ffffff' })
      .jpeg({ quality: 80 })
      .toBuffer();
    return `data:image/jpeg;base64,${jpeg.toString('base64')}`;
  } catch {
    return undefined;
  }
}

async function figure(root: string, file: string, caption: string): Promise<string> {
  const uri = await thumbnail(path.join(root, file));
  const img = uri ? `<img src="${uri}" alt="${escapeHtml(file)}">` : '<div class="missing">cannot be read</div>';
  return `<figure>${img}<figcaption><code>${escapeHtml(file)}</code><br>${escapeHtml(caption)}</figcaption></figure>`;
}

/** check.html: the summary, then the duplicates and suspects with their pictures. */
export async function renderCheckHtml(report: CheckReport): Promise<string> {
  const root = report.data;
  const dupRows: string[] = [];
  for (const d of report.duplicates.slice(0, HTML_ITEMS)) {
    const what =
      (d.kind === 'exact' ? 'byte-identical' : `near: cosine ${d.similarity.toFixed(3)}, pHash distance ${d.hashDistance}, thumbnail correlation ${d.correlation}`) +
      (labelsConflict(d) ? ', filed under different classes' : '');
    const figures = await Promise.all(d.files.map((f, i) => figure(root, f, [d.splits[i], d.labels[i]].filter(Boolean).join(' / '))));
    dupRows.push(`<div class="group${d.crossSplit ? ' cross' : ''}"><p>${escapeHtml((d.crossSplit ? 'across splits, ' : 'within a split, ') + what)}</p>${figures.join('')}</div>`);
  }
  const suspectFigures: string[] = [];
  for (const s of report.suspectLabels.slice(0, HTML_ITEMS)) {
    suspectFigures.push(
      await figure(root, s.file, `${s.split}: labelled ${s.label}, looks like ${s.predicted} (score ${s.score.toFixed(3)}, p(${s.label}) ${s.selfConfidence.toFixed(3)})`),
    );
  }
  const more = (shown: number, total: number) => (total > shown ? `<p class="none">… and ${total - shown} more in check.json</p>` : '');
  const none = (text: string) => `<p class="none">${escapeHtml(text)}</p>`;
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>finetune check: ${escapeHtml(path.basename(root))}</title>`,
    `<style>${STYLE}</style></head>`,
    '<body>',
    `<h1>finetune check: <code>${escapeHtml(root)}</code></h1>`,
    '<section id="summary"><h2>Summary</h2>',
    `<pre>${escapeHtml(summaryText(report))}</pre></section>`,
    `<section id="duplicates"><h2>Duplicates (${report.duplicates.length})</h2>`,
    dupRows.length > 0 ? dupRows.join('\n') : none('No duplicates found.'),
    more(HTML_ITEMS, report.duplicates.length),
    '</section>',
    `<section id="suspects"><h2>Suspect labels (${report.suspectLabels.length}), most suspect first</h2>`,
    suspectFigures.length > 0 ? `<div class="grid">${suspectFigures.join('\n')}</div>` : none(report.labelCheck.note ?? 'No suspect labels.'),
    more(HTML_ITEMS, report.suspectLabels.length),
    '</section>',
    '</body></html>',
    '',
  ].join('\n');
}

const STYLE = `
body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif; color: #222; max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; margin-top: 2rem; }
pre { font-size: 0.8rem; background: #f8f8f8; padding: 0.6rem; overflow-x: auto; }
.group { border: 1px solid #ddd; border-radius: 6px; padding: 0.3rem 0.6rem; margin: 0.6rem 0; display: flex; flex-wrap: wrap; gap: 0.6rem; align-items: flex-start; }
.group > p { flex-basis: 100%; margin: 0.2rem 0; font-weight: 600; }
.group.cross { border-color: #d33; }
.grid { display: flex; flex-wrap: wrap; gap: 0.6rem; }
figure { margin: 0; width: ${THUMB_PX + 20}px; font-size: 0.75rem; overflow-wrap: anywhere; }
figure img { max-width: ${THUMB_PX}px; max-height: ${THUMB_PX}px; border: 1px solid #eee; }
.missing { width: ${THUMB_PX}px; height: 60px; background: #eee; color: #888; display: flex; align-items: center; justify-content: center; }
.none { color: #888; font-style: italic; }
`;

/** Writes check.json and check.html into `out` (created if needed), each atomically. */
export async function writeCheckOutputs(report: CheckReport, out: string): Promise<string[]> {
  await fsp.mkdir(out, { recursive: true });
  const json = path.join(out, 'check.json');
  const html = path.join(out, 'check.html');
  await writeFileAtomic(json, reportJson(report));
  await writeFileAtomic(html, await renderCheckHtml(report));
  return [json, html];
}
