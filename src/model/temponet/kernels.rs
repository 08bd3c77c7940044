//! Elementwise loops and dense layers of the generation step. The elementwise loops are written so the compiler
//! vectorises them: no libm calls (glibc's scalar `tanhf` and `expf` took a fifth of a native step), branch-free
//! bodies, independent lanes; each is compiled twice, for the baseline x86-64 target and with AVX2, and picked at run
//! time. The dense layers ([`Packed`]) are AVX2 intrinsics with a scalar fallback. Every variant does the same
//! operations in the same order, so they give identical results.

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

/// A dense layer packed for the generation step: `y[j] += W x[j] + b` for rows `x[j]`.
///
/// Why packed: the weights are read transposed (`inp x pad`, output `c`'s weights in column `c`, zero past `out`),
/// so a tile of rows and eight-wide blocks of outputs takes one weight vector and one broadcast input per
/// multiply-add and keeps every sum in a register to the end: no horizontal sums, no per-output tail (the
/// untransposed dot products spent most of a narrow layer's time in both, and the conditioning layers, one or two
/// inputs wide, were nothing but tails). The model packs its layers once per set of parameters (see
/// `native::PackedNet`), not per call.
///
/// Every output is one chain of fused multiply-adds over the inputs in order, from zero, then plus its bias, then
/// added to `y`: a row's outputs depend on that row alone, whichever rows share its tile, and the AVX2 and the scalar
/// variant compute exactly the same numbers.
pub(super) struct Packed {
    wt: Vec<f32>,
    b: Vec<f32>,
    pub inp: usize,
    pub out: usize,
    pad: usize,
}

impl Packed {
    /// Packs `w` (`out x inp`, row-major: libtorch's layout) and its bias.
    pub(super) fn new(w: &[f32], b: Option<&[f32]>, inp: usize, out: usize) -> Packed {
        assert!(w.len() >= out * inp && b.is_none_or(|b| b.len() >= out));
        let pad = out.div_ceil(8) * 8;
        let mut wt = vec![0.0; inp * pad];
        for c in 0..out {
            for k in 0..inp {
                wt[k * pad + c] = w[c * inp + k];
            }
        }
        let mut bias = vec![0.0; pad];
        if let Some(b) = b {
            bias[..out].copy_from_slice(&b[..out]);
        }
        Packed {
            wt,
            b: bias,
            inp,
            out,
            pad,
        }
    }

    /// Adds `W x[j] + b` to each of the `m` rows of `y` (`out` wide).
    pub(super) fn add_to(&self, x: &[f32], m: usize, y: &mut [f32]) {
        assert!(x.len() >= m * self.inp && y.len() >= m * self.out);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, and the assert bounds every row.
            return unsafe { packed_avx2(self, x, m, y) };
        }
        for j in 0..m {
            let xr = &x[j * self.inp..(j + 1) * self.inp];
            for c in 0..self.out {
                let mut acc = 0.0f32;
                for (k, xv) in xr.iter().enumerate() {
                    acc = xv.mul_add(self.wt[k * self.pad + c], acc);
                }
                y[j * self.out + c] += acc + self.b[c];
            }
        }
    }

    /// `W x[j] + b` for the `m` rows of `x`.
    pub(super) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * self.out];
        self.add_to(x, m, &mut y);
        y
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn packed_avx2(p: &Packed, x: &[f32], m: usize, y: &mut [f32]) {
    // SAFETY: the caller checked the CPU and the rows' bounds; tiles stay within `m` rows and `pad` outputs.
    unsafe {
        let mut j = 0;
        while j + 4 <= m {
            packed_cols::<4, 2>(p, x, j, y);
            j += 4;
        }
        match m - j {
            3 => packed_cols::<3, 3>(p, x, j, y),
            2 => packed_cols::<2, 4>(p, x, j, y),
            1 => packed_cols::<1, 6>(p, x, j, y),
            _ => {}
        }
    }
}

