"""`text_lm`: the word-level Transformer language model (generate, next token, score)."""

from __future__ import annotations

from contracts.spec import ANY, SEED_MAX, Contract, Signature, Tensor

MODEL = "text_lm"

LIMITS = {
    "max_batch_size": 64,  # prompts per request
    "max_new_tokens": 50,  # max_tokens upper bound; at most sequence_length - 1
    "max_temperature": 10.0,
    "max_prompt_tokens": None,  # None: the model's sequence_length
    "sequence_length": None,  # fixed by the trained model
    "vocab_size": None,  # fixed by the trained model
}

PROMPT = Tensor("prompt", "string", doc="text to continue (standardized like the training data)")

GENERATE = Signature(
    "generate",
    inputs=(
        PROMPT,
        Tensor("max_tokens", "int32", doc="words to add", default=50, low=0, high="max_new_tokens"),
        Tensor(
            "temperature",
            "float32",
            doc="softmax temperature; 0 = greedy",
            default=1.0,
            low=0.0,
            high="max_temperature",
        ),
        Tensor(
            "top_k",
            "int32",
            doc="sample among the k likeliest words; 0 = off",
            default=0,
            low=0,
            high="vocab_size",
        ),
        Tensor(
            "top_p",
            "float32",
            doc="nucleus: smallest set reaching p; 1 = off",
            default=1.0,
            low=0.0,
            high=1.0,
            low_open=True,
        ),
        Tensor(
            "seed",
            "int64",
            doc="the same seed gives the same text",
            default=0,
            low=0,
            high=SEED_MAX,
        ),
    ),
    outputs=(
        Tensor("text", "string", doc="prompt + continuation"),
        Tensor("continuation", "string"),
        Tensor("token_ids", "int32", (ANY, ANY), doc="[B, max(max_tokens)], 0 after num_tokens"),
        Tensor("num_tokens", "int32"),
    ),
    doc="continue each prompt by max_tokens words, decoded with a key/value cache",
)

NEXT_TOKEN = Signature(
    "serving_default",
    inputs=(PROMPT,),
    outputs=(Tensor("probabilities", "float32", (ANY, ANY), doc="[B, vocab_size]"),),
    doc="probabilities of the word after each prompt",
)

SCORE = Signature(
    "score",
    inputs=(Tensor("text", "string", doc="at least two words"),),
    outputs=(
        Tensor("log_likelihood", "float32", doc="nats of words 2..n given the previous ones"),
        Tensor("num_tokens", "int32"),
        Tensor("perplexity", "float32"),
    ),
    doc="log-likelihood and perplexity of each text",
)

CONTRACT = Contract(
    MODEL,
    (GENERATE, NEXT_TOKEN, SCORE),
    LIMITS,
    doc="Transformer language model sampled with softmax temperature",
)
