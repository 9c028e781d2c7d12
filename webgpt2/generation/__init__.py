"""Generation: samplers, searches, logits processors, stop strings and the generate loop
shared by generative models."""

from webgpt2.generation.beam_search import BeamSampler
from webgpt2.generation.contrastive_search import ContrastiveSampler
from webgpt2.generation.logits_processors import (
    LogitsProcessor,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)
from webgpt2.generation.samplers import (
    GreedySampler,
    RandomSampler,
    Sampler,
    SearchSampler,
    TopKSampler,
    TopPSampler,
    get_sampler,
    register_sampler,
)
from webgpt2.generation.scoring import SequenceScore, score_sequences
from webgpt2.generation.stopping import StopStringMatcher

__all__ = [
    "BeamSampler",
    "ContrastiveSampler",
    "GreedySampler",
    "LogitsProcessor",
    "LogitsProcessorList",
    "MinNewTokensLengthLogitsProcessor",
    "NoBadWordsLogitsProcessor",
    "NoRepeatNGramLogitsProcessor",
    "RandomSampler",
    "RepetitionPenaltyLogitsProcessor",
    "Sampler",
    "SearchSampler",
    "SequenceScore",
    "StopStringMatcher",
    "TopKSampler",
    "TopPSampler",
    "get_sampler",
    "register_sampler",
    "score_sequences",
]
