/**
 * confusion.png: the confusion matrix with counts, shaded by the share of each true class (row), so
 * a small class's confusions show as clearly as a big one's. Correct cells are blue, confusions red.
 */
import {
  abbreviateMiddle,
  brightness,
  COLORS,
  messagePng,
  mixColor,
  round,
  svgDocument,
  svgToPng,
  text,
  textWidth,
} from './svg.js';

const CORRECT = '#1f4e9e';
const CONFUSED = '#c62828';

/** Sizes that depend on the number of classes. */
interface Layout {
  cell: number;
  labelFont: number;
  countFont: number;
  showZeros: boolean;
  rowLabels: string[];
  columnLabels: string[];
  /** 0: horizontal, else degrees (negative: counter-clockwise). */
  columnRotation: number;
  columnLabelHeight: number;
  rowLabelWidth: number;
}

/**
 * Renders `matrix[true][predicted]` as a PNG. Cells shrink as classes grow (110 px for 2 classes,
 * 22 px from ~35 on), so 100 classes give a picture of about 2,500 px a side; counts are drawn
 * while they fit their cell, names are cut to fit ('…') and column names turn when they are wider
 * than a cell.
 */
export async function renderConfusion(matrix: readonly (readonly number[])[], classes: readonly string[]): Promise<Buffer> {
  const k = classes.length;
  if (k === 0) return messagePng(600, 200, 'no classes');
  if (matrix.length !== k || matrix.some((row) => row.length !== k)) {
    throw new Error(`confusion matrix is ${matrix.length}×${matrix[0]?.length ?? 0} but there are ${k} classes`);
  }
  const layout = computeLayout(k, classes);
  const { cell } = layout;
  const rowSums = matrix.map((row) => row.reduce((a, b) => a + b, 0));
  const total = rowSums.reduce((a, b) => a + b, 0);
  const correct = matrix.reduce((a, row, i) => a + row[i]!, 0);

  const axisTitle = 28;
  const gridLeft = axisTitle + layout.rowLabelWidth + 10;
  const gridTop = 78;
  const grid = k * cell;
  const recallWidth = 118;
  // A −45° column label reaches left of its column, never right: only the grid's own width counts.
  const subtitle = 'rows: true class · columns: predicted class · shade: share of the true class (blue correct, red confused)';
  const width = Math.max(gridLeft + grid + recallWidth + 10, textWidth(subtitle, 12) * 0.92 + 32);
  const height = gridTop + grid + layout.columnLabelHeight + 44;

  const body: string[] = [];
  const accuracy = total > 0 ? `accuracy ${(100 * correct / total).toFixed(1)}% (${correct} of ${total})` : 'no samples';
  body.push(text(16, 26, `Confusion matrix · ${accuracy}`, { size: 17, weight: 'bold' }));
  body.push(
    text(16, 48, subtitle, {
      size: 12,
      fill: COLORS.muted,
    }),
  );

  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      body.push(...cellElements(matrix[i]![j]!, rowSums[i]!, i === j, gridLeft + j * cell, gridTop + i * cell, layout));
    }
  }
  body.push(`<rect x="${gridLeft}" y="${gridTop}" width="${grid}" height="${grid}" fill="none" stroke="${COLORS.axis}"/>`);

  // Row labels (true class), right-aligned against the grid.
  for (let i = 0; i < k; i++) {
    body.push(
      text(gridLeft - 8, gridTop + (i + 0.5) * cell, layout.rowLabels[i]!, {
        size: layout.labelFont,
        anchor: 'end',
        baseline: 'middle',
        title: classes[i],
      }),
    );
  }
  // Column labels (predicted class) under the grid.
  for (let j = 0; j < k; j++) {
    const x = gridLeft + (j + 0.5) * cell;
    const y = gridTop + grid + 8;
    if (layout.columnRotation === 0) {
      body.push(text(x, y, layout.columnLabels[j]!, { size: layout.labelFont, anchor: 'middle', baseline: 'hanging', title: classes[j] }));
    } else {
      body.push(
        text(x + layout.labelFont * 0.35, y + 4, layout.columnLabels[j]!, {
          size: layout.labelFont,
          anchor: 'end',
          rotate: layout.columnRotation,
          title: classes[j],
        }),
      );
    }
  }
  // Per-row recall and support, to the right.
  const recallX = gridLeft + grid + 12;
  body.push(text(recallX, gridTop - 10, 'recall (images)', { size: 12, fill: COLORS.muted }));
  const recallFont = Math.min(13, Math.max(9, Math.round(cell * 0.45)));
  for (let i = 0; i < k; i++) {
    const recall = rowSums[i]! > 0 ? `${(100 * matrix[i]![i]! / rowSums[i]!).toFixed(1)}%` : '–';
    body.push(
      text(recallX, gridTop + (i + 0.5) * cell, `${recall} (${rowSums[i]})`, {
        size: recallFont,
        baseline: 'middle',
        fill: COLORS.muted,
      }),
    );
  }
  // Axis titles.
  body.push(text(16, gridTop + grid / 2, 'true class', { size: 13, anchor: 'middle', rotate: -90, baseline: 'middle', fill: COLORS.muted }));
  body.push(text(gridLeft + grid / 2, height - 14, 'predicted class', { size: 13, anchor: 'middle', fill: COLORS.muted }));

  return svgToPng(svgDocument(Math.ceil(width), Math.ceil(height), body));
}

