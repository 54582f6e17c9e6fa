//! One sequence's life on plain logits: its prompt is fed, then it generates a title (greedy, to
//! a newline after some text, the token limit or the end of its context) or scores candidate
//! answers (the sum of each candidate's token log-probabilities). It knows nothing of llama.cpp:
//! the scheduler feeds what [`Sequence::prompt_chunk`] and [`Sequence::next_token`] ask for and
//! hands back the logits of the last token it fed, so every rule here is tested without a model.

use llama_cpp_2::token::LlamaToken;

use crate::analysis::emotion::log_norm;
use crate::metrics as m;

/// What a sequence needs of the vocabulary.
pub(crate) trait Vocab {
    /// Whether `token` ends generation.
    fn is_eog(&self, token: LlamaToken) -> bool;
    /// The bytes `token` stands for.
    fn piece(&self, token: LlamaToken) -> Vec<u8>;
}

/// What the sequence is for, with its candidates already tokenized.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Work {
    /// Greedy generation of at most `max_tokens` tokens.
    Generate { max_tokens: usize },
    /// Log-likelihood of each candidate as the continuation of the prompt.
    Score { candidates: Vec<Vec<LlamaToken>> },
}

/// A finished sequence's result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// The generated line (invalid UTF-8 replaced, a cut character at the end dropped).
    Text(String),
    /// One log-likelihood per candidate, in order.
    Scores(Vec<f64>),
}

/// What the scheduler does after a step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Keep decoding.
    Running,
    /// Keep decoding, after clearing this sequence's cache from this position on (a scored
    /// candidate's tokens leave, so the next candidate follows the prompt again).
    ClearFrom(usize),
    /// Finished; its cache can go.
    Done(Answer),
}

#[derive(Debug)]
enum State {
    /// Feeding the prompt; the work starts from the last prompt token's logits.
    Prefill(Work),
    /// Generating: `next` goes in at position `fed`.
    Generate {
        next: LlamaToken,
        out: Vec<u8>,
        produced: usize,
        max_tokens: usize,
    },
    /// Scoring: token `j` of candidate `current` goes in after the prompt, and the logits give
    /// the likelihood of token `j + 1`.
    Score {
        candidates: Vec<Vec<LlamaToken>>,
        scores: Vec<f64>,
        current: usize,
        j: usize,
    },
    /// Answered.
    Done,
}

/// One sequence: its prompt, how much of it is in the cache, and where its work stands.
#[derive(Debug)]
pub(crate) struct Sequence {
    prompt: Vec<LlamaToken>,
    /// Tokens of this sequence in the cache (prompt, then generated ones).
    fed: usize,
    /// Most tokens the sequence may hold.
    n_ctx: usize,
    state: State,
}

impl Sequence {
    /// A sequence whose first `reused` prompt tokens are already in its cache (a copied shared
    /// prompt start). At least one prompt token must be left to feed: its logits start the work.
    pub(crate) fn new(prompt: Vec<LlamaToken>, reused: usize, work: Work, n_ctx: usize) -> Self {
        debug_assert!(reused < prompt.len(), "one prompt token is fed");
        Self {
            fed: reused.min(prompt.len().saturating_sub(1)),
            prompt,
            n_ctx,
            state: State::Prefill(work),
        }
    }

    /// Tokens of this sequence in the cache: where its next token goes.
    pub(crate) fn fed(&self) -> usize {
        self.fed
    }

    /// The prompt tokens still to feed, at most `max`, starting at position [`Sequence::fed`];
    /// `None` once the prompt is in.
    pub(crate) fn prompt_chunk(&self, max: usize) -> Option<&[LlamaToken]> {
        match self.state {
            State::Prefill(_) => {
                let end = (self.fed + max).min(self.prompt.len());
                Some(&self.prompt[self.fed..end])
            }
            _ => None,
        }
    }

    /// The prompt tokens not yet fed.
    pub(crate) fn prompt_left(&self) -> usize {
        match self.state {
            State::Prefill(_) => self.prompt.len() - self.fed,
            _ => 0,
        }
    }

