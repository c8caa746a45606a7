//! A BERT encoder that gradients flow through, for fine-tuning.
//!
//! candle-transformers' `BertModel` is built for inference: its layer norm
//! is candle-nn's fused op, applied with `apply_op3_no_bwd`, which records no
//! backward step. Gradients stop at every layer norm, so training through it
//! silently updates only what comes after the encoder (the head). This module
//! is the same network written with differentiable operations (layer norm
//! from primitives, softmax from primitives, the config's activation) and the Hugging Face
//! parameter names, so the weights it saves load everywhere a
//! sentence-transformers BERT does (the embedder included).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// Layer norm with a backward pass (mean and variance over the last axis).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    activation: HiddenAct,
    heads: usize,
    head_dim: usize,
}

impl Layer {
    fn load(config: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        let attention = vb.pp("attention");
        Ok(Self {
            query: linear(hidden, hidden, attention.pp("self").pp("query"))?,
            key: linear(hidden, hidden, attention.pp("self").pp("key"))?,
            value: linear(hidden, hidden, attention.pp("self").pp("value"))?,
            attention_out: linear(hidden, hidden, attention.pp("output").pp("dense"))?,
            attention_norm: LayerNorm::load(
                hidden,
                config.layer_norm_eps,
                attention.pp("output").pp("LayerNorm"),
            )?,
            intermediate: linear(
                hidden,
                config.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: linear(
                config.intermediate_size,
                hidden,
                vb.pp("output").pp("dense"),
            )?,
            output_norm: LayerNorm::load(
                hidden,
                config.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
            activation: config.hidden_act,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
        })
    }

    /// `x`: `[batch, seq, hidden]`; `mask_bias`: `[batch, 1, 1, seq]`, 0 for
    /// tokens and a large negative number for padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, seq, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let probs = candle_nn::ops::softmax(&scores.broadcast_add(mask_bias)?, D::Minus1)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        let x = self
            .attention_norm
            .forward(&(self.attention_out.forward(&context)? + x)?)?;
        let inner = self.intermediate.forward(&x)?;
        let inner = match self.activation {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        self.output_norm
            .forward(&(self.output.forward(&inner)? + x)?)
    }
}

/// The encoder: embeddings and transformer layers (no pooler).
pub struct TrainableBert {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl TrainableBert {
    /// Creates the parameters under the Hugging Face names (`embeddings.*`,
    /// `encoder.layer.N.*`) in `vb`'s store.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let hidden = config.hidden_size;
        let emb = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(config, vb.pp("encoder").pp("layer").pp(i.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(config.vocab_size, hidden, emb.pp("word_embeddings"))?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                hidden,
                emb.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(
                config.type_vocab_size,
                hidden,
                emb.pp("token_type_embeddings"),
            )?,
            embeddings_norm: LayerNorm::load(hidden, config.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
        })
    }

    /// Token states `[batch, seq, hidden]` for `ids` / `mask` (`[batch, seq]`,
    /// u32; mask 1 for tokens, 0 for padding). Token types are all 0.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, ids.device())?;
        let x = self
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?
            .broadcast_add(&self.token_type_embeddings.forward(&ids.zeros_like()?)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        // 0 where attended, -1e9 at padding (finite: keeps gradients finite).
        let mask_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use candle_nn::VarMap;
    use candle_transformers::models::bert::BertModel;

    use super::*;

    fn tiny_config() -> Config {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 32, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "max_position_embeddings": 32,
            "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
            "pad_token_id": 0
        }))
        .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .unwrap()
    }

    fn batch(device: &Device) -> (Tensor, Tensor) {
        // Two clauses, the second padded after 3 tokens.
        let ids = Tensor::new(&[[5u32, 7, 9, 11, 13], [6, 8, 10, 0, 0]], device).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], device).unwrap();
        (ids, mask)
    }

    #[test]
    fn matches_candle_bert_and_gradients_reach_every_layer() {
        for activation in [HiddenAct::Gelu, HiddenAct::GeluApproximate, HiddenAct::Relu] {
            let mut config = tiny_config();
            config.hidden_act = activation;
            check_against_candle_bert(&config);
        }
    }

    fn check_against_candle_bert(config: &Config) {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let ours = TrainableBert::load(vb.clone(), config).unwrap();
        // candle's inference model on the very same parameters (same names).
        let reference = BertModel::load(vb, config).unwrap();
        // Layer-norm weights start at 1 and biases at 0; perturb everything
        // so the comparison covers them.
        for (i, var) in varmap.all_vars().iter().enumerate() {
            let noise = (Tensor::randn(0f32, 0.05, var.shape(), &device).unwrap()
                * (1.0 + i as f64 / 100.0))
                .unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
        let (ids, mask) = batch(&device);
        let a = ours.forward(&ids, &mask).unwrap();
        let b = reference
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap();
        let diff = max_abs_diff(&a, &b);
        assert!(
            diff < 1e-4,
            "{:?}: differs from candle's BertModel by {diff}",
            config.hidden_act
        );

        // A loss on the unpadded tokens' states: every parameter of every
        // layer gets a non-zero gradient (candle's fused layer norm would
        // stop them at the last layer).
        let loss = a.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for name in [
            "embeddings.LayerNorm.weight",
            "embeddings.position_embeddings.weight",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.attention.output.LayerNorm.bias",
            "encoder.layer.0.intermediate.dense.weight",
            "encoder.layer.1.output.dense.weight",
        ] {
            let var: &Var = data.get(name).unwrap_or_else(|| panic!("no {name}"));
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = grad
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }

    #[test]
    fn padding_does_not_change_the_states_of_real_tokens() {
        let device = Device::Cpu;
        let config = tiny_config();
        let varmap = VarMap::new();
        let bert = TrainableBert::load(
            VarBuilder::from_varmap(&varmap, DType::F32, &device),
            &config,
        )
        .unwrap();
        let (ids, mask) = batch(&device);
        let padded = bert
            .forward(&ids, &mask)
            .unwrap()
            .get(1)
            .unwrap()
            .narrow(0, 0, 3)
            .unwrap();
        let alone = bert
            .forward(
                &Tensor::new(&[[6u32, 8, 10]], &device).unwrap(),
                &Tensor::new(&[[1u32, 1, 1]], &device).unwrap(),
            )
            .unwrap()
            .get(0)
            .unwrap();
        let diff = max_abs_diff(&padded, &alone);
        assert!(diff < 1e-5, "padding changed real tokens by {diff}");
    }
}
