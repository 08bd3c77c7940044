//! [`StepNet`] in plain Rust on the CPU, over a copy of the model's CPU parameters made once per set of parameters
//! ([`PackedNet`]: the dense layers packed, the embedding tables as they are).
//!
//! Why: on the CPU a libtorch generation step is a few hundred small operations, and for the batches generation
//! runs (a few hundred lanes) their dispatch, allocations and copies took about half of it. Here the dense layers
//! are register-tiled products over transposed weights (see [`kernels::Packed`]; packing on every call, as a GEMM
//! library does, dominated the small batches of real captures, so the model keeps the packed layers until its
//! parameters change) and everything else is plain loops; nothing is allocated per operation beyond the row
//! vectors themselves.
//!
//! Each row is computed from that row alone with a fixed order of operations, so a lane's numbers do not depend on
//! its batch (no padding needed). The arithmetic is libtorch's (PyTorch's GRU gates r, z, n; the heads'
//! `relu -> linear -> relu -> linear`), so the two agree to float rounding.

use super::kernels;
use super::step::{Cond, StepInputs, StepNet};
use super::{CATEGORICAL, N_CONT_INPUTS, Net, SILENCE_HEAD};
use tch::{Tensor, nn};

/// The memory of a contiguous CPU float tensor; `None` for any other tensor.
fn f32s(t: &Tensor) -> Option<&[f32]> {
    // SAFETY: a step only reads parameters: nothing writes them while the `NativeStep` borrowing the `Net` lives
    // (training and `set_params` need the model mutably, and tensors are not shared across threads: `Tensor` is
    // not `Sync`).
    unsafe { crate::model::cpu_tensor::f32s(t) }
}

/// A linear layer's weights (`out x inp`, libtorch's layout) and bias, packed (see [`kernels::Packed`]).
fn packed(w: &Tensor, b: Option<&Tensor>) -> Option<kernels::Packed> {
    let s = w.size();
    let b = match b {
        Some(b) => Some(f32s(b)?),
        None => None,
    };
    Some(kernels::Packed::new(
        f32s(w)?,
        b,
        s[1] as usize,
        s[0] as usize,
    ))
}

fn packed_linear(l: &nn::Linear) -> Option<kernels::Packed> {
    packed(&l.ws, l.bs.as_ref())
}

/// The dense layers of a [`Net`], packed for [`NativeStep`]: built once for a set of parameters and kept by the
/// model until they change (training, new parameters, loading).
pub(super) struct PackedNet {
    in_proj: kernels::Packed,
    /// GRU input and hidden layers (gates r, z, n stacked, as libtorch).
    gru_x: kernels::Packed,
    gru_h: kernels::Packed,
    ctx: kernels::Packed,
    /// The linear conditioning layers: inter-arrival, packets, bytes per packet.
    c_iat: kernels::Packed,
    c_pkts: kernels::Packed,
    c_bpp: kernels::Packed,
    heads: Vec<(kernels::Packed, kernels::Packed)>,
    /// Each group's block of the within-group layer of the categorical heads 1 to 4 (the last group's padding
    /// classes left out).
    within: Vec<Vec<kernels::Packed>>,
    silence_in: kernels::Packed,
    e_proto: Emb,
    e_dport: Emb,
    e_sport: Emb,
    e_flags: Emb,
    /// The four pair bucket tables.
    pair: Vec<Emb>,
    /// The conditioning embeddings: protocol, destination and source port class, flags.
    c_proto: Emb,
    c_dport: Emb,
    c_sport: Emb,
    c_flags: Emb,
}

