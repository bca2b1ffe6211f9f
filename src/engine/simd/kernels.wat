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
)
