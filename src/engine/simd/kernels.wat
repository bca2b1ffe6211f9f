;; SIMD kernels that run on the tfjs WASM backend's own memory (imported), for the loops tfjs-wasm
;; runs slowly or not at all. Pointers are byte offsets into that memory; data is float32.
;; Compiled by `npm run build:simd` into kernels.generated.ts (a shared-memory variant for the
;; threaded build and a plain one); test/simd.test.ts checks that file against this source.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; dst[c] = scale * sum over r < rows of src[r * cols + c], for c < cols.
  ;; Row by row, so every column adds its rows in order (as tfjs' own Sum does) and src is read once,
  ;; front to back; dst stays in cache.
  (func (export "sumRows")
    (param $src i32) (param $rows i32) (param $cols i32) (param $dst i32) (param $scale f32)
    (local $c i32) (local $r i32) (local $row i32) (local $end4 i32) (local $scale4 v128)
    ;; end of the columns done 4 at a time
    (local.set $end4 (i32.and (local.get $cols) (i32.const -4)))
    ;; dst = 0
    (local.set $c (i32.const 0))
    (block $zeroed (loop $zero
      (br_if $zeroed (i32.ge_u (local.get $c) (local.get $cols)))
      (f32.store (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2))) (f32.const 0))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br $zero)))
    ;; dst += each row
    (local.set $row (local.get $src))
    (local.set $r (i32.const 0))
    (block $rowsDone (loop $rowLoop
      (br_if $rowsDone (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $c (i32.const 0))
      (block $d4 (loop $l4
        (br_if $d4 (i32.ge_u (local.get $c) (local.get $end4)))
        (v128.store
          (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2)))
          (f32x4.add
            (v128.load (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2))))
            (v128.load (i32.add (local.get $row) (i32.shl (local.get $c) (i32.const 2))))))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $l4)))
      (block $d1 (loop $l1
        (br_if $d1 (i32.ge_u (local.get $c) (local.get $cols)))
        (f32.store
          (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2)))
          (f32.add
            (f32.load (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2))))
            (f32.load (i32.add (local.get $row) (i32.shl (local.get $c) (i32.const 2))))))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $l1)))
      (local.set $row (i32.add (local.get $row) (i32.shl (local.get $cols) (i32.const 2))))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rowLoop)))
    ;; dst *= scale (a mean), skipped for a plain sum so that sums stay bit-exact
    (if (f32.ne (local.get $scale) (f32.const 1))
      (then
        (local.set $scale4 (f32x4.splat (local.get $scale)))
        (local.set $c (i32.const 0))
        (block $s4 (loop $ls4
          (br_if $s4 (i32.ge_u (local.get $c) (local.get $end4)))
          (v128.store
            (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2)))
            (f32x4.mul
              (v128.load (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2))))
              (local.get $scale4)))
          (local.set $c (i32.add (local.get $c) (i32.const 4)))
          (br $ls4)))
        (block $s1 (loop $ls1
          (br_if $s1 (i32.ge_u (local.get $c) (local.get $cols)))
          (f32.store
            (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2)))
            (f32.mul
              (f32.load (i32.add (local.get $dst) (i32.shl (local.get $c) (i32.const 2))))
              (local.get $scale)))
          (local.set $c (i32.add (local.get $c) (i32.const 1)))
          (br $ls1))))))

