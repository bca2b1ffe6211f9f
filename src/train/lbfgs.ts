/**
 * Limited-memory BFGS (Nocedal & Wright, Numerical Optimization, algorithms 7.4 and 7.5) for smooth
 * minimisation over a flat parameter vector: what scikit-learn's LogisticRegression and CLIP's
 * linear probes solve with. The objective is any function giving a value and its gradient; the
 * arithmetic of the method itself is on the host in float64 (the vectors are one head's weights).
 */

/** The objective at `x`: its value and gradient (the gradient has x's length). */
export type Objective = (x: Float64Array) => Promise<{ value: number; gradient: Float64Array }>;

export interface LbfgsOptions {
  /** Most iterations (default 500). */
  maxIterations?: number;
  /** Pairs of steps and gradient changes kept (default 10). */
  memory?: number;
  /** Converged when the largest gradient component is below this (default 1e-5). */
  gradientTolerance?: number;
  /** Converged when an iteration lowers the value by less than this times max(|f|, |f'|, 1) (default 1e-10). */
  valueTolerance?: number;
  /** After each iteration. */
  onIteration?: (iteration: number, value: number) => void;
}

export interface LbfgsResult {
  x: Float64Array;
  value: number;
  iterations: number;
  /** Objective evaluations (iterations plus line-search trials). */
  evaluations: number;
  /** Why it stopped. */
  reason: 'gradient' | 'value' | 'iterations' | 'line-search';
  /** Largest gradient component at `x`. */
  gradientNorm: number;
}

const dot = (a: Float64Array, b: Float64Array): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};
const maxAbs = (a: Float64Array): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

/** Minimises `objective` from `x0` (not changed). */
export async function lbfgs(objective: Objective, x0: Float64Array, options: LbfgsOptions = {}): Promise<LbfgsResult> {
  const maxIterations = options.maxIterations ?? 500;
  const memory = options.memory ?? 10;
  const gradientTolerance = options.gradientTolerance ?? 1e-5;
  const valueTolerance = options.valueTolerance ?? 1e-10;
  const n = x0.length;
  let x = Float64Array.from(x0);
  let { value, gradient } = await objective(x);
  let evaluations = 1;
  const steps: Float64Array[] = [];
  const changes: Float64Array[] = [];
  const rhos: number[] = [];
  const direction = new Float64Array(n);
  const alphas = new Array<number>(memory);
  let reason: LbfgsResult['reason'] = 'iterations';
  let iteration = 0;
  if (maxAbs(gradient) < gradientTolerance) reason = 'gradient';
  while (reason === 'iterations' && iteration < maxIterations) {
    // Two-loop recursion: direction = −H·g, H the inverse-Hessian estimate from the kept pairs.
    for (let i = 0; i < n; i++) direction[i] = -gradient[i]!;
    for (let j = steps.length - 1; j >= 0; j--) {
      alphas[j] = rhos[j]! * dot(steps[j]!, direction);
      const y = changes[j]!;
      for (let i = 0; i < n; i++) direction[i] -= alphas[j]! * y[i]!;
    }
    if (steps.length > 0) {
      const last = steps.length - 1;
      const gamma = dot(steps[last]!, changes[last]!) / dot(changes[last]!, changes[last]!);
      for (let i = 0; i < n; i++) direction[i] *= gamma;
    } else {
      // No curvature known yet: a first step of unit length.
      const scale = 1 / Math.max(Math.sqrt(dot(gradient, gradient)), 1e-12);
      for (let i = 0; i < n; i++) direction[i] *= scale;
    }
    for (let j = 0; j < steps.length; j++) {
      const beta = rhos[j]! * dot(changes[j]!, direction);
      const s = steps[j]!;
      for (let i = 0; i < n; i++) direction[i] += s[i]! * (alphas[j]! - beta);
    }
    let slope = dot(gradient, direction);
    if (!(slope < 0)) {
      // Not a descent direction (rounding): forget the curvature pairs and go down the gradient.
      steps.length = changes.length = rhos.length = 0;
      for (let i = 0; i < n; i++) direction[i] = -gradient[i]!;
      slope = -dot(gradient, gradient);
    }
    // Backtracking line search with the Armijo condition (sufficient decrease).
    let t = 1;
    let next: { value: number; gradient: Float64Array } | undefined;
    const xNext = new Float64Array(n);
    for (let trial = 0; trial < 40; trial++) {
      for (let i = 0; i < n; i++) xNext[i] = x[i]! + t * direction[i]!;
      const candidate = await objective(xNext);
      evaluations += 1;
      if (Number.isFinite(candidate.value) && candidate.value <= value + 1e-4 * t * slope) {
        next = candidate;
        break;
      }
      t *= 0.5;
    }
    if (!next) {
      reason = 'line-search';
      break;
    }
    iteration += 1;
    const s = new Float64Array(n);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = xNext[i]! - x[i]!;
      y[i] = next.gradient[i]! - gradient[i]!;
    }
    const sy = dot(s, y);
    // Keep the pair only when it carries positive curvature (keeps H positive definite).
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(y, y))) {
      steps.push(s);
      changes.push(y);
      rhos.push(1 / sy);
      if (steps.length > memory) {
        steps.shift();
        changes.shift();
        rhos.shift();
      }
    }
    const decrease = value - next.value;
    x = xNext;
    value = next.value;
    gradient = next.gradient;
    options.onIteration?.(iteration, value);
    if (maxAbs(gradient) < gradientTolerance) reason = 'gradient';
    else if (decrease <= valueTolerance * Math.max(Math.abs(value), Math.abs(value + decrease), 1)) reason = 'value';
  }
  return { x, value, iterations: iteration, evaluations, reason, gradientNorm: maxAbs(gradient) };
}