/** Cell size, fonts and label forms for k classes. */
function computeLayout(k: number, classes: readonly string[]): Layout {
  const cell = Math.max(22, Math.min(110, Math.round(760 / k)));
  const labelFont = Math.max(10, Math.min(14, Math.round(cell * 0.55)));
  const countFont = Math.max(8, Math.min(20, Math.round(cell * 0.28)));
  const maxChars = k <= 20 ? 28 : 18;
  const labels = classes.map((c) => abbreviateMiddle(c, maxChars));
  const widest = Math.max(...labels.map((l) => textWidth(l, labelFont)));
  const columnRotation = widest <= cell - 6 ? 0 : cell >= 40 ? -45 : -90;
  const columnLabelHeight =
    columnRotation === 0 ? labelFont + 14 : columnRotation === -45 ? widest * Math.SQRT1_2 * 0.88 + 18 : widest + 14;
  return {
    cell,
    labelFont,
    countFont,
    showZeros: k <= 6,
    rowLabels: labels,
    columnLabels: labels,
    columnRotation,
    columnLabelHeight,
    rowLabelWidth: widest,
  };
}

/** One cell: its shade and, where it fits, its count. */
function cellElements(count: number, rowSum: number, diagonal: boolean, x: number, y: number, layout: Layout): string[] {
  const { cell } = layout;
  const share = rowSum > 0 ? count / rowSum : 0;
  // Any non-zero count gets a visible tint: one confused image out of hundreds must still show.
  const fill = count > 0 ? mixColor('#ffffff', diagonal ? CORRECT : CONFUSED, 0.12 + 0.88 * share) : '#ffffff';
  const out = [`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${fill}" stroke="#ffffff" stroke-width="1"/>`];
  if (count === 0 && !layout.showZeros) return out; // beyond a few classes, blank zeros let the errors stand out
  const label = String(count);
  let size = layout.countFont;
  while (size > 7 && textWidth(label, size) > cell - 4) size -= 1;
  if (textWidth(label, size) > cell - 2) return out;
  out.push(
    text(x + cell / 2, y + cell / 2, label, {
      size: round(size),
      anchor: 'middle',
      baseline: 'middle',
      fill: count === 0 ? '#c0c0c0' : brightness(fill) < 0.6 ? '#ffffff' : COLORS.text,
      weight: diagonal && count > 0 ? 'bold' : 'normal',
    }),
  );
  return out;
}
