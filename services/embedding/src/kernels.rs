//! Hand-written CPU kernels for the encoder, run as candle custom ops.
//!
//! candle runs bias addition, GELU, the residual sum and layer norm as
//! separate passes over `[tokens, hidden]` tensors, and GELU calls a scalar
//! `erf` per element (a tenth of the embedder's time in a profile). Here each
//! chain is one pass over the rows, split across threads, with inner loops
//! the compiler vectorises. They are compiled twice, for the baseline target
//! and for AVX2+FMA, and the wider copy is picked at run time, so one binary
//! stays portable. Tests compare each kernel with candle's own ops.

use candle_core::{bail, CpuStorage, InplaceOp1, InplaceOp2, Layout, Result};
use rayon::prelude::*;

/// Rows handed to one task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// The non-linearity after the feed-forward layer (BERT's `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Bias only (the kernel tests' baseline; no BERT config names it).
    #[cfg(test)]
    Identity,
    /// `x * Φ(x)` with the exact (erf) normal CDF: BERT's `gelu`.
    GeluErf,
    /// The tanh approximation of GELU: `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

/// `erf(x)` for f32 as a branch-free rational function (the minimax
/// approximation Eigen and XLA use for float): odd numerator and even
/// denominator in x², input clamped to ±4 where erf is ±1 in f32. Max error
/// about 2 ulp, and unlike a libm call it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_2e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_2e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// `tanh(x)` for f32 by the same clamped rational approach (Eigen's float
/// tanh), so the tanh GELU also vectorises; ±1 beyond the clamp.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 + -8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_525e-3;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    x * p / q
}

/// `e^x` for f32, vectorisable: `x = n·ln 2 + r` with integer `n` and
/// |r| ≤ ln 2 / 2, `e^r` by its degree-6 Taylor polynomial (relative error
/// below 2e-7 there), and `2^n` built directly in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Past these bounds e^x leaves the normal f32 range.
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    // ln 2 split in two so n·ln 2 stays exact in the first product.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn activate(x: f32, activation: Activation) -> f32 {
    match activation {
        #[cfg(test)]
        Activation::Identity => x,
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            0.5 * x * (1.0 + tanh(inner))
        }
        Activation::Relu => x.max(0.0),
    }
}

/// `values = activation(values)`.
#[inline(always)]
fn activation_generic(values: &mut [f32], activation: Activation) {
    // One loop per activation so each is a straight-line, vectorised body.
    macro_rules! apply {
        ($act:expr) => {
            values.iter_mut().for_each(|v| *v = activate(*v, $act))
        };
    }
    match activation {
        #[cfg(test)]
        Activation::Identity => {}
        Activation::GeluErf => apply!(Activation::GeluErf),
        Activation::GeluTanh => apply!(Activation::GeluTanh),
        Activation::Relu => apply!(Activation::Relu),
    }
}

/// Sum of a slice in eight independent lanes, which the compiler keeps in
/// one vector register (a single running f32 sum cannot be reordered).
#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `values = layer_norm(values + residual) * gamma + beta` row by row,
/// with the two-pass variance PyTorch uses.
#[inline(always)]
fn add_norm_generic(values: &mut [f32], residual: &[f32], norm: &AddLayerNorm<'_>) {
    let cols = norm.gamma.len();
    for (out_row, res_row) in values
        .chunks_exact_mut(cols)
        .zip(residual.chunks_exact(cols))
    {
        out_row.iter_mut().zip(res_row).for_each(|(o, &r)| *o += r);
        let mean = lane_sum(out_row) / cols as f32;
        out_row.iter_mut().for_each(|v| *v -= mean);
        let mut lanes = [0f32; 8];
        let chunks = out_row.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += v * v;
            }
        }
        let variance = (lanes.iter().sum::<f32>() + tail) / cols as f32;
        let scale = 1.0 / (variance + norm.eps).sqrt();
        for ((o, &g), &b) in out_row.iter_mut().zip(norm.gamma).zip(norm.beta) {
            *o = *o * scale * g + b;
        }
    }
}

/// Softmax of each `cols`-wide row, in place.
#[inline(always)]
fn softmax_generic(values: &mut [f32], cols: usize) {
    for row in values.chunks_exact_mut(cols) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = lane.max(v);
            }
        }
        let max = lanes.iter().fold(tail, |m, &v| m.max(v));
        row.iter_mut().for_each(|v| *v = exp(*v - max));
        let scale = 1.0 / lane_sum(row);
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

