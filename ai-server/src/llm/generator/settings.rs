//! The generative worker's settings, and the layout chosen from them, the cores and the model:
//! how many llama contexts, how many llama.cpp threads each, how many sequences each.

use super::LoadError;

/// Settings of the generative workers, as given (flags or environment).
#[derive(Debug, Clone)]
pub struct GenSettings {
    /// Sequences decoded together (`--parallel`).
    pub parallel: u32,
    /// Context length of each sequence, in tokens (`n_ctx`).
    pub n_ctx: u32,
    /// Most tokens in one decode (`n_batch`).
    pub n_batch: u32,
    /// llama.cpp threads of the generative model (`n_threads`), divided among its contexts (at
    /// least one each); `None`: chosen with the layout.
    pub n_threads: Option<i32>,
    /// llama contexts the sequences are spread over, each on its own thread (`--gen-contexts`),
    /// at most `parallel`; `None`: chosen with the layout.
    pub contexts: Option<u32>,
}

/// What the layout depends on in a model: how a token's cost splits between its weights (which
/// one decode reads once for every sequence in it) and attention (which every sequence pays for
/// its own cache).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    /// Parameters.
    pub params: u64,
    /// Layers.
    pub layers: u32,
    /// Embedding width.
    pub embd: u32,
}

impl ModelShape {
    /// Weight multiply-adds per token over attention multiply-adds per token at 512 cached
    /// tokens (K·Q and V·softmax over every layer's width), the cache a topic prompt makes.
    pub fn weights_per_attention(&self) -> f64 {
        let attention = 2.0 * 512.0 * f64::from(self.layers) * f64::from(self.embd);
        self.params as f64 / attention.max(1.0)
    }

    /// Whether batching sequences in one decode pays: most of a token's cost is its weights.
    /// Measured on 2 cores: stories260K (ratio 0.9: attention-bound, one context per core
    /// serves more) and Gemma 3 270M (ratio 14: weights-bound, one context serves more);
    /// ai-server/README.md has the figures. The production 3B model is 36.
    pub fn weights_bound(&self) -> bool {
        self.weights_per_attention() >= WEIGHTS_BOUND
    }
}

/// Above this ratio of weight to attention work a model counts as weights-bound.
const WEIGHTS_BOUND: f64 = 4.0;

/// Where the sequences run: `contexts` llama contexts, each with `threads` llama.cpp threads
/// and its share of the sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// llama.cpp threads of each context.
    pub threads: i32,
    /// Sequences of each context.
    pub sequences: Vec<u32>,
    /// Why: `auto` (chosen here) or `flags` (both given).
    pub chosen_by: &'static str,
}

impl Layout {
    /// Contexts made.
    pub fn contexts(&self) -> u32 {
        u32::try_from(self.sequences.len()).unwrap_or(1)
    }

    /// Sequences of the busiest context.
    pub fn most_sequences(&self) -> u32 {
        self.sequences.iter().copied().max().unwrap_or(1)
    }
}

impl GenSettings {
    /// Checks what llama.cpp would otherwise abort on, for the layout that `cores` and `model`
    /// give. A context holds two more sequences than its share of `parallel` (the shared prompt
    /// starts), llama.cpp allows 256 sequences, and it asserts that a batch has room for one
    /// output per sequence (`n_batch >= sequences`).
    pub fn validate(&self, layout: &Layout) -> Result<(), LoadError> {
        if self.parallel == 0 || self.parallel > 254 {
            return Err(LoadError::Settings(format!(
                "parallel must be in 1..=254, not {}",
                self.parallel
            )));
        }
        if self.n_ctx < 64 {
            return Err(LoadError::Settings(format!(
                "n_ctx must be at least 64, not {}",
                self.n_ctx
            )));
        }
        if self.contexts == Some(0) {
            return Err(LoadError::Settings(
                "gen-contexts must be at least 1".into(),
            ));
        }
        let most = layout.most_sequences();
        if self.n_batch < most + 2 {
            return Err(LoadError::Settings(format!(
                "n_batch ({}) must be at least the sequences of one context + 2 ({})",
                self.n_batch,
                most + 2
            )));
        }
        Ok(())
    }

    /// The layout for `cores` CPUs (as the process may use them: cgroup quota and affinity) and
    /// `model`. What is given wins; the rest is chosen so that a plain `--parallel N` is the
    /// fastest configuration measured:
    ///
    /// - contexts: one for a weights-bound model (a decode reads the weights once for all its
    ///   sequences, so batching pays), else one per core the generative model gets (attention
    ///   is paid per sequence; a context per core runs them side by side); never more than
    ///   `parallel`, so `--parallel 1` stays one sequence at a time;
    /// - threads: a weights-bound model's one context gets every core (the embedding worker's
    ///   decodes are short and few next to a prompt's); a small model's contexts get one each
    ///   (llama.cpp's barriers cost more than splitting its small products saves).
    pub fn layout(&self, cores: usize, model: ModelShape) -> Layout {
        let cores = i32::try_from(cores.max(1)).unwrap_or(i32::MAX);
        let parallel = self.parallel.max(1);
        let contexts = self
            .contexts
            .unwrap_or_else(|| {
                if model.weights_bound() {
                    1
                } else {
                    u32::try_from(self.n_threads.unwrap_or(cores)).unwrap_or(1)
                }
            })
            .clamp(1, parallel);
        let k = i32::try_from(contexts).unwrap_or(1);
        let threads = match self.n_threads.filter(|n| *n > 0) {
            Some(n) => (n / k).max(1),
            None if model.weights_bound() => (cores / k).max(1),
            None => 1,
        };
        let sequences = (0..contexts)
            .map(|c| parallel / contexts + u32::from(c < parallel % contexts))
            .collect();
        Layout {
            threads,
            sequences,
            chosen_by: if self.contexts.is_some() && self.n_threads.is_some() {
                "flags"
            } else {
                "auto"
            },
        }
    }