    /// The token this sequence decodes next and its position; `None` while the prompt is being
    /// fed (or once done).
    pub(crate) fn next_token(&self) -> Option<(LlamaToken, usize)> {
        match &self.state {
            State::Generate { next, .. } => Some((*next, self.fed)),
            State::Score {
                candidates,
                current,
                j,
                ..
            } => Some((candidates[*current][*j], self.fed + j)),
            State::Prefill(_) | State::Done => None,
        }
    }

    /// `n` more prompt tokens went in. When that was the rest of the prompt, `logits` must be
    /// those of its last token: the work starts from them.
    pub(crate) fn prompt_fed(
        &mut self,
        n: usize,
        logits: Option<&[f32]>,
        vocab: &impl Vocab,
    ) -> Step {
        let State::Prefill(_) = self.state else {
            return Step::Running;
        };
        self.fed = (self.fed + n).min(self.prompt.len());
        if self.fed < self.prompt.len() {
            return Step::Running;
        }
        let State::Prefill(work) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("checked above")
        };
        let Some(logits) = logits else {
            // The scheduler asks for the last prompt token's logits; without them nothing can go on.
            return self.finish(match work {
                Work::Generate { .. } => Answer::Text(String::new()),
                Work::Score { candidates } => {
                    Answer::Scores(vec![f64::NEG_INFINITY; candidates.len()])
                }
            });
        };
        match work {
            Work::Generate { max_tokens } => {
                self.on_token(argmax(logits), Vec::new(), 0, max_tokens, vocab)
            }
            Work::Score { candidates } => {
                // One normaliser for every candidate's first token: with a large vocabulary the
                // sum over it is most of the cost.
                let norm = log_norm(logits);
                let scores = candidates
                    .iter()
                    .map(|c| {
                        c.first()
                            .map_or(f64::NEG_INFINITY, |t| token_log_prob(logits, *t, norm))
                    })
                    .collect();
                self.next_candidate(candidates, scores, 0)
            }
        }
    }

    /// The token from [`Sequence::next_token`] went in; `logits` are its logits.
    pub(crate) fn stepped(&mut self, logits: &[f32], vocab: &impl Vocab) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Generate {
                out,
                produced,
                max_tokens,
                ..
            } => {
                self.fed += 1;
                self.on_token(argmax(logits), out, produced, max_tokens, vocab)
            }
            State::Score {
                candidates,
                mut scores,
                current,
                j,
            } => {
                let c = &candidates[current];
                scores[current] += token_log_prob(logits, c[j + 1], log_norm(logits));
                if j + 2 < c.len() {
                    self.state = State::Score {
                        candidates,
                        scores,
                        current,
                        j: j + 1,
                    };
                    return Step::Running;
                }
                match self.next_candidate(candidates, scores, current + 1) {
                    // The finished candidate's tokens leave the cache first.
                    Step::Running => Step::ClearFrom(self.fed),
                    other => other,
                }
            }
            other => {
                self.state = other;
                Step::Running
            }
        }
    }

    /// Takes the greedy token of a generating sequence.
    fn on_token(
        &mut self,
        token: LlamaToken,
        mut out: Vec<u8>,
        produced: usize,
        max_tokens: usize,
        vocab: &impl Vocab,
    ) -> Step {
        let mut done = vocab.is_eog(token);
        let produced = produced + 1;
        if !done {
            m::generated_tokens(1);
            out.extend_from_slice(&vocab.piece(token));
            // A newline ends the title once there is some text; leading newlines are skipped.
            if let Some(start) = out.iter().position(|b| !b.is_ascii_whitespace())
                && let Some(nl) = out[start..].iter().position(|b| *b == b'\n')
            {
                out.truncate(start + nl);
                done = true;
            }
        }
        if done || produced >= max_tokens || self.fed + 1 >= self.n_ctx {
            let text = String::from_utf8_lossy(&out)
                .trim_end_matches('\u{FFFD}')
                .to_owned();
            return self.finish(Answer::Text(text));
        }
        self.state = State::Generate {
            next: token,
            out,
            produced,
            max_tokens,
        };
        Step::Running
    }

    /// The next candidate that needs a decode (one of more than one token), or the answer when
    /// none is left.
    fn next_candidate(
        &mut self,
        candidates: Vec<Vec<LlamaToken>>,
        scores: Vec<f64>,
        from: usize,
    ) -> Step {
        match (from..candidates.len()).find(|i| candidates[*i].len() > 1) {
            Some(current) => {
                self.state = State::Score {
                    candidates,
                    scores,
                    current,
                    j: 0,
                };
                Step::Running
            }
            None => self.finish(Answer::Scores(scores)),
        }
    }

    fn finish(&mut self, answer: Answer) -> Step {
        self.state = State::Done;
        Step::Done(answer)
    }
}

