//! The prompts, written for the production model (a Korean instruct model with a chat template).
//! A model without a chat template gets the same words as plain text ending in an answer cue, so
//! the small test model runs through the same code path.

use super::emotion::LABELS;

/// Bumped whenever a prompt changes, so cached results of the old prompts are not served.
pub const PROMPT_VERSION: u32 = 2;

/// A prompt as chat messages, plus the cue that ends the plain-text rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The system message.
    pub system: String,
    /// The user message; `{flow}` in it marks where the text goes (see [`Prompt::render_user`]).
    /// It starts with `shared_user`, so that the model's work on the common start of every prompt
    /// can be done once and reused.
    pub user: String,
    /// The constant start of `user` (the instructions); the variable parts come after it.
    pub shared_user: String,
    /// The text that goes in place of `{flow}`. It is the part cut from the front when the
    /// prompt does not fit in the context.
    pub flow: String,
    /// Ends a plain-text prompt, so that the model's continuation is the answer (`제목:`).
    pub answer_cue: String,
}

impl Prompt {
    /// The user message with the flow (or a suffix of it) in place.
    pub fn render_user(&self, flow: &str) -> String {
        // The placeholder is the last one: text before it (a baseline topic) may contain anything.
        match self.user.rfind("{flow}") {
            Some(i) => format!(
                "{}{flow}{}",
                &self.user[..i],
                &self.user[i + "{flow}".len()..]
            ),
            None => self.user.clone(),
        }
    }

    /// The plain-text rendering for models without a chat template.
    pub fn render_plain(&self, flow: &str) -> String {
        format!(
            "{}\n\n{}\n{}",
            self.system,
            self.render_user(flow),
            self.answer_cue
        )
    }

    /// The same prompt with only its constant parts: what every prompt of this kind starts with.
    pub fn skeleton(&self) -> Prompt {
        Prompt {
            system: self.system.clone(),
            user: self.shared_user.clone(),
            shared_user: self.shared_user.clone(),
            flow: String::new(),
            answer_cue: String::new(),
        }
    }
}

/// The recent flow to read: the lineage window when the API sent one, else the node's own text.
fn flow<'a>(content: &'a str, full_context: &'a str) -> &'a str {
    if full_context.trim().is_empty() {
        content.trim()
    } else {
        full_context.trim()
    }
}

/// The title prompt: the baseline topic and the recent flow, asking for a short Korean noun
/// phrase on one line.
pub fn topic(content: &str, baseline_topic: &str, full_context: &str) -> Prompt {
    // No line for a missing baseline: small base models copied a "(none)" placeholder as the title.
    let baseline = baseline_topic.trim();
    let baseline_line = if baseline.is_empty() {
        String::new()
    } else {
        format!("이전 주제: {baseline}\n")
    };
    let shared_user = "아래 흐름의 지금 주제를 20자 안팎의 한국어 명사구 제목 하나로 쓰세요. 번호, 따옴표, 설명 없이 제목만 쓰세요.\n\n";
    Prompt {
        system: "당신은 글의 흐름을 읽고 짧은 제목을 붙이는 편집자입니다. 제목만 한 줄로 답합니다."
            .to_owned(),
        user: format!("{shared_user}{baseline_line}최근 흐름:\n{{flow}}"),
        shared_user: shared_user.to_owned(),
        flow: flow(content, full_context).to_owned(),
        answer_cue: "제목:".to_owned(),
    }
}

/// The emotion prompt: the node's text, asking for exactly one of the labels. The answer is not
/// generated: each label is scored as the continuation of this prompt.
pub fn emotion(content: &str) -> Prompt {
    let shared_user = format!(
        "다음 글의 감정을 이 중 하나로만 답하세요: {}.\n\n글:\n",
        LABELS.join(", ")
    );
    Prompt {
        system: "당신은 글에 담긴 감정을 분류합니다. 주어진 영어 낱말 가운데 하나로만 답합니다."
            .to_owned(),
        user: format!("{shared_user}{{flow}}"),
        shared_user,
        flow: content.trim().to_owned(),
        answer_cue: "감정:".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_prompt_uses_context_and_baseline() {
        let p = topic("내용", "겨울", "첫 줄\n둘째 줄");
        assert_eq!(p.flow, "첫 줄\n둘째 줄");
        let user = p.render_user(&p.flow);
        assert!(user.starts_with(&p.shared_user));
        assert!(
            user.ends_with("이전 주제: 겨울\n최근 흐름:\n첫 줄\n둘째 줄"),
            "{user}"
        );
        assert!(p.render_plain(&p.flow).ends_with("\n제목:"));

        let p = topic(" 내용 ", "", "  ");
        assert_eq!(p.flow, "내용");
        assert!(!p.render_user(&p.flow).contains("이전 주제"));
    }

    #[test]
    fn emotion_prompt_lists_every_label() {
        let p = emotion("오늘은 기쁘다");
        let user = p.render_user(&p.flow);
        for label in LABELS {
            assert!(user.contains(label), "{label} missing from {user}");
        }
        assert!(user.ends_with("글:\n오늘은 기쁘다"));
        assert!(p.skeleton().render_plain("").starts_with(&p.system));
    }
}
