//! The memory of contiguous `f32` CPU tensors, for the code that works on a network's parameters in plain Rust:
//! the native generation step (reads) and the fused optimiser step (writes).

use tch::{Device, Kind, Tensor};

fn is_cpu_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

/// The elements of `t`; `None` unless it is a contiguous f32 CPU tensor.
///
/// # Safety
/// Nothing may write `t`'s memory while the slice lives.
pub(crate) unsafe fn f32s(t: &Tensor) -> Option<&[f32]> {
    if !is_cpu_f32(t) {
        return None;
    }
    let n = t.numel();
    if n == 0 {
        return Some(&[]);
    }
    // SAFETY: a contiguous CPU float tensor of `n` elements, kept alive by the borrow; the caller excludes writers.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) })
}

/// The elements of `t`, to write; `None` unless it is a contiguous f32 CPU tensor.
///
/// # Safety
/// Nothing else may read or write `t`'s memory while the slice lives (no other slice of it, no tensor operation on
/// it or on a tensor sharing its storage).
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn f32s_mut(t: &Tensor) -> Option<&mut [f32]> {
    if !is_cpu_f32(t) {
        return None;
    }
    let n = t.numel();
    if n == 0 {
        return Some(&mut []);
    }
    // SAFETY: as in `f32s`; the caller excludes every other access.
    Some(unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) })
}