/// Every output of rows `j..j + R`, `8 V` at a time, then sixteen and eight: `R V` sums in flight, eight or more
/// (the multiply-add latency times its two ports) where the layer is that wide. One row (a lane's within-group
/// logits, 41 of them) takes 48 outputs a tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn packed_cols<const R: usize, const V: usize>(
    p: &Packed,
    x: &[f32],
    j: usize,
    y: &mut [f32],
) {
    // SAFETY: as the caller's.
    unsafe {
        let mut c = 0;
        while c + 8 * V <= p.pad {
            packed_tile::<R, V>(p, x, j, c, y);
            c += 8 * V;
        }
        while c + 16 <= p.pad {
            packed_tile::<R, 2>(p, x, j, c, y);
            c += 16;
        }
        if c < p.pad {
            packed_tile::<R, 1>(p, x, j, c, y);
        }
    }
}

/// Outputs `c..c + 8 V` of rows `j..j + R`: one chain of multiply-adds per output; outputs past `out` (the
/// packing's zero columns) are computed and dropped.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn packed_tile<const R: usize, const V: usize>(
    p: &Packed,
    x: &[f32],
    j: usize,
    c: usize,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    // SAFETY: rows `j..j + R` of `x` and `y` are in bounds (the caller's), columns `c..c + 8 V <= pad` of the packed
    // weights and biases too; `y` is written only below `out`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        let xs = x.as_ptr().add(j * p.inp);
        let mut wp = p.wt.as_ptr().add(c);
        for k in 0..p.inp {
            let mut w = [_mm256_setzero_ps(); V];
            for (v, w) in w.iter_mut().enumerate() {
                *w = _mm256_loadu_ps(wp.add(8 * v));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let xb = _mm256_broadcast_ss(&*xs.add(r * p.inp + k));
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm256_fmadd_ps(xb, *w, *a);
                }
            }
            wp = wp.add(p.pad);
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = y.as_mut_ptr().add((j + r) * p.out);
            for (v, a) in acc.iter().enumerate() {
                let col = c + 8 * v;
                let s = _mm256_add_ps(*a, _mm256_loadu_ps(p.b.as_ptr().add(col)));
                if col + 8 <= p.out {
                    let at = row.add(col);
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), s));
                } else {
                    let mut t = [0.0f32; 8];
                    _mm256_storeu_ps(t.as_mut_ptr(), s);
                    for (q, t) in t.iter().enumerate().take(p.out.saturating_sub(col)) {
                        *row.add(col + q) += t;
                    }
                }
            }
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
        // Rows of a batch: each output the chain of multiply-adds over its inputs in order, plus bias, added to what
        // was there (the scalar variant's arithmetic, so the vector one must give exactly it), for widths of one
        // input and up, any batch size (tiles of four rows and their remainders) and output counts around the
        // blocks of eight and sixteen.
        for inp in [1usize, 2, 8, 36, 37, 64] {
            for (m, out) in [
                (1usize, 1usize),
                (2, 4),
                (3, 5),
                (7, 13),
                (5, 16),
                (9, 41),
                (4, 192),
            ] {
                let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.71).sin()).collect();
                let x: Vec<f32> = (0..m * inp).map(|i| (i as f32 * 0.23).cos()).collect();
                let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.1).collect();
                let mut y: Vec<f32> = (0..m * out).map(|i| i as f32).collect();
                Packed::new(&w, Some(&b), inp, out).add_to(&x, m, &mut y);
                for j in 0..m {
                    for c in 0..out {
                        let mut acc = 0.0f32;
                        for k in 0..inp {
                            acc = x[j * inp + k].mul_add(w[c * inp + k], acc);
                        }
                        let want = (j * out + c) as f32 + (acc + b[c]);
                        assert_eq!(y[j * out + c], want, "{inp} {m} {out}");
                        let plain: f32 = (0..inp).map(|k| x[j * inp + k] * w[c * inp + k]).sum();
                        assert!((acc - plain).abs() < 1e-4 * (1.0 + plain.abs()));
                    }
                }
                // A row's outputs do not depend on the rows beside it.
                let mut alone = vec![0.0; out];
                Packed::new(&w, None, inp, out).add_to(&x[(m - 1) * inp..], 1, &mut alone);
                let mut all = vec![0.0; m * out];
                Packed::new(&w, None, inp, out).add_to(&x, m, &mut all);
                assert_eq!(alone, all[(m - 1) * out..], "{inp} {m} {out}");
            }
        }
    }
}
