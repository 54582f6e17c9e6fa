//! Prompts as tokens: through the model's chat template when it has one that llama.cpp can
//! apply, else as plain text; cut from the oldest text until they fit the context.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use crate::analysis::prompt::Prompt;
use crate::engine::EngineError;

/// Turns a [`Prompt`] into tokens that fit the context, through the model's chat template when
/// it has one that llama.cpp can apply, else as plain text.
pub(crate) struct PromptBuilder<'m> {
    model: &'m LlamaModel,
    pub(crate) template: Option<LlamaChatTemplate>,
    /// A plain prompt ends in a cue (`감정:`) that the answer follows after a space; a chat
    /// template starts the answer on its own turn, with no space.
    plain: bool,
}

impl<'m> PromptBuilder<'m> {
    pub(crate) fn new(model: &'m LlamaModel) -> Self {
        let template = model.chat_template(None).ok().filter(|t| {
            let probe = [
                LlamaChatMessage::new("system".into(), "s".into()),
                LlamaChatMessage::new("user".into(), "u".into()),
            ];
            match probe.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(chat) => model.apply_chat_template(t, &chat, true).is_ok(),
                Err(_) => false,
            }
        });
        let plain = template.is_none();
        Self {
            model,
            template,
            plain,
        }
    }

    fn render(&self, prompt: &Prompt, flow: &str) -> Result<(String, bool), EngineError> {
        let Some(template) = &self.template else {
            return Ok((prompt.render_plain(flow), false));
        };
        // Special-token text in user input must stay text: the rendered prompt is tokenized
        // with special parsing on, for the template's own markers.
        let flow = flow.replace("<|", "< |").replace("|>", "| >");
        let chat = [
            LlamaChatMessage::new("system".into(), prompt.system.clone()),
            LlamaChatMessage::new("user".into(), prompt.render_user(&flow)),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Model(format!("chat message: {e}")))?;
        let text = self
            .model
            .apply_chat_template(template, &chat, true)
            .map_err(|e| EngineError::Model(format!("chat template: {e}")))?;
        Ok((text, true))
    }

    pub(crate) fn tokenize(
        &self,
        prompt: &Prompt,
        flow: &str,
    ) -> Result<Vec<LlamaToken>, EngineError> {
        let (text, special) = self.render(prompt, flow)?;
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), true, special);
        // A template that writes its own BOS text gives two BOS tokens.
        if tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// Tokens of the prompt, cutting the flow from the front (the oldest text goes first) until
    /// it fits in `budget` tokens.
    pub(crate) fn fit(
        &self,
        prompt: &Prompt,
        budget: usize,
    ) -> Result<Vec<LlamaToken>, EngineError> {
        let mut flow: &str = &prompt.flow;
        for _ in 0..8 {
            let tokens = self.tokenize(prompt, flow)?;
            if tokens.len() <= budget {
                return Ok(tokens);
            }
            if flow.is_empty() {
                break;
            }
            let over = tokens.len() - budget;
            let flow_tokens = self
                .model
                .vocab()
                .tokenize(flow.as_bytes(), false, false)
                .len()
                .max(1);
            let chars = flow.chars().count();
            let keep_tokens = flow_tokens.saturating_sub(over);
            // 10% margin: tokens do not split evenly over characters.
            let keep_chars = (chars * keep_tokens / flow_tokens) * 9 / 10;
            let cut = flow
                .char_indices()
                .nth(chars - keep_chars)
                .map_or(flow.len(), |(i, _)| i);
            flow = &flow[cut..];
        }
        Err(EngineError::Model(format!(
            "the prompt does not fit in {budget} tokens even without the text; raise n_ctx"
        )))
    }

    /// The tokens of an answer `label` as the continuation of a prompt. After a plain prompt's
    /// cue the answer follows a space: a tokenizer that writes one itself (SentencePiece with a
    /// space prefix, as stories260K's) gets the bare label, any other (Gemma's, which adds no
    /// prefix; byte-level BPE) gets the space written. Gemma then has every label as one token
    /// (` joy`), so scoring needs no decode beyond the prompt; without the space several labels
    /// were three tokens.
    pub(crate) fn candidate(&self, label: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let bare = vocab.tokenize(label.as_bytes(), false, false);
        if !self.plain {
            return bare;
        }
        let spaced = bare
            .first()
            .is_some_and(|t| vocab.token_to_piece(*t, false, None).first() == Some(&b' '));
        if spaced {
            bare
        } else {
            vocab.tokenize(format!(" {label}").as_bytes(), false, false)
        }
    }
}