    /// Prompt positions each sequence gets in one prefill decode, at most `n_batch`.
    pub(crate) fn prefill_chunk(&self) -> usize {
        self.n_batch.max(1) as usize
    }

    /// The settings that can change a result: a smaller context cuts prompts shorter, the
    /// prefill chunk sets the shapes a prompt is computed in, and contexts of one sequence
    /// decode single tokens (no neighbour: another kernel shape).
    pub(crate) fn cache_identity(&self, layout: &Layout) -> String {
        let single = if layout.most_sequences() == 1 {
            ";single_steps"
        } else {
            ""
        };
        format!(
            "n_ctx={};prefill_chunk={}{single}",
            self.n_ctx,
            self.prefill_chunk()
        )
    }
}

/// llama.cpp threads of the embedding worker with `cores` CPUs: a quarter, at least one.
pub fn embed_threads(cores: usize) -> i32 {
    i32::try_from((cores / 4).max(1)).unwrap_or(1)
}

/// The CPUs this process may use: `std::thread::available_parallelism` reads the affinity mask
/// and the cgroup CPU quota (a pod's CPU limit), so a 2-CPU pod on a 64-core node gets 2.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: ModelShape = ModelShape {
        params: 292_800,
        layers: 5,
        embd: 64,
    };
    const GEMMA: ModelShape = ModelShape {
        params: 268_098_176,
        layers: 18,
        embd: 640,
    };

    fn settings(parallel: u32, contexts: Option<u32>, n_threads: Option<i32>) -> GenSettings {
        GenSettings {
            parallel,
            n_ctx: 512,
            n_batch: 512,
            n_threads,
            contexts,
        }
    }

    #[test]
    fn models_are_told_apart_by_where_a_token_s_cost_goes() {
        assert!(!TINY.weights_bound(), "{}", TINY.weights_per_attention());
        assert!(GEMMA.weights_bound(), "{}", GEMMA.weights_per_attention());
    }

    #[test]
    fn the_default_layout_uses_every_core() {
        // Tiny model, 2 cores: a context per core, one thread each.
        let l = settings(8, None, None).layout(2, TINY);
        assert_eq!(
            (l.sequences.clone(), l.threads, l.chosen_by),
            (vec![4, 4], 1, "auto")
        );
        // Gemma, 2 cores: one context with every sequence and every core.
        let l = settings(8, None, None).layout(2, GEMMA);
        assert_eq!((l.sequences.clone(), l.threads), (vec![8], 2));
        let l = settings(8, None, None).layout(16, GEMMA);
        assert_eq!((l.sequences.clone(), l.threads), (vec![8], 16));
        let l = settings(1, None, None).layout(2, GEMMA);
        assert_eq!((l.sequences.clone(), l.threads), (vec![1], 2));
        // --parallel 1 stays one sequence at a time.
        let l = settings(1, None, None).layout(2, TINY);
        assert_eq!(l.sequences, vec![1]);
    }

    #[test]
    fn flags_win_and_threads_are_divided_among_contexts() {
        let l = settings(8, Some(2), Some(4)).layout(2, GEMMA);
        assert_eq!(
            (l.sequences.clone(), l.threads, l.chosen_by),
            (vec![4, 4], 2, "flags")
        );
        let l = settings(9, Some(2), None).layout(2, GEMMA);
        assert_eq!(l.sequences, vec![5, 4]);
        // More contexts than sequences: one sequence each.
        let l = settings(3, Some(8), Some(1)).layout(2, TINY);
        assert_eq!((l.sequences.clone(), l.threads), (vec![1, 1, 1], 1));
        // n_threads alone sets the contexts of a small model: one thread each.
        let l = settings(8, None, Some(4)).layout(2, TINY);
        assert_eq!((l.contexts(), l.threads), (4, 1));
    }

    #[test]
    fn one_sequence_contexts_have_their_own_cache_identity() {
        // Spreading sequences over contexts does not change a result; single-token steps might.
        let s = settings(8, None, None);
        let batched = s.cache_identity(&s.layout(2, GEMMA));
        assert_eq!(s.cache_identity(&s.layout(2, TINY)), batched);
        let one = settings(1, None, None);
        assert_ne!(one.cache_identity(&one.layout(2, TINY)), batched);
        let spread = settings(8, Some(8), Some(8));
        assert_eq!(
            spread.cache_identity(&spread.layout(2, TINY)),
            one.cache_identity(&one.layout(2, TINY))
        );
    }

    #[test]
    fn n_batch_must_hold_one_context_s_sequences() {
        // 16 sequences over 4 contexts need 4 + 2 outputs per batch, not 16 + 2.
        let mut s = settings(16, Some(4), Some(4));
        s.n_batch = 6;
        assert!(s.validate(&s.layout(2, TINY)).is_ok());
        s.n_batch = 5;
        assert!(s.validate(&s.layout(2, TINY)).is_err());
        let mut s = settings(16, Some(1), None);
        s.n_batch = 17;
        assert!(s.validate(&s.layout(2, TINY)).is_err());
        let s = settings(8, Some(0), None);
        assert!(s.validate(&s.layout(2, TINY)).is_err());
    }
}
