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

# The sampling settings of `generate`; the step-by-step signatures take them too.
SETTINGS = (
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
)

GENERATE = Signature(
    "generate",
    inputs=(PROMPT, *SETTINGS),
    outputs=(
        Tensor("text", "string", doc="prompt + continuation"),
        Tensor("continuation", "string"),
        Tensor("token_ids", "int32", (ANY, ANY), doc="[B, max(max_tokens)], 0 after num_tokens"),
        Tensor("num_tokens", "int32"),
    ),
    doc="continue each prompt by max_tokens words, decoded with a key/value cache",
)

# The decoding state that `generate_start` returns and `generate_step` takes and returns: the
# whole state of the decoding loop of `generate`, the key/value cache included, so that any TF
# Serving can run a generation one word per Predict call and a client can show words as they come.
STATE = (
    Tensor("position", "int32", doc="position of `token` in the sequence (the same in every row)"),
    Tensor("token", "int32", doc="the word id at `position` (a prompt word or a generated one)"),
    Tensor(
        "keys",
        "float32",
        (ANY, ANY, ANY, ANY, ANY),
        doc="[B, layers, heads, position, head_dim] attention keys of positions 0..position-1",
    ),
    Tensor("values", "float32", (ANY, ANY, ANY, ANY, ANY), doc="like keys: attention values"),
    Tensor("prompt_ids", "int32", (ANY, ANY), doc="[B, P] the prompt word ids kept, right-padded"),
    Tensor("prompt_length", "int32", doc="prompt words kept (after the context policy)"),
)
# What each call says about the positions it decoded ([B, K]: K = 1 for `generate_start`, up to
# `steps` for `generate_step`), for the caller to show.
WORDS = (
    Tensor(
        "index",
        "int32",
        (ANY, ANY),
        doc="[B, K] index in the continuation of each decoded position; < 0 in the prompt",
    ),
    Tensor("token_ids", "int32", (ANY, ANY), doc="[B, K] the word id at each decoded position"),
    Tensor(
        "word",
        "string",
        (ANY, ANY),
        doc="[B, K] the word where 0 <= index < max_tokens, else empty",
    ),
    Tensor("done", "bool", doc="no words come after this call for this row"),
)
STEPS = Tensor(
    "steps",
    "int32",
    doc="positions to decode in this call, at most (fewer once every row is done); the same "
    "for all rows",
    default=16,
    low=1,
)

GENERATE_START = Signature(
    "generate_start",
    inputs=GENERATE.inputs,
    outputs=(*STATE, *WORDS),
    doc="first call of a word-by-word `generate`: reads the prompt, returns the decoding state "
    "and the first position's word",
)

GENERATE_STEP = Signature(
    "generate_step",
    inputs=(*SETTINGS, *STATE, STEPS),
    outputs=(*STATE, *WORDS),
    doc="next call of a word-by-word `generate`: decodes `steps` more positions from the state; "
    "the same settings give the words `generate` gives",
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
    (GENERATE, GENERATE_START, GENERATE_STEP, NEXT_TOKEN, SCORE),
    LIMITS,
    doc="Transformer language model sampled with softmax temperature",
)
