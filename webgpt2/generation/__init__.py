"""Generation: samplers, searches, logits processors, stop strings and the generate loop
shared by generative models."""

from webgpt2.generation.beam_search import BeamSampler
from webgpt2.generation.config import (
    GenerationConfig,
    GenerationOptionError,
    UnexpectedOptionError,
    sampler_from_config,
)
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
    sampler_class,
)
from webgpt2.generation.scoring import SequenceScore, score_sequences
from webgpt2.generation.stopping import StopStringMatcher
from webgpt2.generation.streamers import TextStreamer

__all__ = [
    "BeamSampler",
    "ContrastiveSampler",
    "GenerationConfig",
    "GenerationOptionError",
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
    "TextStreamer",
    "TopKSampler",
    "TopPSampler",
    "UnexpectedOptionError",
    "get_sampler",
    "register_sampler",
    "sampler_class",
    "sampler_from_config",
    "score_sequences",
]