impl PackedNet {
    /// `None` when a parameter is not a contiguous CPU float tensor (a CUDA model: it steps on libtorch).
    pub(super) fn new(net: &Net) -> Option<PackedNet> {
        let [w_ih, w_hh, b_ih, b_hh] = &net.gru_weights;
        Some(PackedNet {
            in_proj: packed_linear(&net.in_proj)?,
            gru_x: packed(w_ih, Some(b_ih))?,
            gru_h: packed(w_hh, Some(b_hh))?,
            ctx: packed_linear(&net.ctx)?,
            c_iat: packed_linear(net.cond_linear(Cond::Iat))?,
            c_pkts: packed_linear(net.cond_linear(Cond::Packets))?,
            c_bpp: packed_linear(net.cond_linear(Cond::Bpp))?,
            heads: net
                .heads
                .iter()
                .map(|(h, o)| Some((packed_linear(h)?, packed_linear(o)?)))
                .collect::<Option<_>>()?,
            within: net
                .within
                .iter()
                .zip(&CATEGORICAL)
                .map(|((w, b, _), t)| {
                    let (w, b) = (f32s(w)?, f32s(b)?);
                    let hs = w.len() / b.len().max(1);
                    let (size, n) = (t.size as usize, t.n as usize);
                    Some(
                        (0..t.groups() as usize)
                            .map(|g| {
                                let first = g * size;
                                let valid = size.min(n - first);
                                kernels::Packed::new(
                                    &w[first * hs..(first + valid) * hs],
                                    Some(&b[first..first + valid]),
                                    hs,
                                    valid,
                                )
                            })
                            .collect(),
                    )
                })
                .collect::<Option<_>>()?,
            silence_in: packed_linear(&net.silence_in)?,
            e_proto: Emb::of(&net.e_proto)?,
            e_dport: Emb::of(&net.e_dport)?,
            e_sport: Emb::of(&net.e_sport)?,
            e_flags: Emb::of(&net.e_flags)?,
            pair: net.pair.iter().map(Emb::of).collect::<Option<_>>()?,
            c_proto: Emb::of(net.cond_embedding(Cond::Proto))?,
            c_dport: Emb::of(net.cond_embedding(Cond::DstPort))?,
            c_sport: Emb::of(net.cond_embedding(Cond::SrcPort))?,
            c_flags: Emb::of(net.cond_embedding(Cond::Flags))?,
        })
    }
}

/// An embedding table, `dim` wide (a copy: a step then makes no call into libtorch, which cost a tenth of a step
/// of the one or two lanes a busy pair's steps hold).
struct Emb {
    w: Vec<f32>,
    dim: usize,
}

impl Emb {
    fn of(e: &nn::Embedding) -> Option<Emb> {
        Some(Emb {
            w: f32s(&e.ws)?.to_vec(),
            dim: e.ws.size()[1] as usize,
        })
    }
    fn row(&self, c: i64) -> &[f32] {
        let c = c as usize;
        &self.w[c * self.dim..(c + 1) * self.dim]
    }
}

fn relu(v: &mut [f32]) {
    for x in v {
        *x = x.max(0.0);
    }
}

/// [`StepNet`] over a [`PackedNet`]: a [`Net`] whose parameters are CPU float tensors, packed.
pub(super) struct NativeStep<'a> {
    hidden: usize,
    packed: &'a PackedNet,
}

impl<'a> NativeStep<'a> {
    pub(super) fn new(packed: &'a PackedNet, hidden: usize) -> NativeStep<'a> {
        NativeStep { hidden, packed }
    }

    fn rows(&self, c: &[f32]) -> usize {
        c.len() / self.hidden
    }

    fn linear(&self, l: Cond) -> &'a kernels::Packed {
        match l {
            Cond::Iat => &self.packed.c_iat,
            Cond::Packets => &self.packed.c_pkts,
            Cond::Bpp => &self.packed.c_bpp,
            _ => panic!("{l:?} is an embedding"),
        }
    }

    fn embedding(&self, e: Cond) -> &'a Emb {
        match e {
            Cond::Proto => &self.packed.c_proto,
            Cond::DstPort => &self.packed.c_dport,
            Cond::SrcPort => &self.packed.c_sport,
            Cond::Flags => &self.packed.c_flags,
            _ => panic!("{e:?} is linear"),
        }
    }
}