;; out[r * cols + c] = x[r * cols + c] OP y[(r / rowRepeat) * yRowStride + c * yColStride] for
  ;; r < rows, c < cols: a binary op with its second operand broadcast (yColStride 1: a vector along
  ;; the last axes, e.g. batch norm's scale over NHWC, or [N, 1, 1, C] over [N, H, W, C]; yColStride 0:
  ;; one value per row, or a scalar with rows 1). op: 0 x + y, 1 x * y, 2 x - y, 3 y - x, 4 x / y,
  ;; 5 y / x. One IEEE operation per element, as tfjs's own kernels compute it, so the results are
  ;; the same bit for bit. Columns past the last multiple of 4 run through the same vector op on
  ;; lanes loaded one at a time (lane 0).
  (func (export "broadcastRows")
    (param $op i32) (param $x i32) (param $y i32) (param $out i32) (param $rows i32) (param $cols i32)
    (param $rowRepeat i32) (param $yRowStride i32) (param $yColStride i32)
    (local $r i32) (local $c i32) (local $end4 i32) (local $xrow i32) (local $orow i32) (local $yrow i32) (local $o i32)
    (local $v v128) (local $w v128) (local $res v128)
    (local.set $end4 (i32.and (local.get $cols) (i32.const -4)))
    (local.set $xrow (local.get $x))
    (local.set $orow (local.get $out))
    (block $rowsDone (loop $rowLoop
      (br_if $rowsDone (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $yrow (i32.add (local.get $y)
        (i32.shl (i32.mul (i32.div_u (local.get $r) (local.get $rowRepeat)) (local.get $yRowStride)) (i32.const 2))))
      ;; one value for the whole row
      (if (i32.eqz (local.get $yColStride))
        (then (local.set $w (v128.load32_splat (local.get $yrow)))))
      (local.set $c (i32.const 0))
      (block $colsDone (loop $colLoop
        (br_if $colsDone (i32.ge_u (local.get $c) (local.get $cols)))
        (local.set $o (i32.shl (local.get $c) (i32.const 2)))
        (if (i32.lt_u (local.get $c) (local.get $end4))
          (then
            (local.set $v (v128.load (i32.add (local.get $xrow) (local.get $o))))
            (if (local.get $yColStride)
              (then (local.set $w (v128.load (i32.add (local.get $yrow) (local.get $o)))))))
          (else
            (local.set $v (v128.load32_zero (i32.add (local.get $xrow) (local.get $o))))
            (if (local.get $yColStride)
              (then (local.set $w (v128.load32_zero (i32.add (local.get $yrow) (local.get $o))))))))
        (block $applied
          (block $b5 (block $b4 (block $b3 (block $b2 (block $b1 (block $b0
            (br_table $b0 $b1 $b2 $b3 $b4 $b5 (local.get $op)))
            (local.set $res (f32x4.add (local.get $v) (local.get $w))) (br $applied))
            (local.set $res (f32x4.mul (local.get $v) (local.get $w))) (br $applied))
            (local.set $res (f32x4.sub (local.get $v) (local.get $w))) (br $applied))
            (local.set $res (f32x4.sub (local.get $w) (local.get $v))) (br $applied))
            (local.set $res (f32x4.div (local.get $v) (local.get $w))) (br $applied))
          (local.set $res (f32x4.div (local.get $w) (local.get $v))))
        (if (i32.lt_u (local.get $c) (local.get $end4))
          (then
            (v128.store (i32.add (local.get $orow) (local.get $o)) (local.get $res))
            (local.set $c (i32.add (local.get $c) (i32.const 4))))
          (else
            (f32.store (i32.add (local.get $orow) (local.get $o)) (f32x4.extract_lane 0 (local.get $res)))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))))
        (br $colLoop)))
      (local.set $xrow (i32.add (local.get $xrow) (i32.shl (local.get $cols) (i32.const 2))))
      (local.set $orow (i32.add (local.get $orow) (i32.shl (local.get $cols) (i32.const 2))))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rowLoop))))

  ;; out[i] = dy[i] where 0 <= x[i] <= 6, else 0, for i < n: the gradient of ReLU6 (clipByValue's).
  (func (export "relu6Grad")
    (param $dy i32) (param $x i32) (param $out i32) (param $n i32)
    (local $i i32) (local $end4 i32) (local $o i32) (local $v v128) (local $s f32)
    (local.set $end4 (i32.and (local.get $n) (i32.const -4)))
    (block $d4 (loop $l4
      (br_if $d4 (i32.ge_u (local.get $i) (local.get $end4)))
      (local.set $o (i32.shl (local.get $i) (i32.const 2)))
      (local.set $v (v128.load (i32.add (local.get $x) (local.get $o))))
      (v128.store
        (i32.add (local.get $out) (local.get $o))
        (v128.and
          (v128.load (i32.add (local.get $dy) (local.get $o)))
          (v128.and
            (f32x4.ge (local.get $v) (v128.const f32x4 0 0 0 0))
            (f32x4.le (local.get $v) (v128.const f32x4 6 6 6 6)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l4)))
    (block $d1 (loop $l1
      (br_if $d1 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $o (i32.shl (local.get $i) (i32.const 2)))
      (local.set $s (f32.load (i32.add (local.get $x) (local.get $o))))
      (f32.store
        (i32.add (local.get $out) (local.get $o))
        (select
          (f32.load (i32.add (local.get $dy) (local.get $o)))
          (f32.const 0)
          (i32.and (f32.ge (local.get $s) (f32.const 0)) (f32.le (local.get $s) (f32.const 6)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l1))))

  ;; One output row of a depthwise convolution's filter gradient (channel multiplier 1): for every
  ;; output column xo and filter column fx whose input column ix = xo·stride − left + fx lies in
  ;; [0, width), acc[fx·C + k] += x[ix·C + k] · dy[xo·C + k] for k < C, in float64 (acc is float64;
  ;; x and dy float32). The products and sums are those of a float64 loop in the same order.
  (func (export "depthwiseFilterRow")
    (param $x i32) (param $dy i32) (param $acc i32) (param $outWidth i32) (param $width i32)
    (param $channels i32) (param $stride i32) (param $left i32) (param $filterWidth i32)
    (local $xo i32) (local $fx i32) (local $ix i32) (local $k i32) (local $end2 i32)
    (local $xp i32) (local $dyp i32) (local $ap i32)
    (local.set $end2 (i32.and (local.get $channels) (i32.const -2)))
    (block $xoDone (loop $xoLoop
      (br_if $xoDone (i32.ge_u (local.get $xo) (local.get $outWidth)))
      (local.set $dyp (i32.add (local.get $dy) (i32.shl (i32.mul (local.get $xo) (local.get $channels)) (i32.const 2))))
      (local.set $fx (i32.const 0))
      (block $fxDone (loop $fxLoop
        (br_if $fxDone (i32.ge_u (local.get $fx) (local.get $filterWidth)))
        (local.set $ix (i32.add (i32.sub (i32.mul (local.get $xo) (local.get $stride)) (local.get $left)) (local.get $fx)))
        ;; unsigned: a negative ix is out of range too
        (if (i32.lt_u (local.get $ix) (local.get $width))
          (then
            (local.set $xp (i32.add (local.get $x) (i32.shl (i32.mul (local.get $ix) (local.get $channels)) (i32.const 2))))
            (local.set $ap (i32.add (local.get $acc) (i32.shl (i32.mul (local.get $fx) (local.get $channels)) (i32.const 3))))
            (local.set $k (i32.const 0))
            (block $d2 (loop $l2
              (br_if $d2 (i32.ge_u (local.get $k) (local.get $end2)))
              (v128.store
                (i32.add (local.get $ap) (i32.shl (local.get $k) (i32.const 3)))
                (f64x2.add
                  (v128.load (i32.add (local.get $ap) (i32.shl (local.get $k) (i32.const 3))))
                  (f64x2.mul
                    (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $xp) (i32.shl (local.get $k) (i32.const 2)))))
                    (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $dyp) (i32.shl (local.get $k) (i32.const 2))))))))
              (local.set $k (i32.add (local.get $k) (i32.const 2)))
              (br $l2)))
            (if (i32.lt_u (local.get $k) (local.get $channels))
              (then
                (f64.store
                  (i32.add (local.get $ap) (i32.shl (local.get $k) (i32.const 3)))
                  (f64.add
                    (f64.load (i32.add (local.get $ap) (i32.shl (local.get $k) (i32.const 3))))
                    (f64.mul
                      (f64.promote_f32 (f32.load (i32.add (local.get $xp) (i32.shl (local.get $k) (i32.const 2)))))
                      (f64.promote_f32 (f32.load (i32.add (local.get $dyp) (i32.shl (local.get $k) (i32.const 2))))))))))))
        (local.set $fx (i32.add (local.get $fx) (i32.const 1)))
        (br $fxLoop)))
      (local.set $xo (i32.add (local.get $xo) (i32.const 1)))
      (br $xoLoop))))

  ;; One output row of a depthwise convolution's input gradient (channel multiplier 1): for every
  ;; xo and fx as above, dx[ix·C + k] += dy[xo·C + k] · filter[fx·C + k], all float32, each sum
  ;; computed in float64 and rounded once, as a JavaScript loop over a Float32Array does.
  (func (export "depthwiseInputRow")
    (param $dx i32) (param $dy i32) (param $filter i32) (param $outWidth i32) (param $width i32)
    (param $channels i32) (param $stride i32) (param $left i32) (param $filterWidth i32)
    (local $xo i32) (local $fx i32) (local $ix i32) (local $k i32) (local $end2 i32)
    (local $dxp i32) (local $dyp i32) (local $wp i32)
    (local.set $end2 (i32.and (local.get $channels) (i32.const -2)))
    (block $xoDone (loop $xoLoop
      (br_if $xoDone (i32.ge_u (local.get $xo) (local.get $outWidth)))
      (local.set $dyp (i32.add (local.get $dy) (i32.shl (i32.mul (local.get $xo) (local.get $channels)) (i32.const 2))))
      (local.set $fx (i32.const 0))
      (block $fxDone (loop $fxLoop
        (br_if $fxDone (i32.ge_u (local.get $fx) (local.get $filterWidth)))
        (local.set $ix (i32.add (i32.sub (i32.mul (local.get $xo) (local.get $stride)) (local.get $left)) (local.get $fx)))
        (if (i32.lt_u (local.get $ix) (local.get $width))
          (then
            (local.set $dxp (i32.add (local.get $dx) (i32.shl (i32.mul (local.get $ix) (local.get $channels)) (i32.const 2))))
            (local.set $wp (i32.add (local.get $filter) (i32.shl (i32.mul (local.get $fx) (local.get $channels)) (i32.const 2))))
            (local.set $k (i32.const 0))
            (block $d2 (loop $l2
              (br_if $d2 (i32.ge_u (local.get $k) (local.get $end2)))
              (v128.store64_lane 0
                (i32.add (local.get $dxp) (i32.shl (local.get $k) (i32.const 2)))
                (f32x4.demote_f64x2_zero
                  (f64x2.add
                    (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $dxp) (i32.shl (local.get $k) (i32.const 2)))))
                    (f64x2.mul
                      (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $dyp) (i32.shl (local.get $k) (i32.const 2)))))
                      (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $wp) (i32.shl (local.get $k) (i32.const 2)))))))))
              (local.set $k (i32.add (local.get $k) (i32.const 2)))
              (br $l2)))
            (if (i32.lt_u (local.get $k) (local.get $channels))
              (then
                (f32.store
                  (i32.add (local.get $dxp) (i32.shl (local.get $k) (i32.const 2)))
                  (f32.demote_f64
                    (f64.add
                      (f64.promote_f32 (f32.load (i32.add (local.get $dxp) (i32.shl (local.get $k) (i32.const 2)))))
                      (f64.mul
                        (f64.promote_f32 (f32.load (i32.add (local.get $dyp) (i32.shl (local.get $k) (i32.const 2)))))
                        (f64.promote_f32 (f32.load (i32.add (local.get $wp) (i32.shl (local.get $k) (i32.const 2)))))))))))))
        (local.set $fx (i32.add (local.get $fx) (i32.const 1)))
        (br $fxLoop)))
      (local.set $xo (i32.add (local.get $xo) (i32.const 1)))
      (br $xoLoop))))

  ;; out[i·outStride + j] (+)= Σ over q < p of a[q·aStride + i] · b[q·bStride + j], for i < m, j < n:
  ;; the product Aᵀ·B of a [p, m] and b [p, n] (strided rows), e.g. a convolution's filter gradient
  ;; xᵀ·dy, read in place with no transposes or packed copies. Adds onto out where accumulate ≠ 0,
  ;; else overwrites it. Each output is one float32 sum in q order (f32x4.mul then f32x4.add, no
  ;; fused multiply-add), so a loop acc = fround(acc + fround(a·b)) gives the same bits, and a long
  ;; sum split over calls (accumulate) is the same sum. Strides are in elements.
  ;; Register tiles of 4 rows × 8 columns (8 v128 accumulators held while q runs; per q, 4 splats of
  ;; a and 2 loads of b); the column tail by 4 × 4 and 4 × 1 (a's 4 values, one v128), the row tail
  ;; by 1 × 8, 1 × 4 and 1 × 1. Each tile walks all of p, so a caller keeps p short enough (a block
  ;; of rows, an image row) for a and b's rows to stay in cache while the tiles sweep them.
  (func (export "matMulTransposeA")
    (param $a i32) (param $aStride i32) (param $b i32) (param $bStride i32) (param $out i32)
    (param $outStride i32) (param $m i32) (param $n i32) (param $p i32) (param $accumulate i32)
    (local $i i32) (local $j i32) (local $as i32) (local $bs i32) (local $os i32)
    (local $ai i32) (local $oi i32)
    ;; strides in bytes
    (local.set $as (i32.shl (local.get $aStride) (i32.const 2)))
    (local.set $bs (i32.shl (local.get $bStride) (i32.const 2)))
    (local.set $os (i32.shl (local.get $outStride) (i32.const 2)))
    ;; rows 4 at a time
    (block $rows4Done (loop $rows4
      (br_if $rows4Done (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $m)))
      (local.set $ai (i32.add (local.get $a) (i32.shl (local.get $i) (i32.const 2))))
      (local.set $oi (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $os))))
      (local.set $j (i32.const 0))
      (block $cols8Done (loop $cols8
        (br_if $cols8Done (i32.gt_u (i32.add (local.get $j) (i32.const 8)) (local.get $n)))
        (call $tile4x8 (local.get $ai) (local.get $as)
          (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2))) (local.get $bs)
          (i32.add (local.get $oi) (i32.shl (local.get $j) (i32.const 2))) (local.get $os)
          (local.get $p) (local.get $accumulate))
        (local.set $j (i32.add (local.get $j) (i32.const 8)))
        (br $cols8)))
      (if (i32.le_u (i32.add (local.get $j) (i32.const 4)) (local.get $n))
        (then
          (call $tile4x4 (local.get $ai) (local.get $as)
            (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2))) (local.get $bs)
            (i32.add (local.get $oi) (i32.shl (local.get $j) (i32.const 2))) (local.get $os)
            (local.get $p) (local.get $accumulate))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))))
      (block $cols1Done (loop $cols1
        (br_if $cols1Done (i32.ge_u (local.get $j) (local.get $n)))
        (call $tile4x1 (local.get $ai) (local.get $as)
          (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2))) (local.get $bs)
          (i32.add (local.get $oi) (i32.shl (local.get $j) (i32.const 2))) (local.get $os)
          (local.get $p) (local.get $accumulate))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $cols1)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $rows4)))
    ;; the last m % 4 rows one at a time
    (block $rows1Done (loop $rows1
      (br_if $rows1Done (i32.ge_u (local.get $i) (local.get $m)))
      (local.set $ai (i32.add (local.get $a) (i32.shl (local.get $i) (i32.const 2))))
      (local.set $oi (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $os))))
      (local.set $j (i32.const 0))
      (block $cols8Done (loop $cols8
        (br_if $cols8Done (i32.gt_u (i32.add (local.get $j) (i32.const 8)) (local.get $n)))
        (call $tile1x8 (local.get $ai) (local.get $as)
          (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2))) (local.get $bs)
          (i32.add (local.get $oi) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $p) (local.get $accumulate))
        (local.set $j (i32.add (local.get $j) (i32.const 8)))
        (br $cols8)))
      (if (i32.le_u (i32.add (local.get $j) (i32.const 4)) (local.get $n))
        (then
          (call $tile1x4 (local.get $ai) (local.get $as)
            (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2))) (local.get $bs)
            (i32.add (local.get $oi) (i32.shl (local.get $j) (i32.const 2)))
            (local.get $p) (local.get $accumulate))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))))
      (block $cols1Done (loop $cols1
        (br_if $cols1Done (i32.ge_u (local.get $j) (local.get $n)))
        (call $tile1x1 (local.get $ai) (local.get $as)
          (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2))) (local.get $bs)
          (i32.add (local.get $oi) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $p) (local.get $accumulate))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $cols1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows1))))

  ;; The tiles of matMulTransposeA: out[r·os + c] (+)= Σ_q a[q·as + r] · b[q·bs + c] for r < rows,
  ;; c < columns, with byte strides as, bs, os.
  (func $tile4x8
    (param $a i32) (param $as i32) (param $b i32) (param $bs i32) (param $out i32) (param $os i32) (param $p i32) (param $accumulate i32)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128) (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local $b0 v128) (local $b1 v128) (local $s v128)
    (local $o1 i32) (local $o2 i32) (local $o3 i32)
    (local.set $o1 (i32.add (local.get $out) (local.get $os)))
    (local.set $o2 (i32.add (local.get $o1) (local.get $os)))
    (local.set $o3 (i32.add (local.get $o2) (local.get $os)))
    (if (local.get $accumulate)
      (then
        (local.set $c00 (v128.load (local.get $out)))
        (local.set $c01 (v128.load offset=16 (local.get $out)))
        (local.set $c10 (v128.load (local.get $o1)))
        (local.set $c11 (v128.load offset=16 (local.get $o1)))
        (local.set $c20 (v128.load (local.get $o2)))
        (local.set $c21 (v128.load offset=16 (local.get $o2)))
        (local.set $c30 (v128.load (local.get $o3)))
        (local.set $c31 (v128.load offset=16 (local.get $o3)))))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (local.set $b0 (v128.load (local.get $b)))
      (local.set $b1 (v128.load offset=16 (local.get $b)))
      (local.set $s (v128.load32_splat (local.get $a)))
      (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (local.get $b1))))
      (local.set $s (v128.load32_splat offset=4 (local.get $a)))
      (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $s) (local.get $b1))))
      (local.set $s (v128.load32_splat offset=8 (local.get $a)))
      (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $s) (local.get $b1))))
      (local.set $s (v128.load32_splat offset=12 (local.get $a)))
      (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $s) (local.get $b1))))
      (local.set $a (i32.add (local.get $a) (local.get $as)))
      (local.set $b (i32.add (local.get $b) (local.get $bs)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br $next)))
    (v128.store (local.get $out) (local.get $c00))
    (v128.store offset=16 (local.get $out) (local.get $c01))
    (v128.store (local.get $o1) (local.get $c10))
    (v128.store offset=16 (local.get $o1) (local.get $c11))
    (v128.store (local.get $o2) (local.get $c20))
    (v128.store offset=16 (local.get $o2) (local.get $c21))
    (v128.store (local.get $o3) (local.get $c30))
    (v128.store offset=16 (local.get $o3) (local.get $c31)))

  (func $tile4x4
    (param $a i32) (param $as i32) (param $b i32) (param $bs i32) (param $out i32) (param $os i32) (param $p i32) (param $accumulate i32)
    (local $c00 v128) (local $c10 v128) (local $c20 v128) (local $c30 v128)
    (local $b0 v128) (local $s v128)
    (local $o1 i32) (local $o2 i32) (local $o3 i32)
    (local.set $o1 (i32.add (local.get $out) (local.get $os)))
    (local.set $o2 (i32.add (local.get $o1) (local.get $os)))
    (local.set $o3 (i32.add (local.get $o2) (local.get $os)))
    (if (local.get $accumulate)
      (then
        (local.set $c00 (v128.load (local.get $out)))
        (local.set $c10 (v128.load (local.get $o1)))
        (local.set $c20 (v128.load (local.get $o2)))
        (local.set $c30 (v128.load (local.get $o3)))))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (local.set $b0 (v128.load (local.get $b)))
      (local.set $s (v128.load32_splat (local.get $a)))
      (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $s (v128.load32_splat offset=4 (local.get $a)))
      (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $s (v128.load32_splat offset=8 (local.get $a)))
      (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $s (v128.load32_splat offset=12 (local.get $a)))
      (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $a (i32.add (local.get $a) (local.get $as)))
      (local.set $b (i32.add (local.get $b) (local.get $bs)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br $next)))
    (v128.store (local.get $out) (local.get $c00))
    (v128.store (local.get $o1) (local.get $c10))
    (v128.store (local.get $o2) (local.get $c20))
    (v128.store (local.get $o3) (local.get $c30)))

  ;; One column of 4 rows: a's 4 values are adjacent, so one v128 of them times b's value splat.
  (func $tile4x1
    (param $a i32) (param $as i32) (param $b i32) (param $bs i32) (param $out i32) (param $os i32) (param $p i32) (param $accumulate i32)
    (local $c v128) (local $o1 i32) (local $o2 i32) (local $o3 i32)
    (local.set $o1 (i32.add (local.get $out) (local.get $os)))
    (local.set $o2 (i32.add (local.get $o1) (local.get $os)))
    (local.set $o3 (i32.add (local.get $o2) (local.get $os)))
    (if (local.get $accumulate)
      (then
        (local.set $c (v128.load32_lane 0 (local.get $out) (local.get $c)))
        (local.set $c (v128.load32_lane 1 (local.get $o1) (local.get $c)))
        (local.set $c (v128.load32_lane 2 (local.get $o2) (local.get $c)))
        (local.set $c (v128.load32_lane 3 (local.get $o3) (local.get $c)))))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (local.set $c (f32x4.add (local.get $c) (f32x4.mul (v128.load (local.get $a)) (v128.load32_splat (local.get $b)))))
      (local.set $a (i32.add (local.get $a) (local.get $as)))
      (local.set $b (i32.add (local.get $b) (local.get $bs)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br $next)))
    (v128.store32_lane 0 (local.get $out) (local.get $c))
    (v128.store32_lane 1 (local.get $o1) (local.get $c))
    (v128.store32_lane 2 (local.get $o2) (local.get $c))
    (v128.store32_lane 3 (local.get $o3) (local.get $c)))

  (func $tile1x8
    (param $a i32) (param $as i32) (param $b i32) (param $bs i32) (param $out i32) (param $p i32) (param $accumulate i32)
    (local $c00 v128) (local $c01 v128)
    (local $b0 v128) (local $b1 v128) (local $s v128)
    (if (local.get $accumulate)
      (then
        (local.set $c00 (v128.load (local.get $out)))
        (local.set $c01 (v128.load offset=16 (local.get $out)))))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (local.set $b0 (v128.load (local.get $b)))
      (local.set $b1 (v128.load offset=16 (local.get $b)))
      (local.set $s (v128.load32_splat (local.get $a)))
      (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (local.get $b1))))
      (local.set $a (i32.add (local.get $a) (local.get $as)))
      (local.set $b (i32.add (local.get $b) (local.get $bs)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br $next)))
    (v128.store (local.get $out) (local.get $c00))
    (v128.store offset=16 (local.get $out) (local.get $c01)))

  (func $tile1x4
    (param $a i32) (param $as i32) (param $b i32) (param $bs i32) (param $out i32) (param $p i32) (param $accumulate i32)
    (local $c00 v128)
    (local $b0 v128) (local $s v128)
    (if (local.get $accumulate)
      (then
        (local.set $c00 (v128.load (local.get $out)))))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (local.set $b0 (v128.load (local.get $b)))
      (local.set $s (v128.load32_splat (local.get $a)))
      (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
      (local.set $a (i32.add (local.get $a) (local.get $as)))
      (local.set $b (i32.add (local.get $b) (local.get $bs)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br $next)))
    (v128.store (local.get $out) (local.get $c00)))

  (func $tile1x1
    (param $a i32) (param $as i32) (param $b i32) (param $bs i32) (param $out i32) (param $p i32) (param $accumulate i32)
    (local $c f32)
    (if (local.get $accumulate) (then (local.set $c (f32.load (local.get $out)))))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (local.set $c (f32.add (local.get $c) (f32.mul (f32.load (local.get $a)) (f32.load (local.get $b)))))
      (local.set $a (i32.add (local.get $a) (local.get $as)))
      (local.set $b (i32.add (local.get $b) (local.get $bs)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br $next)))
    (f32.store (local.get $out) (local.get $c)))
)
