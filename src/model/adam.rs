//! Adam for the networks: gradient clipping and the update fused into two passes over memory on the CPU, and
//! tables updated by the rows a batch used.
//!
//! Why not libtorch's `torch::optim::Adam`: it runs about seven tensor operations per parameter tensor, each over
//! every element, tables included, although a batch touches few of their rows. Nine tenths of TempoNet's default
//! 0.87 M parameters sit in tables (pair buckets, port and protocol embeddings, within-group class blocks), and
//! libtorch's step with its norm clipping took 9 ms of a 75 ms training step on a batch of 64 windows, the same at
//! 16 windows: a fixed cost that held small batches (and streaming's incremental steps) back.
//!
//! What it computes: Adam (Kingma and Ba) with libtorch's defaults (betas 0.9 and 0.999, epsilon 1e-8, no weight
//! decay), after clipping the gradients to a global L2 norm as `tch`'s `backward_step_clip_norm` does. One step
//! counter serves every parameter (the bias corrections). A parameter marked as a table (a 2-D tensor of rows,
//! see [`Adam::new`]) updates only the rows whose gradient is not zero in the step: a row no event of the batch
//! used keeps its value and its moments, as in TensorFlow's LazyAdam and PyTorch's SparseAdam. Dense Adam would
//! go on moving a bucket of a pair that left for many steps after its last use, on momentum alone.
//!
//! Two implementations of the same arithmetic: a fused loop over the tensors' memory when every parameter and
//! gradient is a contiguous `f32` CPU tensor (the default), and tensor operations otherwise (CUDA). A test holds
//! them together, and holds the fused loop to libtorch's Adam where no table is marked.

use super::cpu_tensor::{f32s, f32s_mut};
use tch::{Kind, Tensor, nn};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// One parameter with its moments.
struct Slot {
    var: Tensor,
    /// Row width of a table updated by rows; `None`: every element every step.
    row: Option<usize>,
    /// First and second moments, the parameter's shape and device.
    m: Tensor,
    v: Tensor,
}

/// Adam over a `VarStore`'s trainable parameters (see the module doc).
pub(crate) struct Adam {
    lr: f64,
    steps: i32,
    slots: Vec<Slot>,
    /// Use tensor operations even where the fused loop could run (tests).
    force_tensor_ops: bool,
}

