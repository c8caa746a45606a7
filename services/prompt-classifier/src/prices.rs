//! Per-model token prices (US dollars per million tokens) for cost
//! estimates. Built-in entries are Mistral's list prices as we last knew
//! them; check the provider's page and override with `--llm-prices FILE`
//! (JSON: `{"model": {"input": 0.1, "output": 0.3}}`), which is merged over
//! them.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

/// Price of one model.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Price {
    /// Dollars per million prompt tokens.
    pub input: f64,
    /// Dollars per million generated tokens.
    pub output: f64,
}

/// Model name → price.
#[derive(Debug, Clone)]
pub struct PriceTable(HashMap<String, Price>);

const BUILT_IN: &[(&str, f64, f64)] = &[
    ("ministral-3b-latest", 0.04, 0.04),
    ("ministral-8b-latest", 0.1, 0.1),
    ("mistral-small-latest", 0.1, 0.3),
    ("mistral-medium-latest", 0.4, 2.0),
    ("mistral-large-latest", 2.0, 6.0),
    ("open-mistral-nemo", 0.15, 0.15),
];

impl Default for PriceTable {
    fn default() -> Self {
        Self(
            BUILT_IN
                .iter()
                .map(|&(m, input, output)| (m.to_owned(), Price { input, output }))
                .collect(),
        )
    }
}

impl PriceTable {
    /// Built-in prices, overridden by `file` when given.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut table = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read the price table {}: {err}", path.display()))?;
            let extra: HashMap<String, Price> = serde_json::from_str(&text).map_err(|err| {
                format!(
                    "price table {}: {err} (expected {{\"model\": {{\"input\": 0.1, \"output\": 0.3}}}})",
                    path.display()
                )
            })?;
            for (model, price) in &extra {
                if !(price.input >= 0.0 && price.output >= 0.0) {
                    return Err(format!(
                        "price table {}: negative price for {model}",
                        path.display()
                    ));
                }
            }
            table.0.extend(extra);
        }
        Ok(table)
    }

    /// The price of `model`, if known.
    pub fn get(&self, model: &str) -> Option<Price> {
        self.0.get(model).copied()
    }

    /// Cost in dollars of one call.
    pub fn cost(&self, model: &str, input_tokens: u32, output_tokens: u32) -> f64 {
        self.get(model).map_or(0.0, |p| {
            (input_tokens as f64 * p.input + output_tokens as f64 * p.output) / 1_000_000.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_and_extends_built_ins() {
        let dir = std::env::temp_dir().join(format!("lextral-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prices.json");
        std::fs::write(
            &file,
            r#"{"mistral-small-latest": {"input": 1.0, "output": 2.0}, "llama3": {"input": 0, "output": 0}}"#,
        )
        .unwrap();
        let table = PriceTable::load(Some(&file)).unwrap();
        assert_eq!(table.cost("mistral-small-latest", 1_000_000, 500_000), 2.0);
        assert_eq!(table.cost("llama3", 1000, 1000), 0.0);
        assert!(table.get("ministral-8b-latest").is_some());
        assert_eq!(table.cost("unknown", 1000, 1000), 0.0);
        std::fs::write(&file, "{not json").unwrap();
        assert!(PriceTable::load(Some(&file))
            .unwrap_err()
            .contains("price table"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
