//! Matrix products for the encoder with our own threading.
//!
//! candle multiplies matrices with the `gemm` crate, asking it to split each
//! product across threads. On this 2-core machine that reached 70 GFLOP/s for
//! the encoder's shapes, while two single-threaded products side by side
//! reached 130+. So the dense layers split their rows into one block per
//! thread, and attention runs one (text, head) pair per task, each with a
//! single-threaded `gemm` call. Same crate, same kernels as candle's matmul;
//! only the work split differs. Tests compare both ops with candle's matmul
//! and softmax.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::kernels::softmax_rows;

/// Rows per task below which splitting a product costs more than it saves.
const MIN_ROWS_PER_TASK: usize = 16;

/// A strided read-only matrix view over a slice.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl View<'_> {
    /// Whether every element the view names lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst[i * dst_stride + j] (+)= Σ_k lhs[i, k] · rhs[k, j]` on this thread,
/// adding to what `dst` holds when `accumulate`.
///
/// The one place that calls `gemm`, which takes raw pointers: the checks
/// below keep every element it reads or writes inside the given slices.
#[allow(unsafe_code)]
fn matmul_into(dst: &mut [f32], dst_stride: usize, lhs: View<'_>, rhs: View<'_>, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    assert!(
        lhs.in_bounds() && rhs.in_bounds(),
        "operand view out of bounds"
    );
    assert!(n <= dst_stride || m <= 1, "destination rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_stride + n <= dst.len(),
        "destination too small"
    );
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above bound every index gemm touches —
    // lhs (i, k) at i·rs + k·cs, rhs likewise, dst (i, j) at i·dst_stride + j
    // — by the slice lengths; dst is borrowed mutably, so it aliases neither
    // operand; Parallelism::None keeps all writes on this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            // dst = alpha·dst + beta·lhs·rhs
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

fn contiguous<'s>(storage: &'s CpuStorage, layout: &Layout, op: &str) -> Result<&'s [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: input must be contiguous");
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// `x · w + bias` for `x: [rows, in]` and `w: [in, out]`, rows split across
/// threads. The output starts as copies of the bias and the product is
/// accumulated onto it, so adding the bias costs no extra pass.
pub struct Dense<'a> {
    /// One value per output column.
    pub bias: &'a [f32],
}

impl CustomOp2 for Dense<'_> {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (&[rows, inputs], &[w_in, outputs]) = (x_layout.dims(), w_layout.dims()) else {
            bail!("dense: expects [rows, in] · [in, out] matrices");
        };
        if inputs != w_in {
            bail!("dense: input width {inputs} does not match weight rows {w_in}");
        }
        if self.bias.len() != outputs {
            bail!("dense: {} biases for {outputs} outputs", self.bias.len());
        }
        let x = contiguous(x, x_layout, self.name())?;
        let w = contiguous(w, w_layout, self.name())?;
        let mut out = vec![0f32; rows * outputs];
        let tasks = rayon::current_num_threads().max(1);
        let rows_per_task = rows.div_ceil(tasks).max(MIN_ROWS_PER_TASK);
        let weight = View {
            data: w,
            rows: inputs,
            cols: outputs,
            row_stride: outputs,
            col_stride: 1,
        };
        out.par_chunks_mut(rows_per_task * outputs.max(1))
            .zip(x.par_chunks(rows_per_task * inputs.max(1)))
            .for_each(|(out, x)| {
                // Each task writes its own rows' biases, so the block is
                // in cache when the product is added onto it.
                for row in out.chunks_exact_mut(outputs.max(1)) {
                    row.copy_from_slice(self.bias);
                }
                let lhs = View {
                    data: x,
                    rows: x.len() / inputs.max(1),
                    cols: inputs,
                    row_stride: inputs,
                    col_stride: 1,
                };
                matmul_into(out, outputs, lhs, weight, true);
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }
}

