//! Elementwise and dot-product loops of the generation step, written so the compiler vectorises them: no libm
//! calls (glibc's scalar `tanhf` and `expf` took a fifth of a native step), branch-free bodies, independent lanes.
//! Each is compiled twice, for the baseline x86-64 target and with AVX2, and picked at run time; both variants do
//! the same operations in the same order, so they give identical results.

/// `e^x` to a few units in the last place (Cephes' `expf`): `x = k ln 2 + r` with `k` rounded by the 1.5 * 2^23
/// trick and `ln 2` in two parts (so `r` is exact enough), `e^r` a degree-7 polynomial on `|r| <= ln 2 / 2`, and
/// `2^k` added to the exponent bits. Inputs above 88 are taken as 88; below -87 the result is exactly 0 (a
/// softmax's excluded classes, at `-inf`, must get no probability at all).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let rk = xc * std::f32::consts::LOG2_E + MAGIC;
    let k = rk - MAGIC;
    let r = xc - k * 0.693_359_4 + k * 2.121_944_4e-4;
    let z = r * r;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * z
        + r
        + 1.0;
    let ki = (rk.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let e = f32::from_bits((p.to_bits() as i32).wrapping_add(ki << 23) as u32);
    if x < -87.0 { 0.0 } else { e }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

dispatch! {
    /// Logistic function in place.
    fn sigmoid_in_place(v: &mut [f32]) {
        for x in v {
            *x = sigmoid(*x);
        }
    }
}

dispatch! {
    /// Hyperbolic tangent in place, as `2 sigmoid(2x) - 1` (absolute error about 1e-7).
    fn tanh_in_place(v: &mut [f32]) {
        for x in v {
            *x = 2.0 * sigmoid(2.0 * *x) - 1.0;
        }
    }
}

/// Sum of eight running sums, added as a tree.
#[inline(always)]
fn tree(a: [f32; 8]) -> f32 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

dispatch! {
    /// Softmax in place.
    fn softmax_in_place(v: &mut [f32]) {
        // Maximum and sum over eight independent running values each (a single running value is a serial chain).
        let mut m = [f32::NEG_INFINITY; 8];
        let chunks = v.chunks_exact(8);
        for x in chunks.remainder() {
            m[0] = if *x > m[0] { *x } else { m[0] };
        }
        for c in chunks {
            for i in 0..8 {
                m[i] = if c[i] > m[i] { c[i] } else { m[i] };
            }
        }
        let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in v.iter_mut() {
            *x = exp(*x - max);
        }
        let mut s = [0.0f32; 8];
        let chunks = v.chunks_exact(8);
        for x in chunks.remainder() {
            s[0] += x;
        }
        for c in chunks {
            for i in 0..8 {
                s[i] += c[i];
            }
        }
        let inv = 1.0 / tree(s);
        for x in v {
            *x *= inv;
        }
    }
}

/// The dot product of [`linear_rows`], scalar: eight running sums of fused multiply-adds (element `k` goes to sum
/// `k mod 8`, the remainder after the last full eight to a ninth, unfused), added as a [`tree`].
fn dot8(row: &[f32], x: &[f32]) -> f32 {
    let n8 = x.len() / 8 * 8;
    let mut acc = [0.0f32; 8];
    for k in (0..n8).step_by(8) {
        for i in 0..8 {
            acc[i] = row[k + i].mul_add(x[k + i], acc[i]);
        }
    }
    tree(acc) + tail_dot(row, x, n8)
}

/// The part of a dot product past the last full eight (from `from`), one unfused sum: every variant's remainder.
fn tail_dot(row: &[f32], x: &[f32], from: usize) -> f32 {
    let mut t = 0.0;
    for k in from..x.len() {
        t += row[k] * x[k];
    }
    t
}

/// `y[j] += W x[j] + b` for the `m` rows `x[j]` (`inp` wide) of `x`, `W` being `out x inp` row-major (libtorch's
/// layout): every output is [`dot8`] of a weight row and an input row, plus its bias, so a row's outputs do not
/// depend on the other rows (nor on which of them share a tile) and the AVX2+FMA variant computes exactly the scalar
/// one. No packing: a step's batches are often a handful of lanes, and a GEMM that packs its weights on every call
/// spent most of such a step copying them.
pub(super) fn linear_rows(
    w: &[f32],
    b: Option<&[f32]>,
    inp: usize,
    out: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
) {
    assert!(w.len() >= out * inp && x.len() >= m * inp && y.len() >= m * out);
    assert!(b.is_none_or(|b| b.len() >= out));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, and the asserts bound every access.
        return unsafe { linear_rows_avx2(Dense { w, b, inp, out }, x, m, y) };
    }
    for j in 0..m {
        let xr = &x[j * inp..(j + 1) * inp];
        for c in 0..out {
            let bias = b.map_or(0.0, |b| b[c]);
            y[j * out + c] += dot8(&w[c * inp..(c + 1) * inp], xr) + bias;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn linear_rows_avx2(l: Dense, x: &[f32], m: usize, y: &mut [f32]) {
    // SAFETY: the caller checked the CPU and the bounds; tiles stay within `m` rows and `out` outputs.
    unsafe {
        let mut j = 0;
        while j + 2 <= m {
            row_tiles::<2>(l, x, j, y);
            j += 2;
        }
        if j < m {
            row_tiles::<1>(l, x, j, y);
        }
    }
}

/// A dense layer as the tiles see it: `out x inp` row-major weights and an optional bias.
#[derive(Clone, Copy)]
struct Dense<'a> {
    w: &'a [f32],
    b: Option<&'a [f32]>,
    inp: usize,
    out: usize,
}

/// Every output of rows `j..j + R`, four at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_tiles<const R: usize>(l: Dense, x: &[f32], j: usize, y: &mut [f32]) {
    // SAFETY: as the caller's.
    unsafe {
        let mut c = 0;
        while c + 4 <= l.out {
            tile_x4::<R>(l, x, j, c, y);
            c += 4;
        }
        while c < l.out {
            tile_x1::<R>(l, x, j, c, y);
            c += 1;
        }
    }
}

/// Outputs `c..c + 4` of rows `j..j + R` (one or two), the bulk of every layer (one row: a lane's within-group
/// logits), with its sums in named locals: a tile generic over its size kept its arrays of sums on the stack (a
/// load and a store around every multiply-add).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_x4<const R: usize>(l: Dense, x: &[f32], j: usize, c: usize, y: &mut [f32]) {
    let Dense { w, b, inp, out } = l;
    use std::arch::x86_64::*;
    let n8 = inp / 8 * 8;
    // SAFETY: rows `j..j + R` of `x` and `c..c + 4` of `w` are in bounds (the caller's tiles), `k + 8 <= n8 <= inp`;
    // with one row, `x1` is `x0` and its sums are never used.
    unsafe {
        let (w0, x0) = (w.as_ptr().add(c * inp), x.as_ptr().add(j * inp));
        let x1 = if R == 2 { x0.add(inp) } else { x0 };
        let (w1, w2, w3) = (w0.add(inp), w0.add(2 * inp), w0.add(3 * inp));
        let z = _mm256_setzero_ps();
        let (mut a00, mut a01, mut a02, mut a03) = (z, z, z, z);
        let (mut a10, mut a11, mut a12, mut a13) = (z, z, z, z);
        let mut k = 0;
        while k < n8 {
            let (v0, v1) = (_mm256_loadu_ps(w0.add(k)), _mm256_loadu_ps(w1.add(k)));
            let (v2, v3) = (_mm256_loadu_ps(w2.add(k)), _mm256_loadu_ps(w3.add(k)));
            let (r0, r1) = (_mm256_loadu_ps(x0.add(k)), _mm256_loadu_ps(x1.add(k)));
            a00 = _mm256_fmadd_ps(v0, r0, a00);
            a01 = _mm256_fmadd_ps(v1, r0, a01);
            a02 = _mm256_fmadd_ps(v2, r0, a02);
            a03 = _mm256_fmadd_ps(v3, r0, a03);
            if R == 2 {
                a10 = _mm256_fmadd_ps(v0, r1, a10);
                a11 = _mm256_fmadd_ps(v1, r1, a11);
                a12 = _mm256_fmadd_ps(v2, r1, a12);
                a13 = _mm256_fmadd_ps(v3, r1, a13);
            }
            k += 8;
        }
        let bias = match b {
            Some(b) => _mm_loadu_ps(b.as_ptr().add(c)),
            None => _mm_setzero_ps(),
        };
        for (r, [s0, s1, s2, s3]) in [[a00, a01, a02, a03], [a10, a11, a12, a13]]
            .into_iter()
            .enumerate()
            .take(R)
        {
            let h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
            let sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            let tails = if n8 < inp {
                let xr = &x[(j + r) * inp..(j + r + 1) * inp];
                let t = |q: usize| tail_dot(&w[(c + q) * inp..(c + q + 1) * inp], xr, n8);
                _mm_setr_ps(t(0), t(1), t(2), t(3))
            } else {
                _mm_setzero_ps()
            };
            let at = y.as_mut_ptr().add((j + r) * out + c);
            let v = _mm_add_ps(_mm_add_ps(sums, tails), bias);
            _mm_storeu_ps(at, _mm_add_ps(_mm_loadu_ps(at), v));
        }
    }
}