impl Adam {
    /// Adam over `vs`'s trainable parameters in name order; `table(name)` marks the 2-D parameters updated by rows.
    pub(crate) fn new(vs: &nn::VarStore, lr: f64, table: impl Fn(&str) -> bool) -> Adam {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        // Name order: the norm's sum (and so every step) does not depend on a hash map's order.
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = named
            .into_iter()
            .map(|(name, var)| {
                let size = var.size();
                let row = (table(&name) && size.len() == 2).then(|| size[1] as usize);
                Slot {
                    m: var.zeros_like(),
                    v: var.zeros_like(),
                    var,
                    row,
                }
            })
            .collect();
        Adam {
            lr,
            steps: 0,
            slots,
            force_tensor_ops: false,
        }
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Back-propagates `loss`, clips the gradients to global L2 norm `max_norm` and takes one Adam step. The
    /// gradients are zero again afterwards.
    pub(crate) fn backward_step_clip_norm(&mut self, loss: &Tensor, max_norm: f64) {
        loss.backward();
        self.steps += 1;
        let grads: Vec<Tensor> = self.slots.iter().map(|s| s.var.grad()).collect();
        // SAFETY (the probes' borrows end at once): nothing writes these tensors between backward and the step.
        let cpu = |t: &Tensor| unsafe { f32s(t) }.is_some();
        let fused = !self.force_tensor_ops
            && self
                .slots
                .iter()
                .zip(&grads)
                .all(|(s, g)| cpu(&s.var) && (!g.defined() || cpu(g)));
        if fused {
            self.step_fused(&grads, max_norm);
        } else {
            tch::no_grad(|| self.step_tensor_ops(&grads, max_norm));
        }
    }

    /// Multiplier of the gradients for global norm `max_norm` given their squared norm (`tch`'s
    /// `clip_grad_norm`: scaled only when above).
    fn clip_coef(sumsq: f64, max_norm: f64) -> f64 {
        let coef = max_norm / (sumsq.sqrt() + 1e-6);
        coef.min(1.0)
    }

    fn bias_corrections(&self) -> (f64, f64) {
        (1.0 - BETA1.powi(self.steps), 1.0 - BETA2.powi(self.steps))
    }

    /// The step over the tensors' memory: every parameter and every defined gradient is a contiguous f32 CPU
    /// tensor (checked by the caller).
    fn step_fused(&mut self, grads: &[Tensor], max_norm: f64) {
        // Pass 1: the squared norm, and each table's rows that have a gradient (`None`: a dense parameter).
        let mut sumsq = 0f64;
        let mut rows: Vec<Option<Vec<usize>>> = Vec::with_capacity(self.slots.len());
        for (s, g) in self.slots.iter().zip(grads) {
            if !g.defined() {
                rows.push(None);
                continue;
            }
            // SAFETY: nothing writes the gradient during this pass.
            let gs = unsafe { f32s(g) }.expect("checked by the caller");
            match s.row {
                None => {
                    sumsq += gs.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                    rows.push(None);
                }
                Some(w) => {
                    let mut used = Vec::new();
                    for (r, gr) in gs.chunks_exact(w).enumerate() {
                        if gr.iter().any(|&x| x != 0.0) {
                            sumsq += gr.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                            used.push(r);
                        }
                    }
                    rows.push(Some(used));
                }
            }
        }
        let coef = Self::clip_coef(sumsq, max_norm) as f32;
        let (bc1, bc2) = self.bias_corrections();
        let k = Update {
            coef,
            step: (self.lr / bc1) as f32,
            sqrt_bc2: bc2.sqrt() as f32,
        };
        // Pass 2: the update, zeroing the gradient behind it.
        for ((s, g), used) in self.slots.iter().zip(grads).zip(&rows) {
            if !g.defined() {
                continue;
            }
            // SAFETY: the parameter, its gradient and its moments are distinct tensors of one size; nothing else
            // reads or writes them during the step (tensors are not shared across threads).
            let (p, gs, m, v) = unsafe {
                (
                    f32s_mut(&s.var).expect("checked by the caller"),
                    f32s_mut(g).expect("checked by the caller"),
                    f32s_mut(&s.m).expect("zeros like the parameter"),
                    f32s_mut(&s.v).expect("zeros like the parameter"),
                )
            };
            match (s.row, used) {
                (Some(w), Some(used)) => {
                    for &r in used {
                        let at = r * w..(r + 1) * w;
                        k.apply(
                            &mut p[at.clone()],
                            &mut gs[at.clone()],
                            &mut m[at.clone()],
                            &mut v[at],
                        );
                    }
                }
                _ => k.apply(p, gs, m, v),
            }
        }
    }

    fn step_tensor_ops(&mut self, grads: &[Tensor], max_norm: f64) {
        let mut sumsq = 0f64;
        for g in grads.iter().filter(|g| g.defined()) {
            sumsq += g
                .to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
        }
        let coef = Self::clip_coef(sumsq, max_norm);
        let (bc1, bc2) = self.bias_corrections();
        for (s, g) in self.slots.iter_mut().zip(grads) {
            if !g.defined() {
                continue;
            }
            let g2 = g * coef;
            let m_new = &s.m * BETA1 + &g2 * (1.0 - BETA1);
            let v_new = &s.v * BETA2 + g2.square() * (1.0 - BETA2);
            let upd = &m_new / (v_new.sqrt() / bc2.sqrt() + EPS) * (self.lr / bc1);
            match s.row {
                Some(_) => {
                    let used = g.ne(0.0).any_dim(1, true);
                    s.m.copy_(&m_new.where_self(&used, &s.m));
                    s.v.copy_(&v_new.where_self(&used, &s.v));
                    let _ = s.var.g_sub_(&(upd * used.to_kind(Kind::Float)));
                }
                None => {
                    s.m.copy_(&m_new);
                    s.v.copy_(&v_new);
                    let _ = s.var.g_sub_(&upd);
                }
            }
            let _ = g.shallow_clone().zero_();
        }
    }

    #[cfg(test)]
    fn force_tensor_ops(&mut self) {
        self.force_tensor_ops = true;
    }
}

/// The constants of one fused step.
struct Update {
    coef: f32,
    /// Learning rate over the first bias correction.
    step: f32,
    sqrt_bc2: f32,
}

impl Update {
    /// Adam on a run of elements, in libtorch's order of operations; zeroes the gradients.
    #[inline]
    fn apply(&self, p: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2, eps) = (BETA1 as f32, BETA2 as f32, EPS as f32);
        for (((p, g), m), v) in p.iter_mut().zip(g.iter_mut()).zip(m).zip(v) {
            let gc = *g * self.coef;
            *m = *m * b1 + gc * (1.0 - b1);
            *v = *v * b2 + gc * gc * (1.0 - b2);
            *p -= self.step * *m / (v.sqrt() / self.sqrt_bc2 + eps);
            *g = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;
    use tch::nn::{Module, OptimizerConfig};

    /// A small network with a table (an embedding) and dense layers, and a loss on a fixed batch that uses a few of
    /// the table's rows.
    struct Toy {
        vs: nn::VarStore,
        emb: nn::Embedding,
        lin: nn::Linear,
    }

    fn toy() -> Toy {
        let vs = nn::VarStore::new(Device::Cpu);
        let emb = nn::embedding(vs.root() / "emb", 50, 8, Default::default());
        let lin = nn::linear(vs.root() / "lin", 8, 3, Default::default());
        // Fixed values, not the global generator (tests run in parallel).
        tch::no_grad(|| {
            let mut vars: Vec<_> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (i, (_, mut t)) in vars.into_iter().enumerate() {
                let n = t.numel() as i64;
                let v = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + i as f64).sin();
                t.copy_(&v.view(t.size().as_slice()));
            }
        });
        Toy { vs, emb, lin }
    }