/// Multi-head self-attention over packed texts.
///
/// Input: `[tokens, 3 · hidden]`, each row a token's query | key | value with
/// heads side by side (query pre-scaled by 1/√d); `spans` says which rows
/// belong to which text. Output: `[tokens, hidden]`, each text attending only
/// to its own tokens, so no mask is needed.
pub struct PackedAttention<'a> {
    /// `(first row, length)` of each text.
    pub spans: &'a [(usize, usize)],
    /// Attention heads.
    pub heads: usize,
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[tokens, width] = layout.dims() else {
            bail!("packed-attention: expects a [tokens, 3 * hidden] matrix");
        };
        let heads = self.heads.max(1);
        if width % (3 * heads) != 0 {
            bail!("packed-attention: width {width} is not 3 x heads x head size");
        }
        let hidden = width / 3;
        let head_dim = hidden / heads;
        let mut next = 0;
        for &(start, len) in self.spans {
            if start != next || len == 0 {
                bail!("packed-attention: spans must tile the rows in order");
            }
            next = start + len;
        }
        if next != tokens {
            bail!("packed-attention: spans cover {next} of {tokens} rows");
        }
        let qkv = contiguous(storage, layout, self.name())?;
        let head_outputs: Vec<Vec<f32>> = (0..self.spans.len() * heads)
            .into_par_iter()
            // One scores buffer per worker, reused across its tasks.
            .map_init(Vec::new, |scores: &mut Vec<f32>, task| {
                let (start, len) = self.spans[task / heads];
                let head = task % heads;
                let rows = &qkv[start * width..(start + len) * width];
                let part = |offset: usize, transposed: bool| View {
                    data: &rows[offset + head * head_dim..],
                    rows: if transposed { head_dim } else { len },
                    cols: if transposed { len } else { head_dim },
                    row_stride: if transposed { 1 } else { width },
                    col_stride: if transposed { width } else { 1 },
                };
                scores.clear();
                scores.resize(len * len, 0.0);
                matmul_into(scores, len, part(0, false), part(hidden, true), false);
                softmax_rows(scores, len);
                let weights = View {
                    data: scores,
                    rows: len,
                    cols: len,
                    row_stride: len,
                    col_stride: 1,
                };
                let mut context = vec![0f32; len * head_dim];
                matmul_into(
                    &mut context,
                    head_dim,
                    weights,
                    part(2 * hidden, false),
                    false,
                );
                context
            })
            .collect();
        let mut out = vec![0f32; tokens * hidden];
        for (task, context) in head_outputs.iter().enumerate() {
            let (start, len) = self.spans[task / heads];
            let head = task % heads;
            let out_rows = out[start * hidden..(start + len) * hidden].chunks_exact_mut(hidden);
            for (out_row, ctx_row) in out_rows.zip(context.chunks_exact(head_dim)) {
                out_row[head * head_dim..(head + 1) * head_dim].copy_from_slice(ctx_row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{Device, IndexOp, Tensor};

    #[test]
    fn dense_matches_candle_matmul() {
        let dev = Device::Cpu;
        for rows in [1, 5, 16, 33, 200] {
            let x = Tensor::randn(0f32, 1.0, (rows, 48), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (48, 20), &dev).unwrap();
            let bias: Vec<f32> = (0..20).map(|i| i as f32 - 10.0).collect();
            let got = x.apply_op2_no_bwd(&w, &Dense { bias: &bias }).unwrap();
            let want = x
                .matmul(&w)
                .unwrap()
                .broadcast_add(&Tensor::from_slice(&bias, 20, &dev).unwrap())
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "{rows} rows: max difference {diff}");
        }
        let w = Tensor::randn(0f32, 1.0, (47, 20), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 48), &dev).unwrap();
        let bias = [0f32; 20];
        let err = x.apply_op2_no_bwd(&w, &Dense { bias: &bias }).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let w = Tensor::randn(0f32, 1.0, (48, 21), &dev).unwrap();
        let err = x.apply_op2_no_bwd(&w, &Dense { bias: &bias }).unwrap_err();
        assert!(err.to_string().contains("biases"), "{err}");
    }

    #[test]
    fn attention_matches_candle_per_text() {
        let dev = Device::Cpu;
        let (heads, head_dim) = (3, 8);
        let hidden = heads * head_dim;
        let spans = [(0, 5), (5, 1), (6, 12)];
        let qkv = Tensor::randn(0f32, 1.0, (18, 3 * hidden), &dev).unwrap();
        let got = qkv
            .apply_op1_no_bwd(&PackedAttention {
                spans: &spans,
                heads,
            })
            .unwrap();
        assert_eq!(got.dims(), &[18, hidden]);
        for &(start, len) in &spans {
            let text = qkv
                .narrow(0, start, len)
                .unwrap()
                .reshape((len, 3, heads, head_dim))
                .unwrap();
            let part = |i: usize| text.i((.., i)).unwrap().transpose(0, 1).unwrap();
            let scores = part(0).matmul(&part(1).t().unwrap()).unwrap();
            let weights = candle_nn::ops::softmax_last_dim(&scores).unwrap();
            let want = weights
                .matmul(&part(2))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .reshape((len, hidden))
                .unwrap();
            let diff = max_abs_diff(&got.narrow(0, start, len).unwrap(), &want);
            assert!(diff < 1e-5, "text at {start}: max difference {diff}");
        }
    }

    #[test]
    fn attention_rejects_spans_that_do_not_tile_the_rows() {
        let qkv = Tensor::zeros((6, 18), candle_core::DType::F32, &Device::Cpu).unwrap();
        for spans in [&[(0, 2), (3, 3)][..], &[(0, 5)], &[(0, 0), (0, 6)]] {
            let err = qkv
                .apply_op1_no_bwd(&PackedAttention { spans, heads: 3 })
                .unwrap_err();
            assert!(err.to_string().contains("spans"), "{err}");
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn matmul_refuses_views_past_the_slice() {
        let short = [0f32; 10];
        let square = [0f32; 16];
        let view = |data| View {
            data,
            rows: 4,
            cols: 4,
            row_stride: 4,
            col_stride: 1,
        };
        matmul_into(&mut [0f32; 16], 4, view(&short), view(&square), false);
    }
}
