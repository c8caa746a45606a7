//! Gemma 3 decoder over quantized GGUF weights, written for classification
//! prompts rather than chat: the KV cache is a plain value that can be
//! cloned, so the instruction and label list (identical for every clause)
//! are computed once and every clause continues from a copy; and logits can
//! be computed for a handful of candidate tokens only, which makes
//! label-constrained decoding cheap despite Gemma's 262k vocabulary.
//!
//! candle-transformers' `quantized_gemma3` cannot do either (its cached
//! multi-token mask has mismatched dtypes, and its MLP uses SiLU where Gemma
//! uses tanh-GELU), hence this module. Architecture per layer: RMSNorm →
//! attention (q/k RMSNorm, RoPE; sliding window on five of every six layers)
//! → RMSNorm → residual; RMSNorm → GELU-gated MLP → RMSNorm → residual.
//! llama.cpp's converter already adds Gemma's +1 to the norm weights.

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_transformers::quantized_nn::RmsNorm;

/// Longest sequence (prompt plus answer) the model accepts here.
pub const MAX_POSITIONS: usize = 8192;

/// Shape of the network, from GGUF metadata.
#[derive(Debug, Clone)]
pub struct GemmaConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Sliding window of the local layers.
    pub sliding_window: usize,
    /// Every n-th layer is global.
    pub global_every: usize,
}

struct Layer {
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    sliding: bool,
}

/// Per-layer keys and values of the tokens seen so far. Cloning is cheap
/// (tensors are reference counted), which is how a cached prompt prefix is
/// shared between requests.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The loaded model.
pub struct Gemma {
    config: GemmaConfig,
    /// Token embeddings in f16: rows are gathered for the input and, for
    /// constrained decoding, for the few candidate output tokens.
    embeddings: Tensor,
    /// Tied output projection, kept quantized: full-vocabulary logits are a
    /// matrix-vector product where the quantized kernel is the faster one.
    output: QMatMul,
    layers: Vec<Layer>,
    norm: RmsNorm,
    rope_local: (Tensor, Tensor),
    rope_global: (Tensor, Tensor),
    device: Device,
}

