//! The network side of one generation step, behind [`StepNet`]: a batch of lanes' input events in, the heads'
//! outputs out, each head's context built from the fields drawn before it. The drawing itself (every field, with
//! each lane's own random stream) happens on the CPU in [`super::TempoNet::gen_step`], once for both
//! implementations:
//! - [`TorchStep`]: libtorch operations on the model's device (CUDA included);
//! - [`super::native::NativeStep`]: the same arithmetic in plain Rust over the CPU tensors' memory. A step is a few
//!   hundred small operations (a two-layer head per field, the within-group products of four categorical heads),
//!   and on the CPU libtorch's per-operation dispatch, allocation and copies cost more than their arithmetic for
//!   the batches generation runs.
//!
//! Both compute each row independently of the others in its batch (see `MIN_GEN_ROWS`), so a lane's flows do not
//! depend on which lanes step with it; the two agree to float rounding (a test holds them to it).

use super::{Net, cpu};
use tch::nn::{Module, RNN};
use tch::{Device, Tensor};

/// The conditioning layers that add a drawn field to the context of the heads after it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cond {
    /// Linear in (standardised log gap, has-gap).
    Iat,
    Proto,
    DstPort,
    SrcPort,
    Flags,
    /// Linear in the standardised log packets.
    Packets,
    /// Linear in the standardised log bytes per packet.
    Bpp,
}

/// A step's inputs, `m` rows (the lanes, then padding), row-major on the CPU.
pub(super) struct StepInputs {
    pub m: usize,
    /// Continuous inputs of each row's input event, `N_CONT_INPUTS` wide.
    pub cont: Vec<f32>,
    pub proto: Vec<i64>,
    pub dport: Vec<i64>,
    pub sport: Vec<i64>,
    pub flags: Vec<i64>,
    /// Pair buckets, 4 per row.
    pub buckets: Vec<i64>,
    /// GRU state before the step, `hidden` wide.
    pub h0: Vec<f32>,
}

/// What [`super::TempoNet::gen_step`] needs of the network. Outputs that the step draws from come back as CPU rows
/// (`m` of them, row-major); contexts stay in the implementation's own representation.
pub(super) trait StepNet {
    type Rows;
    /// Smallest batch the implementation computes rows of independently of the batch.
    fn min_rows(&self) -> usize;
    /// Embeds the inputs and runs the GRU one step: the new state (CPU rows), the first context (GRU state joined
    /// with the pair embedding) and the pair embedding.
    fn encode(&self, x: &StepInputs) -> (Vec<f32>, Self::Rows, Self::Rows);
    /// Silence logits (one per row) from the pair embedding and the silence inputs (see `silence_inputs`).
    fn silence(&self, pe: &Self::Rows, x: &[f32]) -> Vec<f32>;
    /// Head `i`'s hidden rows and its output (CPU rows, the head's output width).
    fn head(&self, i: usize, c: &Self::Rows) -> (Self::Rows, Vec<f32>);
    /// Within-group logits (CPU rows, the group size wide) of categorical head `i` (1..=4) for each row's group,
    /// from the head's hidden rows; padding classes get `-inf` or a large negative value.
    fn within(&self, i: usize, hid: &Self::Rows, group: &[i64]) -> Vec<f32>;
    /// `c` plus a linear conditioning layer ([`Cond::Iat`], [`Cond::Packets`], [`Cond::Bpp`]) of `x` (rows of its
    /// input width).
    fn add_linear(&self, c: &Self::Rows, l: Cond, x: &[f32]) -> Self::Rows;
    /// `c` plus the rows of a conditioning embedding for `classes`.
    fn add_embedding(&self, c: &Self::Rows, e: Cond, classes: &[i64]) -> Self::Rows;
    /// Rows `rows` of `c`, in that order (a head computed for the lanes that draw from it only).
    fn select(&self, c: &Self::Rows, rows: &[usize]) -> Self::Rows;
}

impl Net {
    pub(super) fn cond_linear(&self, l: Cond) -> &tch::nn::Linear {
        match l {
            Cond::Iat => &self.c_iat,
            Cond::Packets => &self.c_pkts,
            Cond::Bpp => &self.c_bpp,
            _ => panic!("{l:?} is an embedding"),
        }
    }
    pub(super) fn cond_embedding(&self, e: Cond) -> &tch::nn::Embedding {
        match e {
            Cond::Proto => &self.c_proto,
            Cond::DstPort => &self.c_dport,
            Cond::SrcPort => &self.c_sport,
            Cond::Flags => &self.c_flags,
            _ => panic!("{e:?} is linear"),
        }
    }
}

/// [`StepNet`] on libtorch, on the model's device.
pub(super) struct TorchStep<'a> {
    pub net: &'a Net,
    pub device: Device,
}

impl TorchStep<'_> {
    fn rows(&self, v: &[f32], width: usize) -> Tensor {
        Tensor::from_slice(v)
            .view([(v.len() / width.max(1)) as i64, width as i64])
            .to_device(self.device)
    }
}