impl StepNet for NativeStep<'_> {
    type Rows = Vec<f32>;

    fn min_rows(&self) -> usize {
        1
    }

    fn encode(&self, x: &StepInputs) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (m, hs) = (x.m, self.hidden);
        // Event embedding: continuous inputs and the four field embeddings, projected, relu.
        let p = self.packed;
        let mut inp = Vec::with_capacity(m * p.in_proj.inp);
        for j in 0..m {
            inp.extend_from_slice(&x.cont[j * N_CONT_INPUTS..(j + 1) * N_CONT_INPUTS]);
            inp.extend_from_slice(p.e_proto.row(x.proto[j]));
            inp.extend_from_slice(p.e_dport.row(x.dport[j]));
            inp.extend_from_slice(p.e_sport.row(x.sport[j]));
            inp.extend_from_slice(p.e_flags.row(x.flags[j]));
        }
        let mut e = p.in_proj.forward(&inp, m);
        relu(&mut e);
        // One GRU step: r = s(x_r + h_r), z = s(x_z + h_z), n = tanh(x_n + r h_n), h' = (1 - z) n + z h.
        let gx = p.gru_x.forward(&e, m);
        let gh = p.gru_h.forward(&x.h0, m);
        let mut rz = Vec::with_capacity(m * 2 * hs);
        for (gx, gh) in gx.chunks(3 * hs).zip(gh.chunks(3 * hs)) {
            rz.extend(gx[..2 * hs].iter().zip(&gh[..2 * hs]).map(|(a, b)| a + b));
        }
        kernels::sigmoid_in_place(&mut rz);
        let mut h = Vec::with_capacity(m * hs);
        for ((gx, gh), rz) in gx
            .chunks(3 * hs)
            .zip(gh.chunks(3 * hs))
            .zip(rz.chunks(2 * hs))
        {
            h.extend((0..hs).map(|u| gx[2 * hs + u] + rz[u] * gh[2 * hs + u]));
        }
        kernels::tanh_in_place(&mut h);
        for (j, h) in h.chunks_mut(hs).enumerate() {
            let (z, h0) = (
                &rz[j * 2 * hs + hs..(j + 1) * 2 * hs],
                &x.h0[j * hs..(j + 1) * hs],
            );
            for u in 0..hs {
                h[u] = (1.0 - z[u]) * h[u] + z[u] * h0[u];
            }
        }
        // Pair embedding: the sum of its four bucket rows.
        let pd = p.pair[0].dim;
        let mut pe = vec![0.0f32; m * pd];
        for (j, out) in pe.chunks_mut(pd).enumerate() {
            for (t, table) in p.pair.iter().enumerate() {
                for (o, v) in out.iter_mut().zip(table.row(x.buckets[j * 4 + t])) {
                    *o += v;
                }
            }
        }
        let mut hp = Vec::with_capacity(m * (hs + pd));
        for j in 0..m {
            hp.extend_from_slice(&h[j * hs..(j + 1) * hs]);
            hp.extend_from_slice(&pe[j * pd..(j + 1) * pd]);
        }
        let c1 = p.ctx.forward(&hp, m);
        (h, c1, pe)
    }

    fn silence(&self, pe: &Vec<f32>, x: &[f32]) -> Vec<f32> {
        let pd = self.packed.pair[0].dim;
        let m = pe.len() / pd;
        let w = x.len() / m.max(1);
        let mut inp = Vec::with_capacity(m * (pd + w));
        for j in 0..m {
            inp.extend_from_slice(&pe[j * pd..(j + 1) * pd]);
            inp.extend_from_slice(&x[j * w..(j + 1) * w]);
        }
        let s = self.packed.silence_in.forward(&inp, m);
        self.head(SILENCE_HEAD, &s).1
    }

    fn head(&self, i: usize, c: &Vec<f32>) -> (Vec<f32>, Vec<f32>) {
        let m = self.rows(c);
        let (l1, l2) = &self.packed.heads[i];
        let mut r = c.clone();
        relu(&mut r);
        let mut hid = l1.forward(&r, m);
        relu(&mut hid);
        let out = l2.forward(&hid, m);
        (hid, out)
    }

    fn within(&self, i: usize, hid: &Vec<f32>, group: &[i64]) -> Vec<f32> {
        let size = CATEGORICAL[i - 1].size as usize;
        let blocks = &self.packed.within[i - 1];
        let hs = hid.len() / group.len().max(1);
        let mut out = vec![0.0; group.len() * size];
        for ((j, &g), o) in group.iter().enumerate().zip(out.chunks_mut(size)) {
            let block = &blocks[g as usize];
            block.add_to(&hid[j * hs..(j + 1) * hs], 1, &mut o[..block.out]);
            // The last group's padding classes get no probability.
            o[block.out..].fill(f32::NEG_INFINITY);
        }
        out
    }

    fn add_linear(&self, c: &Vec<f32>, l: Cond, x: &[f32]) -> Vec<f32> {
        let mut y = c.clone();
        self.linear(l).add_to(x, self.rows(c), &mut y);
        y
    }

    fn select(&self, c: &Vec<f32>, rows: &[usize]) -> Vec<f32> {
        let hs = self.hidden;
        let mut out = Vec::with_capacity(rows.len() * hs);
        for &r in rows {
            out.extend_from_slice(&c[r * hs..(r + 1) * hs]);
        }
        out
    }

    fn add_embedding(&self, c: &Vec<f32>, e: Cond, classes: &[i64]) -> Vec<f32> {
        let t = self.embedding(e);
        let mut y = c.clone();
        for (r, &cls) in y.chunks_mut(t.dim).zip(classes) {
            for (v, e) in r.iter_mut().zip(t.row(cls)) {
                *v += e;
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::super::step::{TorchStep, silence_inputs};
    use super::super::{TempoNet, TempoNetConfig, cpu};
    use super::*;
    use crate::record::{FlowRecord, TcpFlags};
    use rand::{Rng, SeedableRng};
    use std::net::{IpAddr, Ipv4Addr};
    use tch::Device;

    fn close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}[{i}]: native {x}, libtorch {y}"
            );
        }
    }

    /// Every output of a step agrees between the native and the libtorch implementation: random weights (an
    /// unfitted model), random inputs and states, every head, every conditioning layer.
    #[test]
    fn native_step_matches_libtorch() {
        tch::set_num_threads(1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let records: Vec<FlowRecord> = (0..400)
            .map(|i| FlowRecord {
                start_us: 1_600_000_000_000_000 + i * 1_700_000 + rng.gen_range(0..900_000),
                duration_us: rng.gen_range(0..3_000_000),
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i % 7) as u8)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 1, 0, (i % 5) as u8)),
                src_port: rng.gen_range(1024..65535),
                dst_port: [53, 443, 8080][i as usize % 3],
                proto: [6, 17][i as usize % 2],
                flags: TcpFlags(0x1b),
                packets: rng.gen_range(1..40),
                bytes: rng.gen_range(1_200..50_000),
                label: None,
            })
            .collect();
        let cfg = TempoNetConfig::default();
        let t = TempoNet::new(cfg.clone(), &records, Device::Cpu).unwrap();
        let hs = cfg.hidden as usize;
        let packed = PackedNet::new(&t.net).expect("a CPU model's parameters are readable");
        let native = NativeStep::new(&packed, hs);
        let torch = TorchStep {
            net: &t.net,
            device: Device::Cpu,
        };
        let m = 37;
        let mut normal =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect() };
        let x = StepInputs {
            m,
            cont: normal(m * N_CONT_INPUTS),
            h0: normal(m * hs).iter().map(|v| v / 2.0).collect(),
            proto: (0..m as i64).map(|j| (j * 37) % 256).collect(),
            dport: (0..m as i64).map(|j| (j * 101) % 1670).collect(),
            sport: (0..m as i64).map(|j| (j * 53 + 9) % 1670).collect(),
            flags: (0..m as i64).map(|j| (j * 11) % 256).collect(),
            buckets: (0..4 * m as i64)
                .map(|j| (j * 97) % cfg.buckets as i64)
                .collect(),
        };
        let (h1, c1, pe1) = native.encode(&x);
        let (h2, c2, pe2) = torch.encode(&x);
        close("hidden", &h1, &h2);
        close("context", &c1, &cpu(c2.shallow_clone()));
        close("pair embedding", &pe1, &cpu(pe2.shallow_clone()));
        let pos: Vec<u32> = (0..m as u32).map(|j| j % 70).collect();
        let sx = silence_inputs(&x.cont, &pos);
        close(
            "silence",
            &native.silence(&pe1, &sx),
            &torch.silence(&pe2, &sx),
        );
        for i in 0..9 {
            let (hid1, o1) = native.head(i, &c1);
            let (hid2, o2) = torch.head(i, &c2);
            close(&format!("head {i}"), &o1, &o2);
            if (1..=4).contains(&i) {
                let t = &CATEGORICAL[i - 1];
                // Every group, the padded last one included.
                let group: Vec<i64> = (0..m as i64).map(|j| j % t.groups()).collect();
                let (w1, w2) = (
                    native.within(i, &hid1, &group),
                    torch.within(i, &hid2, &group),
                );
                for (j, g) in group.iter().enumerate() {
                    for c in 0..t.size as usize {
                        let at = j * t.size as usize + c;
                        if g * t.size + (c as i64) < t.n {
                            close(&format!("within {i}"), &w1[at..at + 1], &w2[at..at + 1]);
                        } else {
                            assert!(
                                w1[at] == f32::NEG_INFINITY && w2[at] < -1e8,
                                "padding class"
                            );
                        }
                    }
                }
            }
        }
        for (l, width) in [(Cond::Iat, 2), (Cond::Packets, 1), (Cond::Bpp, 1)] {
            let v = normal(m * width);
            close(
                &format!("{l:?}"),
                &native.add_linear(&c1, l, &v),
                &cpu(torch.add_linear(&c2, l, &v)),
            );
        }
        for (e, n) in [
            (Cond::Proto, 256),
            (Cond::DstPort, 1670),
            (Cond::SrcPort, 1670),
            (Cond::Flags, 256),
        ] {
            let cls: Vec<i64> = (0..m as i64).map(|j| (j * 29 + 3) % n).collect();
            close(
                &format!("{e:?}"),
                &native.add_embedding(&c1, e, &cls),
                &cpu(torch.add_embedding(&c2, e, &cls)),
            );
        }
    }
}