fn rope_tables(head_dim: usize, base: f32, device: &Device) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), device)?.reshape((1, head_dim / 2))?;
    let positions = Tensor::arange(0u32, MAX_POSITIONS as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((MAX_POSITIONS, 1))?;
    let angles = positions.matmul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Gemma {
    /// Loads a Gemma 3 GGUF.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        if arch != "gemma3" {
            candle_core::bail!("general.architecture is {arch:?}; only gemma3 GGUFs are supported");
        }
        let get = |key: &str| -> Result<&gguf_file::Value> {
            content
                .metadata
                .get(&format!("gemma3.{key}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("gemma3.{key} is missing")))
        };
        let eps = get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let embeddings_q = content.tensor(reader, "token_embd.weight", device)?;
        let config = GemmaConfig {
            hidden: get("embedding_length")?.to_u32()? as usize,
            layers: get("block_count")?.to_u32()? as usize,
            heads: get("attention.head_count")?.to_u32()? as usize,
            kv_heads: get("attention.head_count_kv")?.to_u32()? as usize,
            head_dim: get("attention.key_length")?.to_u32()? as usize,
            sliding_window: get("attention.sliding_window")?.to_u32()? as usize,
            global_every: get("attention.sliding_window_type")
                .and_then(|v| Ok(v.to_u32()? as usize))
                .unwrap_or(6),
        };
        let rope_global = get("rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(1_000_000.0);
        let rope_local = get("rope.local_freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10_000.0);
        let embeddings = embeddings_q.dequantize(device)?.to_dtype(DType::F16)?;
        let output = match content.tensor(reader, "output.weight", device) {
            Ok(t) => QMatMul::from_qtensor(t)?,
            Err(_) => QMatMul::from_qtensor(embeddings_q)?,
        };
        let mut tensor = |name: String| content.tensor(reader, &name, device);
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let mut norm = |n: &str| RmsNorm::from_qtensor(tensor(format!("{p}.{n}.weight"))?, eps);
            let q_norm = norm("attn_q_norm")?;
            let k_norm = norm("attn_k_norm")?;
            let attn_norm = norm("attn_norm")?;
            let post_attn_norm = norm("post_attention_norm")?;
            let ffn_norm = norm("ffn_norm")?;
            let post_ffn_norm = norm("post_ffw_norm")?;
            // Dequantized once at load: candle's f32 matmul prefills a clause
            // far faster than its quantized kernels on CPU, for the memory of
            // f32 weights.
            let mut matmul = |n: &str| -> Result<QMatMul> {
                Ok(QMatMul::Tensor(
                    tensor(format!("{p}.{n}.weight"))?.dequantize(device)?,
                ))
            };
            layers.push(Layer {
                q: matmul("attn_q")?,
                k: matmul("attn_k")?,
                v: matmul("attn_v")?,
                o: matmul("attn_output")?,
                gate: matmul("ffn_gate")?,
                up: matmul("ffn_up")?,
                down: matmul("ffn_down")?,
                q_norm,
                k_norm,
                attn_norm,
                post_attn_norm,
                ffn_norm,
                post_ffn_norm,
                sliding: (i + 1) % config.global_every != 0,
            });
        }
        let norm = RmsNorm::from_qtensor(tensor("output_norm.weight".into())?, eps)?;
        Ok(Self {
            rope_local: rope_tables(config.head_dim, rope_local, device)?,
            rope_global: rope_tables(config.head_dim, rope_global, device)?,
            config,
            embeddings,
            output,
            layers,
            norm,
            device: device.clone(),
        })
    }

    /// An empty cache.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Runs `tokens` after what `cache` holds and returns the final hidden
    /// state (after the output norm) of the last token, shape (hidden,).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let seq = tokens.len();
        if seq == 0 {
            candle_core::bail!("no tokens to run");
        }
        let offset = cache.len;
        if offset + seq > MAX_POSITIONS {
            candle_core::bail!(
                "{} tokens exceed the model's {MAX_POSITIONS}-token limit here",
                offset + seq
            );
        }
        let cfg = &self.config;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self
            .embeddings
            .index_select(&ids, 0)?
            .to_dtype(DType::F32)?
            .affine((cfg.hidden as f64).sqrt(), 0.0)?
            .unsqueeze(0)?;
        // One mask per attention kind for the whole pass, not per layer.
        let total = offset + seq;
        let global_mask = (seq > 1)
            .then(|| self.mask(seq, offset, None))
            .transpose()?;
        let local_mask = (seq > 1 || total > cfg.sliding_window)
            .then(|| self.mask(seq, offset, Some(cfg.sliding_window)))
            .transpose()?;
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let residual = x.clone();
            let h = layer.attn_norm.forward(&x)?;
            let mask = if layer.sliding {
                local_mask.as_ref()
            } else {
                global_mask.as_ref()
            };
            let h = self.attention(layer, &h, offset, slot, mask)?;
            let h = layer.post_attn_norm.forward(&h)?;
            x = (h + residual)?;
            let residual = x.clone();
            let h = layer.ffn_norm.forward(&x)?;
            let gate = layer.gate.forward(&h)?.gelu()?;
            let h = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            let h = layer.post_ffn_norm.forward(&h)?;
            x = (h + residual)?;
        }
        cache.len = offset + seq;
        let last = x.i((0, seq - 1))?.unsqueeze(0)?;
        self.norm.forward(&last)?.squeeze(0)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        offset: usize,
        slot: &mut Option<(Tensor, Tensor)>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (_, seq, _) = x.dims3()?;
        let q = layer
            .q
            .forward(x)?
            .reshape((1, seq, cfg.heads, cfg.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = layer
            .k
            .forward(x)?
            .reshape((1, seq, cfg.kv_heads, cfg.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = layer
            .v
            .forward(x)?
            .reshape((1, seq, cfg.kv_heads, cfg.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = layer.q_norm.forward(&q)?;
        let k = layer.k_norm.forward(&k)?;
        let (cos, sin) = if layer.sliding {
            &self.rope_local
        } else {
            &self.rope_global
        };
        let cos = cos.narrow(0, offset, seq)?;
        let sin = sin.narrow(0, offset, seq)?;
        let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
        let (k, v) = match slot.take() {
            Some((k_cache, v_cache)) => (
                Tensor::cat(&[&k_cache, &k], 2)?,
                Tensor::cat(&[&v_cache, &v], 2)?,
            ),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        let total = offset + seq;
        // Grouped-query attention: fold each key/value head's query heads
        // into the row dimension so one matmul serves them all.
        let group = cfg.heads / cfg.kv_heads;
        let q = q.reshape((cfg.kv_heads, group * seq, cfg.head_dim))?;
        let k = k.reshape((cfg.kv_heads, total, cfg.head_dim))?;
        let v = v.reshape((cfg.kv_heads, total, cfg.head_dim))?;
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = if let Some(mask) = mask {
            // mask: (seq, total)
            let scores = scores.reshape((cfg.kv_heads, group, seq, total))?;
            scores
                .broadcast_add(mask)?
                .reshape((cfg.kv_heads, group * seq, total))?
        } else {
            scores
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)? // (kv_heads, group*seq, head_dim)
            .reshape((cfg.heads, seq, cfg.head_dim))?
            .transpose(0, 1)?
            .reshape((1, seq, cfg.heads * cfg.head_dim))?;
        layer.o.forward(&out)
    }

    /// Additive mask: query i (at position offset+i) sees key j when
    /// j <= offset+i and, in sliding layers, offset+i - j < window.
    fn mask(&self, seq: usize, offset: usize, window: Option<usize>) -> Result<Tensor> {
        let total = offset + seq;
        let values: Vec<f32> = (0..seq)
            .flat_map(|i| {
                let pos = offset + i;
                (0..total).map(move |j| {
                    let visible = j <= pos && window.is_none_or(|w| pos - j < w);
                    if visible {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Tensor::from_vec(values, (seq, total), &self.device)
    }

    /// Logits over the whole vocabulary for a final hidden state.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.output.forward(&hidden.unsqueeze(0)?)?.squeeze(0)
    }

    /// Logits for `candidates` only (dot products with their embedding rows).
    pub fn candidate_logits(&self, hidden: &Tensor, candidates: &[u32]) -> Result<Vec<f32>> {
        let ids = Tensor::new(candidates, &self.device)?;
        let rows = self
            .embeddings
            .index_select(&ids, 0)?
            .to_dtype(DType::F32)?;
        rows.matmul(&hidden.unsqueeze(D::Minus1)?)?
            .squeeze(D::Minus1)?
            .to_vec1()
    }
}
