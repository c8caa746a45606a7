//! The REST classify body as the gateway reads it: JSON → request → plan
//! (limits, ranges, defaults). Any bytes give a value or an error, never a
//! panic; a plan that passes keeps its texts within the limits.
#![no_main]

use lextral_orchestrator::http::ClassifyBody;
use lextral_orchestrator::{ClassifyInput, ClassifyPlan, OrchestratorConfig, VoteKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<ClassifyBody>(data) else {
        return;
    };
    let Ok(input) = ClassifyInput::try_from(body) else {
        return;
    };
    let config = OrchestratorConfig::with_urls("http://127.0.0.1:1", "http://127.0.0.1:2");
    if let Ok(plan) = ClassifyPlan::new(input, &config, VoteKind::Weighted) {
        assert!(!plan.texts.is_empty() && plan.texts.len() <= config.max_texts);
    }
});