// The AVX2+FMA copies: the same bodies, compiled with wider registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_avx2(values: &mut [f32], cols: usize) {
    softmax_generic(values, cols);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn activation_avx2(values: &mut [f32], activation: Activation) {
    activation_generic(values, activation);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn add_norm_avx2(values: &mut [f32], residual: &[f32], norm: &AddLayerNorm<'_>) {
    add_norm_generic(values, residual, norm);
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Softmax over each `cols`-wide row of `values`, in place (rows are
/// attention scores: one query's scores over the keys).
#[allow(unsafe_code)]
pub fn softmax_rows(values: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked for the features this copy uses.
        unsafe { softmax_avx2(values, cols) };
        return;
    }
    softmax_generic(values, cols);
}

#[allow(unsafe_code)]
fn activation_rows(values: &mut [f32], activation: Activation) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked for the features this copy uses.
        unsafe { activation_avx2(values, activation) };
        return;
    }
    activation_generic(values, activation);
}

#[allow(unsafe_code)]
fn add_norm_rows(values: &mut [f32], residual: &[f32], norm: &AddLayerNorm<'_>) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was just checked for the features this copy uses.
        unsafe { add_norm_avx2(values, residual, norm) };
        return;
    }
    add_norm_generic(values, residual, norm);
}

/// The f32 elements of a contiguous tensor whose last dimension is `cols`.
fn rows_mut<'s>(
    storage: &'s mut CpuStorage,
    layout: &Layout,
    cols: usize,
    op: &str,
) -> Result<&'s mut [f32]> {
    let (start, end) = contiguous_span(layout, cols, op)?;
    match storage {
        CpuStorage::F32(values) => Ok(&mut values[start..end]),
        _ => bail!("{op}: expects f32 values"),
    }
}

fn rows<'s>(storage: &'s CpuStorage, layout: &Layout, cols: usize, op: &str) -> Result<&'s [f32]> {
    let (start, end) = contiguous_span(layout, cols, op)?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

fn contiguous_span(layout: &Layout, cols: usize, op: &str) -> Result<(usize, usize)> {
    let Some(span) = layout.contiguous_offsets() else {
        bail!("{op}: input must be contiguous");
    };
    let last = layout.dims().last().copied().unwrap_or(0);
    if last != cols {
        bail!("{op}: last dimension {last} does not match {cols} parameters");
    }
    Ok(span)
}

/// Applies an activation in place (the tensor is a fresh product no one
/// else reads, so no copy is made).
pub struct Activate(pub Activation);

impl InplaceOp1 for Activate {
    fn name(&self) -> &'static str {
        "activate"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let cols = layout.dims().last().copied().unwrap_or(1).max(1);
        let values = rows_mut(storage, layout, cols, self.name())?;
        values
            .par_chunks_mut(cols * ROWS_PER_TASK)
            .for_each(|chunk| activation_rows(chunk, self.0));
        Ok(())
    }
}

/// `x = layer_norm(x + residual) * gamma + beta` over the last dimension, in
/// place: a BERT sub-layer's output (skip connection and LayerNorm after a
/// dense layer whose bias is already added) in one pass.
pub struct AddLayerNorm<'a> {
    /// LayerNorm weight.
    pub gamma: &'a [f32],
    /// LayerNorm bias.
    pub beta: &'a [f32],
    /// LayerNorm epsilon.
    pub eps: f32,
}

