//! What the remote model APIs we call (chat completions, Mistral's
//! classifier and fine-tuning endpoints) share: how their errors read.

/// How much of a body that is not a known error shape goes into a message.
const BODY_PREFIX_CHARS: usize = 300;

/// The provider's error message from an OpenAI- or Mistral-style error body
/// (`error.message`, `message`, or `detail`, which may be a list of
/// validation errors), else the start of the body.
pub fn provider_message(body: &str) -> String {
    let value: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = value.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
    });
    message.unwrap_or_else(|| body.chars().take(BODY_PREFIX_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_error_shape() {
        assert_eq!(
            provider_message(r#"{"error": {"message": "bad key"}}"#),
            "bad key"
        );
        assert_eq!(provider_message(r#"{"message": "slow down"}"#), "slow down");
        assert_eq!(
            provider_message(r#"{"detail": [{"loc": ["model"]}]}"#),
            r#"[{"loc":["model"]}]"#
        );
        assert_eq!(
            provider_message("<html>gateway</html>"),
            "<html>gateway</html>"
        );
        assert_eq!(provider_message(&"x".repeat(1000)).len(), BODY_PREFIX_CHARS);
    }
}