/// Greedy choice; ties go to the lowest token id, so the choice is reproducible.
pub(crate) fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0usize;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    LlamaToken(i32::try_from(best).unwrap_or(0))
}

/// `token`'s log-probability under `logits` whose [`log_norm`] is `norm`.
fn token_log_prob(logits: &[f32], token: LlamaToken, norm: f64) -> f64 {
    usize::try_from(token.0)
        .ok()
        .and_then(|t| logits.get(t))
        .map_or(f64::NEG_INFINITY, |l| f64::from(*l) - norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens 0..=9 are the digits, 10 is a newline, 11 a space, 12 ends generation.
    struct Digits;

    impl Vocab for Digits {
        fn is_eog(&self, token: LlamaToken) -> bool {
            token.0 == 12
        }
        fn piece(&self, token: LlamaToken) -> Vec<u8> {
            match token.0 {
                0..=9 => vec![b'0' + u8::try_from(token.0).unwrap()],
                10 => b"\n".to_vec(),
                11 => b" ".to_vec(),
                _ => Vec::new(),
            }
        }
    }

    /// Logits over the 13 tokens that make `token` the greedy choice.
    fn pick(token: i32) -> Vec<f32> {
        let mut l = vec![0.0; 13];
        l[usize::try_from(token).unwrap()] = 5.0;
        l
    }

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|i| LlamaToken(*i)).collect()
    }

    #[test]
    fn a_prompt_is_fed_in_chunks_from_what_was_reused() {
        let mut s = Sequence::new(
            tokens(&[1, 2, 3, 4, 5]),
            2,
            Work::Generate { max_tokens: 5 },
            64,
        );
        assert_eq!(s.prompt_chunk(2), Some(&tokens(&[3, 4])[..]));
        assert_eq!(s.prompt_fed(2, None, &Digits), Step::Running);
        assert_eq!((s.fed(), s.prompt_left()), (4, 1));
        assert_eq!(s.next_token(), None, "still prefilling");
        assert_eq!(s.prompt_chunk(8), Some(&tokens(&[5])[..]));
        // The last prompt token's logits give the first generated token.
        assert_eq!(s.prompt_fed(1, Some(&pick(7)), &Digits), Step::Running);
        assert_eq!(s.prompt_chunk(8), None);
        assert_eq!(s.next_token(), Some((LlamaToken(7), 5)));
    }

    #[test]
    fn generation_ends_at_a_newline_after_some_text() {
        let mut s = Sequence::new(tokens(&[1, 2]), 0, Work::Generate { max_tokens: 30 }, 64);
        // A leading newline is skipped, then "4 2", then a newline ends it.
        assert_eq!(s.prompt_fed(2, Some(&pick(10)), &Digits), Step::Running);
        for (t, pos) in [(4, 3), (11, 4), (2, 5)] {
            assert_eq!(s.stepped(&pick(t), &Digits), Step::Running);
            assert_eq!(s.next_token(), Some((LlamaToken(t), pos)));
        }
        assert_eq!(
            s.stepped(&pick(10), &Digits),
            Step::Done(Answer::Text("\n4 2".into()))
        );
        assert_eq!(s.next_token(), None);
    }

    #[test]
    fn generation_ends_at_its_limit_at_the_end_of_generation_and_of_the_context() {
        let mut s = Sequence::new(tokens(&[1]), 0, Work::Generate { max_tokens: 3 }, 64);
        s.prompt_fed(1, Some(&pick(1)), &Digits);
        s.stepped(&pick(2), &Digits);
        assert_eq!(
            s.stepped(&pick(3), &Digits),
            Step::Done(Answer::Text("123".into()))
        );

        let mut s = Sequence::new(tokens(&[1]), 0, Work::Generate { max_tokens: 30 }, 64);
        s.prompt_fed(1, Some(&pick(5)), &Digits);
        assert_eq!(
            s.stepped(&pick(12), &Digits),
            Step::Done(Answer::Text("5".into()))
        );

        // Context of 4 tokens: a 2-token prompt leaves room for two generated tokens in the cache.
        let mut s = Sequence::new(tokens(&[1, 1]), 0, Work::Generate { max_tokens: 30 }, 4);
        assert_eq!(s.prompt_fed(2, Some(&pick(8)), &Digits), Step::Running);
        assert_eq!(
            s.stepped(&pick(9), &Digits),
            Step::Done(Answer::Text("89".into()))
        );
    }

    #[test]
    fn ties_go_to_the_lowest_token() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), LlamaToken(1));
    }

    #[test]
    fn candidates_are_scored_token_by_token_and_leave_the_cache() {
        // Candidate 0 is one token, candidate 1 two tokens, candidate 2 three tokens.
        let candidates = vec![tokens(&[3]), tokens(&[4, 5]), tokens(&[6, 7, 8])];
        let mut s = Sequence::new(
            tokens(&[1, 2]),
            0,
            Work::Score {
                candidates: candidates.clone(),
            },
            64,
        );
        let uniform = vec![0.0f32; 13];
        let lp = (1.0f64 / 13.0).ln();
        // First tokens come from the prompt's logits; then candidate 1 decodes its first token.
        assert_eq!(s.prompt_fed(2, Some(&uniform), &Digits), Step::Running);
        assert_eq!(s.next_token(), Some((LlamaToken(4), 2)));
        // Its second token is certain (log-probability about 0): the candidate is done and its
        // token leaves the cache; candidate 2 starts at the same position.
        let mut sure = vec![-100.0f32; 13];
        sure[5] = 0.0;
        assert_eq!(s.stepped(&sure, &Digits), Step::ClearFrom(2));
        assert_eq!(s.next_token(), Some((LlamaToken(6), 2)));
        assert_eq!(s.stepped(&uniform, &Digits), Step::Running);
        assert_eq!(s.next_token(), Some((LlamaToken(7), 3)));
        let Step::Done(Answer::Scores(scores)) = s.stepped(&uniform, &Digits) else {
            panic!("all candidates scored");
        };
        assert!((scores[0] - lp).abs() < 1e-9, "{scores:?}");
        assert!((scores[1] - lp).abs() < 1e-6, "{scores:?}");
        assert!((scores[2] - 3.0 * lp).abs() < 1e-9, "{scores:?}");
    }

    #[test]
    fn single_token_candidates_need_no_decode() {
        let mut s = Sequence::new(
            tokens(&[1]),
            0,
            Work::Score {
                candidates: vec![tokens(&[3]), tokens(&[]), tokens(&[4])],
            },
            64,
        );
        let Step::Done(Answer::Scores(scores)) = s.prompt_fed(1, Some(&pick(3)), &Digits) else {
            panic!("answered from the prompt's logits");
        };
        assert!(scores[0] > scores[2], "{scores:?}");
        assert_eq!(
            scores[1],
            f64::NEG_INFINITY,
            "an empty candidate is impossible"
        );
    }
}
