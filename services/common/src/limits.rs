//! The request limits every service checks on the texts it is sent.

/// How many texts one request may carry and how large each may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Texts per request.
    pub max_texts: usize,
    /// Bytes per text.
    pub max_text_bytes: usize,
    /// Whether a text of white space alone is refused (the classifiers
    /// refuse it; the embedder embeds whatever it is given).
    pub refuse_blank: bool,
}

/// Why a batch of texts is refused; each is the caller's mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextLimitError {
    /// No texts in the request.
    #[error("texts must not be empty")]
    NoTexts,
    /// Too many texts in one request.
    #[error("{count} texts in one request; the limit is {max}")]
    TooManyTexts { count: usize, max: usize },
    /// One text is white space alone.
    #[error("text {index} is empty")]
    BlankText { index: usize },
    /// One text is over the byte limit.
    #[error("text {index} is {bytes} bytes; the limit is {max}")]
    TextTooLong {
        index: usize,
        bytes: usize,
        max: usize,
    },
}

impl TextLimits {
    /// Checks `texts`, reporting the first text at fault.
    pub fn check(&self, texts: &[String]) -> Result<(), TextLimitError> {
        if texts.is_empty() {
            return Err(TextLimitError::NoTexts);
        }
        if texts.len() > self.max_texts {
            return Err(TextLimitError::TooManyTexts {
                count: texts.len(),
                max: self.max_texts,
            });
        }
        for (index, text) in texts.iter().enumerate() {
            if self.refuse_blank && text.trim().is_empty() {
                return Err(TextLimitError::BlankText { index });
            }
            if text.len() > self.max_text_bytes {
                return Err(TextLimitError::TextTooLong {
                    index,
                    bytes: text.len(),
                    max: self.max_text_bytes,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reports_the_first_fault() {
        let limits = TextLimits {
            max_texts: 2,
            max_text_bytes: 5,
            refuse_blank: true,
        };
        assert_eq!(limits.check(&[]), Err(TextLimitError::NoTexts));
        assert_eq!(
            limits.check(&texts(&["a", "b", "c"])),
            Err(TextLimitError::TooManyTexts { count: 3, max: 2 })
        );
        assert_eq!(
            limits.check(&texts(&["ok", "toolong"])),
            Err(TextLimitError::TextTooLong {
                index: 1,
                bytes: 7,
                max: 5
            })
        );
        assert_eq!(
            limits.check(&texts(&[" ", "toolong"])),
            Err(TextLimitError::BlankText { index: 0 })
        );
        assert_eq!(limits.check(&texts(&["ok", "fine"])), Ok(()));
        let lenient = TextLimits {
            refuse_blank: false,
            ..limits
        };
        assert_eq!(lenient.check(&texts(&[" "])), Ok(()));
        assert_eq!(
            TextLimitError::TextTooLong {
                index: 1,
                bytes: 7,
                max: 5
            }
            .to_string(),
            "text 1 is 7 bytes; the limit is 5"
        );
    }
}