    impl Toy {
        fn loss(&self, step: i64) -> Tensor {
            let ids = Tensor::from_slice(&[1i64, 4, 4, 9, (step % 3) + 20]);
            let y = Tensor::from_slice(&[0i64, 2, 1, 0, 2]);
            self.lin
                .forward(&self.emb.forward(&ids))
                .cross_entropy_for_logits(&y)
                * 50.0
        }
        fn params(&self) -> Vec<(String, Vec<f32>)> {
            let mut v: Vec<_> = self
                .vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
    }

    fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| x.1.iter().zip(&y.1).map(|(p, q)| (p - q).abs()))
            .fold(0.0, f32::max)
    }

    /// With no table marked, the fused step is libtorch's Adam with `tch`'s norm clipping (the loss is scaled so
    /// that the clipping acts).
    #[test]
    fn fused_step_matches_libtorch_adam() {
        let ours = toy();
        let theirs = toy();
        assert_eq!(max_diff(&ours.params(), &theirs.params()), 0.0);
        let mut a = Adam::new(&ours.vs, 0.01, |_| false);
        let mut b = nn::Adam::default().build(&theirs.vs, 0.01).unwrap();
        for step in 0..20 {
            a.backward_step_clip_norm(&ours.loss(step), 1.0);
            b.backward_step_clip_norm(&theirs.loss(step), 1.0);
        }
        let d = max_diff(&ours.params(), &theirs.params());
        assert!(d < 1e-5, "fused Adam differs from libtorch's by {d}");
        // And it moved: 20 steps of 0.01.
        assert!(max_diff(&ours.params(), &toy().params()) > 0.05);
    }

    /// A table's rows that no step used keep their values bit for bit; used rows move; the tensor-operation path
    /// (CUDA's) computes what the fused loop computes.
    #[test]
    fn table_rows_update_lazily_and_both_paths_agree() {
        let fused = toy();
        let ops = toy();
        let start = fused.params();
        let table = |n: &str| n.starts_with("emb");
        let mut a = Adam::new(&fused.vs, 0.01, table);
        let mut b = Adam::new(&ops.vs, 0.01, table);
        b.force_tensor_ops();
        for step in 0..20 {
            a.backward_step_clip_norm(&fused.loss(step), 1.0);
            b.backward_step_clip_norm(&ops.loss(step), 1.0);
        }
        let d = max_diff(&fused.params(), &ops.params());
        assert!(d < 1e-5, "fused and tensor-operation steps differ by {d}");
        let end = fused.params();
        let emb =
            |p: &[(String, Vec<f32>)]| p.iter().find(|x| x.0 == "emb.weight").unwrap().1.clone();
        let (e0, e1) = (emb(&start), emb(&end));
        for r in 0..50 {
            let row = |e: &[f32]| e[r * 8..(r + 1) * 8].to_vec();
            let used = [1, 4, 9, 20, 21, 22].contains(&r);
            assert_eq!(row(&e0) != row(&e1), used, "row {r}");
        }
        // Gradients are zero after a step (the next backward accumulates from zero).
        for (_, t) in fused.vs.variables() {
            assert_eq!(t.grad().abs().sum(Kind::Double).double_value(&[]), 0.0);
        }
    }
}