impl StepNet for TorchStep<'_> {
    type Rows = Tensor;
    fn min_rows(&self) -> usize {
        super::MIN_GEN_ROWS
    }
    fn encode(&self, x: &StepInputs) -> (Vec<f32>, Tensor, Tensor) {
        let (n, d, m) = (self.net, self.device, x.m as i64);
        let ti = |v: &[i64]| Tensor::from_slice(v).view([m, 1]).to_device(d);
        let e = n.embed(
            &Tensor::from_slice(&x.cont)
                .view([m, 1, super::N_CONT_INPUTS as i64])
                .to_device(d),
            &ti(&x.proto),
            &ti(&x.dport),
            &ti(&x.sport),
            &ti(&x.flags),
        );
        let hs = (x.h0.len() / x.m) as i64;
        let h0 = Tensor::from_slice(&x.h0).view([1, m, hs]).to_device(d);
        let (o, _) = n.gru.seq_init(&e, &tch::nn::GRUState(h0));
        let h = o.squeeze_dims([1]);
        let h_cpu = cpu(h.shallow_clone());
        let pe = n.pair_embed(&Tensor::from_slice(&x.buckets).view([m, 4]).to_device(d));
        let c1 = n.ctx.forward(&Tensor::cat(&[h, pe.shallow_clone()], 1));
        (h_cpu, c1, pe)
    }
    fn silence(&self, pe: &Tensor, x: &[f32]) -> Vec<f32> {
        let x = self.rows(x, x.len() / pe.size()[0] as usize);
        cpu(self.net.silence_from(pe, x))
    }
    fn head(&self, i: usize, c: &Tensor) -> (Tensor, Vec<f32>) {
        let (hid, out) = self.net.head_hid(i, c);
        (hid, cpu(out))
    }
    fn within(&self, i: usize, hid: &Tensor, group: &[i64]) -> Vec<f32> {
        cpu(self.net.within_logits(i, hid, group, super::MIN_GEN_ROWS))
    }
    fn add_linear(&self, c: &Tensor, l: Cond, x: &[f32]) -> Tensor {
        let lin = self.net.cond_linear(l);
        let width = lin.ws.size()[1] as usize;
        c + lin.forward(&self.rows(x, width))
    }
    fn add_embedding(&self, c: &Tensor, e: Cond, classes: &[i64]) -> Tensor {
        c + self
            .net
            .cond_embedding(e)
            .forward(&Tensor::from_slice(classes).to_device(self.device))
    }
    fn select(&self, c: &Tensor, rows: &[usize]) -> Tensor {
        let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        c.index_select(0, &Tensor::from_slice(&rows).to_device(self.device))
    }
}

/// Softmax of columns `from..from + width` of each of the first `a` rows (`stride` wide) of `raw`, into `a` rows
/// `width` wide.
pub(super) fn softmax_rows(
    raw: &[f32],
    stride: usize,
    from: usize,
    width: usize,
    a: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(a * width);
    for r in raw.chunks(stride).take(a) {
        let start = out.len();
        out.extend_from_slice(&r[from..from + width]);
        super::kernels::softmax_in_place(&mut out[start..]);
    }
    out
}

/// Mixture parameters of columns `from..from + 3k` of each of the first `a` rows of `raw` (`stride` wide), as
/// [`super::mixture::to_cpu`] gives them: component logits (unnormalised: the samplers normalise), means, and
/// standard deviations from the clamped log standard deviations.
pub(super) fn mixture_rows(
    raw: &[f32],
    stride: usize,
    from: usize,
    k: usize,
    a: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut w, mut mu, mut sg) = (
        Vec::with_capacity(a * k),
        Vec::with_capacity(a * k),
        Vec::with_capacity(a * k),
    );
    for r in raw.chunks(stride).take(a) {
        let r = &r[from..from + 3 * k];
        w.extend_from_slice(&r[..k]);
        mu.extend_from_slice(&r[k..2 * k]);
        sg.extend(r[2 * k..].iter().map(|s| {
            (*s as f64)
                .clamp(super::mixture::LOG_SIGMA_MIN, super::mixture::LOG_SIGMA_MAX)
                .exp() as f32
        }));
    }
    (w, mu, sg)
}

/// The silence head's input rows after the pair embedding: each row's [`super::SILENCE_INPUTS`] of its continuous
/// inputs `cont`, then its session position as the [`super::POSITION_BUCKETS`] thermometer flags.
pub(super) fn silence_inputs(cont: &[f32], pos: &[u32]) -> Vec<f32> {
    let w = super::SILENCE_INPUTS.len() + super::POSITION_BUCKETS.len();
    let mut x = Vec::with_capacity(pos.len() * w);
    for (r, p) in cont.chunks(super::N_CONT_INPUTS).zip(pos) {
        x.extend(super::SILENCE_INPUTS.iter().map(|&i| r[i]));
        x.extend(
            super::POSITION_BUCKETS
                .iter()
                .map(|lo| (p >= lo) as u8 as f32),
        );
    }
    x
}
