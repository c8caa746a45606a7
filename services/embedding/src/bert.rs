//! A BERT encoder on candle tensors, laid out for embedding on CPU.
//!
//! Same weights and arithmetic as Hugging Face's `BertModel` (and candle's
//! port), organised differently because a profile of the padded version
//! showed most time outside the matrix products:
//! - Texts are packed one after another into a `[tokens, hidden]` matrix, so
//!   every dense layer is one large matrix product with no padding rows and
//!   no attention mask; only attention itself runs per text.
//! - Query, key and value are one fused `[hidden, 3 * hidden]` product, with
//!   the 1/√d attention scale folded into the query weights at load.
//! - Weights are transposed once at load, not on every call.
//! - Bias + GELU and bias + residual + LayerNorm are single fused passes
//!   (see `kernels`).
//! - Products split their work across threads themselves (see `matmul`);
//!   attention runs one (text, head) pair per task.

use candle_core::{IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};

use crate::kernels::{Activate, Activation, AddLayerNorm};
use crate::matmul::{Dense as DenseOp, PackedAttention};

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            gamma: vb.get(size, "weight")?.to_vec1()?,
            beta: vb.get(size, "bias")?.to_vec1()?,
            eps: eps as f32,
        })
    }

    /// `layer_norm(x + residual)`, in place in `x` (a fresh product).
    fn add(&self, x: Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        x.inplace_op2(
            residual,
            &AddLayerNorm {
                gamma: &self.gamma,
                beta: &self.beta,
                eps: self.eps,
            },
        )?;
        Ok(x)
    }
}

/// A dense layer stored as `[in, out]` so `x.matmul(w)` needs no transpose.
struct Dense {
    weight: Tensor,
    bias: Vec<f32>,
}

impl Dense {
    /// `x · w + b`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op2_no_bwd(&self.weight, &DenseOp { bias: &self.bias })
    }

    fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((outputs, inputs), "weight")?.t()?.contiguous()?,
            bias: vb.get(outputs, "bias")?.to_vec1()?,
        })
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