/// Output `c` of rows `j..j + R` (the outputs [`tile_x4`] leaves over): a running sum of eight lanes per row, then
/// as [`dot8`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_x1<const R: usize>(l: Dense, x: &[f32], j: usize, c: usize, y: &mut [f32]) {
    let Dense { w, b, inp, out } = l;
    use std::arch::x86_64::*;
    let n8 = inp / 8 * 8;
    let wr = &w[c * inp..(c + 1) * inp];
    // SAFETY: rows `j..j + R` of `x` are in bounds (the caller's tiles), `k + 8 <= n8 <= inp`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for k in (0..n8).step_by(8) {
            let wv = _mm256_loadu_ps(wr.as_ptr().add(k));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.as_ptr().add((j + r) * inp + k)), *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let mut sums = [0.0f32; 8];
            _mm256_storeu_ps(sums.as_mut_ptr(), *a);
            let xr = &x[(j + r) * inp..(j + r + 1) * inp];
            y[(j + r) * out + c] += tree(sums) + tail_dot(wr, xr, n8) + b.map_or(0.0, |b| b[c]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_functions_match_libm() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.01).collect();
        for &x in &xs {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}): {got} vs {want}"
            );
        }
        let mut s = xs.clone();
        sigmoid_in_place(&mut s);
        let mut t = xs.clone();
        tanh_in_place(&mut t);
        for ((x, s), t) in xs.iter().zip(&s).zip(&t) {
            assert!((s - 1.0 / (1.0 + (-x).exp())).abs() < 3e-7, "sigmoid({x})");
            assert!(
                (t - x.tanh()).abs() < 3e-7,
                "tanh({x}): {t} vs {}",
                x.tanh()
            );
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        let mut p = vec![1.0f32, 2.0, f32::NEG_INFINITY, 3.0];
        softmax_in_place(&mut p);
        let z = 1f32.exp() + 2f32.exp() + 3f32.exp();
        for (p, w) in p
            .iter()
            .zip([1f32.exp() / z, 2f32.exp() / z, 0.0, 3f32.exp() / z])
        {
            assert!((p - w).abs() < 1e-6);
        }
        let w: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let bias = [0.5, -1.0, 2.0];
        let mut out = vec![0.0; 3];
        linear_rows(&w, Some(&bias), 37, 3, &x, 1, &mut out);
        for c in 0..3 {
            let row = &w[c * 37..(c + 1) * 37];
            let want: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>() + bias[c];
            assert!((out[c] - want).abs() < 1e-5, "{} vs {want}", out[c]);
            // The vector variant computes exactly the scalar one's sums.
            assert_eq!(out[c], dot8(row, &x) + bias[c]);
        }
        // Rows of a batch: each output exactly the scalar dot product plus bias, added to what was there, for
        // widths with and without a remainder, any batch size and output count (tiles and their edges).
        for inp in [1usize, 2, 8, 36, 37, 64] {
            for (m, out) in [(1usize, 1usize), (2, 4), (3, 5), (7, 13)] {
                let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.71).sin()).collect();
                let x: Vec<f32> = (0..m * inp).map(|i| (i as f32 * 0.23).cos()).collect();
                let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.1).collect();
                let mut y: Vec<f32> = (0..m * out).map(|i| i as f32).collect();
                linear_rows(&w, Some(&b), inp, out, &x, m, &mut y);
                for j in 0..m {
                    for c in 0..out {
                        let d = dot8(&w[c * inp..(c + 1) * inp], &x[j * inp..(j + 1) * inp]);
                        assert_eq!(
                            y[j * out + c],
                            (j * out + c) as f32 + (d + b[c]),
                            "{inp} {m} {out}"
                        );
                    }
                }
            }
        }
    }
}