impl InplaceOp2 for AddLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        values: &mut CpuStorage,
        values_layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<()> {
        let cols = self.gamma.len();
        if self.beta.len() != cols {
            bail!("{}: gamma and beta lengths differ", self.name());
        }
        if values_layout.dims() != residual_layout.dims() {
            bail!(
                "{}: input {:?} and residual {:?} differ in shape",
                self.name(),
                values_layout.dims(),
                residual_layout.dims()
            );
        }
        let residual = rows(residual, residual_layout, cols, self.name())?;
        let values = rows_mut(values, values_layout, cols, self.name())?;
        values
            .par_chunks_mut(cols * ROWS_PER_TASK)
            .zip(residual.par_chunks(cols * ROWS_PER_TASK))
            .for_each(|(values, residual)| add_norm_rows(values, residual, self));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{Device, Tensor};

    /// Values from -10 to 10 in small steps, plus zero and the clamp edges.
    fn grid(cols: usize) -> Tensor {
        let values: Vec<f32> = (0..cols * 64)
            .map(|i| -10.0 + 20.0 * i as f32 / (cols * 64) as f32)
            .collect();
        Tensor::from_vec(values, (64, cols), &Device::Cpu).unwrap()
    }

    #[test]
    fn activations_match_candle() {
        let x = grid(40);
        for (activation, expected) in [
            (Activation::GeluErf, x.gelu_erf().unwrap()),
            (Activation::GeluTanh, x.gelu().unwrap()),
            (Activation::Relu, x.relu().unwrap()),
            (Activation::Identity, x.clone()),
        ] {
            let got = x.copy().unwrap();
            got.inplace_op1(&Activate(activation)).unwrap();
            let diff = max_abs_diff(&got, &expected);
            assert!(diff < 2e-6, "{activation:?}: max difference {diff}");
        }
    }

    #[test]
    fn exp_and_softmax_match_std_and_candle() {
        // Over the whole clamped range (beyond it e^x is not a normal f32).
        for i in -1997..=2020 {
            let x = i as f32 * 0.0437;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 3e-7,
                "exp({x}): {got} vs {want}"
            );
        }
        assert_eq!(exp(-1000.0), (-87.3f32).exp());
        let scores = grid(33);
        let want = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let mut got = scores.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        softmax_rows(&mut got, 33);
        let got = Tensor::from_vec(got, (64, 33), &Device::Cpu).unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-6, "softmax: max difference {diff}");
    }

    #[test]
    fn erf_is_accurate_near_zero_and_saturates() {
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6, "{}", erf(0.5));
        assert!((erf(-1.0) + 0.842_700_8).abs() < 1e-6, "{}", erf(-1.0));
        assert!((erf(100.0) - 1.0).abs() < 1e-6, "{}", erf(100.0));
        assert!((erf(-100.0) + 1.0).abs() < 1e-6, "{}", erf(-100.0));
        assert!((tanh(0.3) - 0.291_312_6).abs() < 1e-6);
        assert!((tanh(20.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn add_layer_norm_matches_candle() {
        let cols = 37; // not a multiple of the 8 lanes
        let x = grid(cols);
        // A column ramp keeps every row's variance well away from zero,
        // where candle's one-pass variance would lose all digits.
        let ramp: Vec<f32> = (0..cols).map(|i| i as f32 * 0.1).collect();
        let residual = (x.sin().unwrap() * 3.0)
            .unwrap()
            .broadcast_add(&Tensor::from_slice(&ramp, cols, &Device::Cpu).unwrap())
            .unwrap();
        let gamma: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 * 0.02).collect();
        let beta: Vec<f32> = (0..cols).map(|i| -(i as f32) * 0.03).collect();
        let eps = 1e-12f32;
        let got = x.copy().unwrap();
        got.inplace_op2(
            &residual,
            &AddLayerNorm {
                gamma: &gamma,
                beta: &beta,
                eps,
            },
        )
        .unwrap();
        let dev = Device::Cpu;
        let sum = (&x + &residual).unwrap();
        let expected = candle_nn::ops::layer_norm(
            &sum,
            &Tensor::from_slice(&gamma, cols, &dev).unwrap(),
            &Tensor::from_slice(&beta, cols, &dev).unwrap(),
            eps,
        )
        .unwrap();
        // candle's layer_norm takes the variance as E[x²] - mean² in f32,
        // which loses a few digits on these rows; an f64 reference decides.
        let diff = max_abs_diff(&got, &expected);
        assert!(diff < 1e-4, "candle: max difference {diff}");
        let sum = sum.to_vec2::<f32>().unwrap();
        let got = got.to_vec2::<f32>().unwrap();
        for (row, got) in sum.iter().zip(&got) {
            let n = cols as f64;
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            for (j, (&v, &g)) in row.iter().zip(got).enumerate() {
                let want = (f64::from(v) - mean) / (var + f64::from(eps)).sqrt()
                    * f64::from(gamma[j])
                    + f64::from(beta[j]);
                assert!((want - f64::from(g)).abs() < 1e-5, "{want} vs {g}");
            }
        }
    }

    #[test]
    fn shape_mismatches_are_errors_not_panics() {
        let ones = vec![1f32; 8];
        let norm = AddLayerNorm {
            gamma: &ones,
            beta: &ones,
            eps: 1e-5,
        };
        let err = grid(8).inplace_op2(&grid(4), &norm).unwrap_err();
        assert!(err.to_string().contains("differ in shape"), "{err}");
        let err = grid(7).inplace_op2(&grid(7), &norm).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let transposed = grid(8).t().unwrap();
        let err = transposed
            .inplace_op1(&Activate(Activation::Relu))
            .unwrap_err();
        assert!(err.to_string().contains("contiguous"), "{err}");
    }
}