impl Layer {
    fn load(vb: &VarBuilder, config: &Config, heads: usize) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        let attention = vb.pp("attention");
        let this = attention.pp("self");
        let get = |name: &str| -> candle_core::Result<(Tensor, Tensor)> {
            let vb = this.pp(name);
            Ok((vb.get((hidden, hidden), "weight")?, vb.get(hidden, "bias")?))
        };
        let (query_w, query_b) = get("query")?;
        let (key_w, key_b) = get("key")?;
        let (value_w, value_b) = get("value")?;
        // softmax(q·k / √d) == softmax((q / √d)·k): scale the query once here.
        let scale = 1.0 / ((hidden / heads) as f64).sqrt();
        let (query_w, query_b) = ((query_w * scale)?, (query_b * scale)?);
        let qkv = Dense {
            weight: Tensor::cat(&[&query_w, &key_w, &value_w], 0)?
                .t()?
                .contiguous()?,
            bias: Tensor::cat(&[&query_b, &key_b, &value_b], 0)?.to_vec1()?,
        };
        let out = attention.pp("output");
        let layer_out = vb.pp("output");
        Ok(Self {
            qkv,
            attention_out: Dense::load(&out.pp("dense"), hidden, hidden)?,
            attention_norm: Norm::load(&out.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            intermediate: Dense::load(
                &vb.pp("intermediate").pp("dense"),
                hidden,
                config.intermediate_size,
            )?,
            output: Dense::load(&layer_out.pp("dense"), config.intermediate_size, hidden)?,
            output_norm: Norm::load(&layer_out.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
        })
    }
}

/// The encoder: token ids in, contextual token vectors out.
pub struct BertEncoder {
    word_embeddings: candle_nn::Embedding,
    /// Position embeddings plus row 0 of the token-type table (sentence
    /// embedders use one segment), added once at load.
    position_embeddings: candle_nn::Embedding,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    max_positions: usize,
    activation: Activation,
}

impl BertEncoder {
    /// Loads weights named as in Hugging Face checkpoints, with or without a
    /// `bert.` (or `<model_type>.`) prefix.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self, String> {
        if config.position_embedding_type != PositionEmbeddingType::Absolute {
            return Err("only absolute position embeddings are supported".to_owned());
        }
        let heads = config.num_attention_heads;
        if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {heads}",
                config.hidden_size
            ));
        }
        let activation = match config.hidden_act {
            HiddenAct::Gelu => Activation::GeluErf,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        };
        let mut prefixes = vec![String::new(), "bert.".to_owned()];
        if let Some(model_type) = &config.model_type {
            prefixes.push(format!("{model_type}."));
        }
        let prefix = prefixes
            .iter()
            .find(|p| vb.contains_tensor(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or("no embeddings.word_embeddings.weight tensor (is this a BERT model?)")?;
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        Self::load_tensors(&vb, config, heads, activation).map_err(|err| err.to_string())
    }

    fn load_tensors(
        vb: &VarBuilder,
        config: &Config,
        heads: usize,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        let embeddings = vb.pp("embeddings");
        let table = |name: &str, rows: usize| -> candle_core::Result<candle_nn::Embedding> {
            Ok(candle_nn::Embedding::new(
                embeddings.get((rows, hidden), &format!("{name}.weight"))?,
                hidden,
            ))
        };
        let token_types = embeddings.get(
            (config.type_vocab_size, hidden),
            "token_type_embeddings.weight",
        )?;
        let positions = embeddings
            .get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?
            .broadcast_add(&token_types.i(0)?)?;
        let encoder = vb.pp("encoder").pp("layer");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(&encoder.pp(i.to_string()), config, heads))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: table("word_embeddings", config.vocab_size)?,
            position_embeddings: candle_nn::Embedding::new(positions, hidden),
            embedding_norm: Norm::load(&embeddings.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            layers,
            heads,
            max_positions: config.max_position_embeddings,
            activation,
        })
    }

    /// Encodes texts given as token ids. Returns the `[total tokens, hidden]`
    /// matrix: text 0's tokens first, then text 1's, and so on.
    pub fn forward(&self, texts: &[&[u32]]) -> candle_core::Result<Tensor> {
        let device = self.word_embeddings.embeddings().device().clone();
        let mut spans = Vec::with_capacity(texts.len());
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        for text in texts {
            if text.is_empty() || text.len() > self.max_positions {
                candle_core::bail!(
                    "a text of {} tokens is outside 1..={}",
                    text.len(),
                    self.max_positions
                );
            }
            spans.push((ids.len(), text.len()));
            ids.extend_from_slice(text);
            positions.extend(0..text.len() as u32);
        }
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &device)?;
        let positions = Tensor::from_vec(positions, total, &device)?;
        let words = self.word_embeddings.forward(&ids)?;
        let positions = self.position_embeddings.forward(&positions)?;
        let mut hidden = self.embedding_norm.add(words, &positions)?;
        for layer in &self.layers {
            hidden = self.layer(layer, &hidden, &spans)?;
        }
        Ok(hidden)
    }

    fn layer(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        spans: &[(usize, usize)],
    ) -> candle_core::Result<Tensor> {
        let context = layer
            .qkv
            .forward(hidden)?
            .apply_op1_no_bwd(&PackedAttention {
                spans,
                heads: self.heads,
            })?;
        let attended = layer
            .attention_norm
            .add(layer.attention_out.forward(&context)?, hidden)?;
        let intermediate = layer.intermediate.forward(&attended)?;
        intermediate.inplace_op1(&Activate(self.activation))?;
        layer
            .output_norm
            .add(layer.output.forward(&intermediate)?, &attended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarMap};
    use candle_transformers::models::bert::BertModel;

    fn tiny_config(hidden_act: HiddenAct) -> Config {
        Config {
            vocab_size: 50,
            hidden_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 40,
            max_position_embeddings: 16,
            hidden_act,
            ..Config::default()
        }
    }

    /// Random weights (LayerNorm too, so gamma/beta matter) under the
    /// checkpoint's names, read back from a safetensors file as real
    /// checkpoints are (a VarMap would invent any missing tensor).
    fn random_checkpoint(config: &Config, prefix: &str) -> VarBuilder<'static> {
        let map = random_weights(config, prefix);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        map.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap()
    }

    fn random_weights(config: &Config, prefix: &str) -> VarMap {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.3,
        };
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        for (name, rows) in [
            ("word_embeddings", config.vocab_size),
            ("position_embeddings", config.max_position_embeddings),
            ("token_type_embeddings", config.type_vocab_size),
        ] {
            e.get_with_hints((rows, h), &format!("{name}.weight"), init)
                .unwrap();
        }
        let norm = |vb: VarBuilder| {
            vb.get_with_hints(
                h,
                "weight",
                Init::Randn {
                    mean: 1.0,
                    stdev: 0.2,
                },
            )
            .unwrap();
            vb.get_with_hints(h, "bias", init).unwrap();
        };
        let dense = |vb: VarBuilder, i: usize, o: usize| {
            vb.get_with_hints((o, i), "weight", init).unwrap();
            vb.get_with_hints(o, "bias", init).unwrap();
        };
        norm(e.pp("LayerNorm"));
        for l in 0..config.num_hidden_layers {
            let vb = vb.pp(format!("encoder.layer.{l}"));
            for name in ["query", "key", "value"] {
                dense(vb.pp("attention.self").pp(name), h, h);
            }
            dense(vb.pp("attention.output.dense"), h, h);
            norm(vb.pp("attention.output.LayerNorm"));
            dense(vb.pp("intermediate.dense"), h, config.intermediate_size);
            dense(vb.pp("output.dense"), config.intermediate_size, h);
            norm(vb.pp("output.LayerNorm"));
        }
        map
    }

    /// The packed encoder equals candle's padded `BertModel` on every real
    /// token, for texts of different lengths and each activation.
    #[test]
    fn matches_candle_bert_model() {
        let texts: Vec<Vec<u32>> = vec![
            vec![1, 7, 9, 2],
            vec![1, 3, 4, 5, 6, 8, 10, 11, 12, 2],
            vec![1, 2],
            (0..16).map(|i| (i * 3 % 50) as u32).collect(),
        ];
        for (act, prefix) in [
            (HiddenAct::Gelu, ""),
            (HiddenAct::GeluApproximate, "bert"),
            (HiddenAct::Relu, ""),
        ] {
            let config = tiny_config(act);
            let vb = random_checkpoint(&config, prefix);
            let reference = BertModel::load(vb.clone(), &config).unwrap();
            let encoder = BertEncoder::load(vb, &config).unwrap();

            let refs: Vec<&[u32]> = texts.iter().map(Vec::as_slice).collect();
            let packed = encoder.forward(&refs).unwrap();
            let width = texts.iter().map(Vec::len).max().unwrap();
            let mut ids = Vec::new();
            let mut mask = Vec::new();
            for text in &texts {
                ids.extend(
                    text.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, width - text.len())),
                );
                mask.extend((0..width).map(|i| u32::from(i < text.len())));
            }
            let ids = Tensor::from_vec(ids, (texts.len(), width), &Device::Cpu).unwrap();
            let mask = Tensor::from_vec(mask, (texts.len(), width), &Device::Cpu).unwrap();
            let padded = reference
                .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
                .unwrap();
            let mut row = 0;
            for (i, text) in texts.iter().enumerate() {
                let ours = packed.narrow(0, row, text.len()).unwrap();
                let theirs = padded.i(i).unwrap().narrow(0, 0, text.len()).unwrap();
                let diff = max_abs_diff(&ours, &theirs);
                assert!(diff < 1e-4, "{act:?}, text {i}: max difference {diff}");
                row += text.len();
            }
        }
    }

    #[test]
    fn rejects_texts_longer_than_the_position_table() {
        let config = tiny_config(HiddenAct::Gelu);
        let encoder = BertEncoder::load(random_checkpoint(&config, ""), &config).unwrap();
        let long = vec![1u32; 17];
        let err = encoder.forward(&[&long]).unwrap_err();
        assert!(err.to_string().contains("outside 1..=16"), "{err}");
        assert!(encoder.forward(&[&[]]).is_err());
    }

    #[test]
    fn a_non_bert_checkpoint_is_a_clear_error() {
        let config = tiny_config(HiddenAct::Gelu);
        let vb = VarBuilder::from_tensors(Default::default(), DType::F32, &Device::Cpu);
        let err = BertEncoder::load(vb, &config).err().unwrap();
        assert!(err.contains("word_embeddings"), "{err}");
    }
}
