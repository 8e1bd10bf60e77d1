"""The text LM: masking, the cached generator against a full-recompute reference, the exported
signatures (determinism, sampling controls, validation, scoring) and the sampling callback.

A tiny Transformer is trained for a few seconds on reviews from a small random grammar, so that
its distributions are peaked enough for the sampling tests to mean something.
"""

from __future__ import annotations

import glob
import math
import os

import keras
import numpy as np
import pytest
import session_path
import tensorflow as tf

import contracts
from contracts import text_lm
from models.text.callbacks import SampleTextCallback
from models.text.export import export_text_lm
from models.text.generator import TextGenerator
from models.text.lm import build_lm, build_unigram_lm, compile_lm
from models.text.metrics import masked_nll, perplexity
from models.text.samplers import filter_top_k_top_p, inverse_cdf, make_sampler, needs_filtering
from models.text.standardize import (
    PAD_ID,
    UNK_ID,
    standardize,
    tokenize,
    vocabulary_with_specials,
)

SEQUENCE_LENGTH = 24
MAX_NEW_TOKENS = 12
MAX_BATCH = 8

SUBJECTS = ["this movie", "the film", "this film", "the story"]
ADVERBS = ["very", "really", "so", "not"]
ADJECTIVES = ["good", "bad", "great", "boring", "funny", "awful"]
NOUNS = ["acting", "plot", "music", "ending"]


def random_review(rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(rng.integers(1, 3)):
        sentences.append(
            f"{rng.choice(SUBJECTS).capitalize()} was {rng.choice(ADVERBS)} "
            f"{rng.choice(ADJECTIVES)}, and the {rng.choice(NOUNS)} was {rng.choice(ADJECTIVES)}."
        )
    return "<br /><br />".join(sentences)


def encode(texts: list[str], vocabulary: list[str]) -> list[list[int]]:
    index = {word: i for i, word in enumerate(vocabulary)}
    words = tokenize(tf.constant(texts)).to_list()
    return [[index.get(w.decode(), UNK_ID) for w in row] for row in words]


def language_model_pairs(sequences: list[list[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (inputs, targets) with targets shifted by one word, like the pipeline's."""
    padded = np.zeros((len(sequences), length + 1), np.int64)
    for row, ids in enumerate(sequences):
        ids = ids[: length + 1]
        padded[row, : len(ids)] = ids
    return padded[:, :-1], padded[:, 1:]


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    reviews = [random_review(rng) for _ in range(1200)]
    words = sorted({w.decode() for row in tokenize(tf.constant(reviews)).to_list() for w in row})
    vocabulary = vocabulary_with_specials(words)
    inputs, targets = language_model_pairs(encode(reviews, vocabulary), SEQUENCE_LENGTH)
    return {"reviews": reviews, "vocabulary": vocabulary, "inputs": inputs, "targets": targets}


@pytest.fixture(scope="module")
def trained(corpus):
    keras_seed = 1
    tf.keras.utils.set_random_seed(keras_seed)
    model = build_lm(len(corpus["vocabulary"]), SEQUENCE_LENGTH, 32, 64, 2, num_layers=2)
    compile_lm(model, learning_rate=3e-3)
    train = corpus["inputs"][:1000], corpus["targets"][:1000]
    untrained_loss = model.evaluate(*train, batch_size=500, verbose=0)[0]
    history = model.fit(*train, batch_size=50, epochs=4, verbose=0).history
    return model, {"untrained_loss": untrained_loss, **history}


@pytest.fixture(scope="module")
def loaded(trained, corpus, tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("text_lm") / "1")
    export_text_lm(
        trained[0],
        corpus["vocabulary"],
        export_dir,
        max_new_tokens=MAX_NEW_TOKENS,
        max_batch_size=MAX_BATCH,
        max_temperature=5.0,
    )
    return export_dir, session_path.load(export_dir)


def generate(
    loaded_model, prompts, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=0, top_p=1.0, seed=0
):
    """Calls the `generate` signature, broadcasting scalar settings over the prompts."""
    count = len(prompts)

    def column(value, dtype):
        return tf.constant(np.broadcast_to(np.asarray(value), [count]), dtype)

    outputs = loaded_model.signatures["generate"](
        prompt=tf.constant(prompts, tf.string),
        max_tokens=column(max_tokens, tf.int32),
        temperature=column(temperature, tf.float32),
        top_k=column(top_k, tf.int32),
        top_p=column(top_p, tf.float32),
        seed=column(seed, tf.int64),
    )
    return {name: value.numpy() for name, value in outputs.items()}


def generate_word_by_word(
    loaded_model, prompts, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=0, top_p=1.0, seed=0,
    steps=1,
):
    """`generate` through `generate_start` and `generate_step` (`steps` positions a call), as a
    streaming client runs it: (continuations, token ids per row, number of calls)."""
    count = len(prompts)
    settings = {
        name: np.broadcast_to(np.asarray(value, dtype), [count])
        for name, value, dtype in [
            ("max_tokens", max_tokens, np.int32),
            ("temperature", temperature, np.float32),
            ("top_k", top_k, np.int32),
            ("top_p", top_p, np.float32),
            ("seed", seed, np.int64),
        ]
    }
    words, ids = [[] for _ in prompts], [[] for _ in prompts]
    start = loaded_model.signatures["generate_start"]
    outputs = start(prompt=np.array(prompts, object), **settings)
    calls = 1
    while True:
        outputs = {name: value.numpy() for name, value in outputs.items()}
        for row in range(count):
            for index, word, token in zip(outputs["index"][row], outputs["word"][row],
                                          outputs["token_ids"][row], strict=True):
                if 0 <= index < settings["max_tokens"][row]:
                    assert index == len(words[row])  # in order, none skipped
                    words[row].append(word.decode())
                    ids[row].append(int(token))
                else:
                    assert word == b""
        if outputs["done"].all():
            return [" ".join(w) for w in words], ids, calls
        state = {t.name: outputs[t.name] for t in text_lm.STATE}
        outputs = loaded_model.signatures["generate_step"](
            **settings, **state, steps=np.full([count], steps, np.int32)
        )
        calls += 1


def reference_continuation(model, prompt_ids, count, temperature=0.0, uniforms=None):
    """The chapter's loop: re-run the whole model on the whole sequence for every new word."""
    ids = list(prompt_ids)
    for k in range(count):
        logits = model(np.array([ids]), training=False)[0, -1].numpy().astype(np.float64)
        logits[[PAD_ID, UNK_ID]] = -np.inf
        if temperature == 0:
            ids.append(int(np.argmax(logits)))
        else:
            probabilities = np.exp((logits - logits.max()) / temperature)
            cumulative = np.cumsum(probabilities / probabilities.sum())
            ids.append(int(np.sum(cumulative <= uniforms[k] * cumulative[-1])))
    return ids[len(prompt_ids) :]


# --- standardization -----------------------------------------------------------------------


def test_standardize_like_text_vectorization_and_strips_br_tags():
    texts = tf.constant([["Great movie!<br /><br />I LOVED it, didn't you?"], ["A<BR/>b"]])
    assert standardize(texts).shape == (2, 1)
    graph_standardize = tf.function(lambda t: tokenize(t))
    assert graph_standardize(tf.constant(["Hello, World.<br />Bye"])).to_list() == [
        [b"hello", b"world", b"bye"]
    ]
    assert tokenize(texts).to_list() == [
        [[b"great", b"movie", b"i", b"loved", b"it", b"didnt", b"you"]],
        [[b"a", b"b"]],
    ]


def test_vocabulary_convention():
    vocabulary = vocabulary_with_specials(["the", "[UNK]", "movie", ""])
    assert vocabulary == ["", "[UNK]", "the", "movie"]
    assert vocabulary[PAD_ID] == "" and vocabulary[UNK_ID] == "[UNK]"


# --- training ------------------------------------------------------------------------------


def test_loss_falls_and_ignores_padding(trained, corpus):
    model, history = trained
    assert history["untrained_loss"] > 0.9 * math.log(len(corpus["vocabulary"]))
    assert history["loss"][-1] < 0.3 * history["untrained_loss"]
    assert history["accuracy"][-1] > 0.5
    inputs, targets = corpus["inputs"][1000:1064], corpus["targets"][1000:1064]
    assert (targets == PAD_ID).mean() > 0.2  # the check below is about something
    log_probs = tf.nn.log_softmax(model(inputs, training=False)).numpy()
    token_nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    counted = targets != PAD_ID
    loss, accuracy = model.evaluate(inputs, targets, batch_size=64, verbose=0)
    assert loss == pytest.approx(token_nll[counted].mean(), rel=1e-4)
    assert loss != pytest.approx(token_nll.mean(), rel=1e-2)
    hits = log_probs.argmax(-1) == targets
    assert accuracy == pytest.approx(hits[counted].mean(), abs=1e-6)


def test_models_survive_keras_save_and_load(trained, corpus, tmp_path):
    counts = np.arange(len(corpus["vocabulary"]))
    for model in (trained[0], build_unigram_lm(counts, SEQUENCE_LENGTH)):
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
        inputs = corpus["inputs"][:4]
        np.testing.assert_array_equal(model(inputs).numpy(), reloaded(inputs).numpy())


def test_transformer_beats_unigram_baseline(trained, corpus):
    model, _ = trained
    counts = np.bincount(corpus["targets"][:1000].ravel(), minlength=len(corpus["vocabulary"]))
    counts[PAD_ID] = 0
    unigram = build_unigram_lm(counts, SEQUENCE_LENGTH)
    held_out = tf.data.Dataset.from_tensor_slices(
        (corpus["inputs"][1000:], corpus["targets"][1000:])
    ).batch(64)
    unigram_logits = unigram(corpus["inputs"][:2]).numpy()
    assert unigram_logits.shape == (2, SEQUENCE_LENGTH, len(corpus["vocabulary"]))
    assert np.exp(unigram_logits[0, 0]).sum() == pytest.approx(1.0, rel=1e-5)
    assert perplexity(model, held_out) < 0.5 * perplexity(unigram, held_out)


# --- the cached generator ------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["random", "trained"])
def test_cached_greedy_equals_full_recompute(weights, trained, corpus):
    if weights == "trained":
        model = trained[0]
    else:  # untrained logits are nearly flat, so any cache error would change the argmax
        tf.keras.utils.set_random_seed(7)
        model = build_lm(len(corpus["vocabulary"]), SEQUENCE_LENGTH, 16, 32, 2, num_layers=3)
    generator = TextGenerator(model, corpus["vocabulary"], max_new_tokens=MAX_NEW_TOKENS)
    prompts = [
        "this movie",
        "the plot was really",
        "awful",
        "the film was so funny and the music",
        "the",
        "the acting",
    ]
    max_tokens = [MAX_NEW_TOKENS, 5, MAX_NEW_TOKENS, 9, 3, MAX_NEW_TOKENS]
    prompt_ids = encode(prompts, corpus["vocabulary"])
    # A batch of 2 and one of 6 (the attention switches implementation above 4 examples).
    for batch in (slice(0, 2), slice(0, 6)):
        count = len(prompts[batch])
        outputs = generator.generate(
            prompt=tf.constant(prompts[batch]),
            max_tokens=tf.constant(max_tokens[batch]),
            temperature=tf.zeros([count]),
            top_k=tf.zeros([count], tf.int32),
            top_p=tf.ones([count]),
            seed=tf.zeros([count], tf.int64),
        )
        outputs = {name: value.numpy() for name, value in outputs.items()}
        for row, ids in enumerate(prompt_ids[batch]):
            count = int(outputs["num_tokens"][row])
            expected = reference_continuation(model, ids, count)
            assert outputs["token_ids"][row, :count].tolist() == expected
            assert (outputs["token_ids"][row, count:] == PAD_ID).all()


def test_cached_sampling_equals_full_recompute_with_same_randomness(trained, corpus):
    model = trained[0]
    generator = TextGenerator(model, corpus["vocabulary"], max_new_tokens=MAX_NEW_TOKENS)
    seed, temperature = 11, 1.3
    outputs = generator.generate(
        prompt=tf.constant(["the story"]),
        max_tokens=tf.constant([MAX_NEW_TOKENS]),
        temperature=tf.constant([temperature]),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        seed=tf.constant([seed], tf.int64),
    )
    uniforms = tf.random.stateless_uniform([MAX_NEW_TOKENS], tf.constant([seed, 0], tf.int64))
    expected = reference_continuation(
        model,
        encode(["the story"], corpus["vocabulary"])[0],
        MAX_NEW_TOKENS,
        temperature,
        uniforms.numpy(),
    )
    assert outputs["token_ids"].numpy()[0].tolist() == expected


def reference_filter(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Which words top-k then top-p keep, by a full sort (the textbook definition)."""
    ranked = np.argsort(-logits)[: top_k or len(logits)]
    probabilities = np.exp(logits[ranked] - logits[ranked].max())
    probabilities /= probabilities.sum()
    mass_before = np.cumsum(probabilities) - probabilities
    kept = ranked[: max(1, int(np.sum(mass_before < top_p)))]
    return np.isin(np.arange(len(logits)), kept)


def test_top_k_top_p_filter_with_and_without_the_full_sort():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 50)).astype(np.float32) * 2
    settings = [(0, 1.0), (3, 1.0), (2, 0.5), (0, 0.3), (0, 0.97), (10, 0.9)]
    top_k = np.array([k for k, _ in settings], np.int32)
    top_p = np.array([p for _, p in settings], np.float32)
    expected = np.stack(
        [reference_filter(row, k, p) for row, (k, p) in zip(logits, settings, strict=True)]
    )
    assert expected[3].sum() < 4  # rows 0-3 are resolved from 4 candidates
    assert 3 < expected[4].sum() and 3 < expected[5].sum()  # rows 4, 5 reach past them
    for rows in (slice(0, 4), slice(0, 6)):  # resolved from the candidates; with the full sort
        filtered = filter_top_k_top_p(
            tf.constant(logits[rows]),
            tf.constant(top_k[rows]),
            tf.constant(top_p[rows]),
            candidates=4,
        ).numpy()
        np.testing.assert_array_equal(np.isfinite(filtered), expected[rows])
        np.testing.assert_array_equal(filtered[expected[rows]], logits[rows][expected[rows]])


def test_two_level_inverse_cdf_follows_the_probabilities():
    rng = np.random.default_rng(3)
    probabilities = rng.random((3, 1000)) * (rng.random((3, 1000)) < 0.3)  # mostly zeros
    probabilities[2] = 0.0
    probabilities[2, [0, 999]] = [0.25, 0.75]  # first and last word, across the padding
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    draws = 20_000
    uniforms = (np.arange(draws) + 0.5) / draws  # an even grid: counts follow probabilities
    rows = np.repeat(np.arange(3), draws)
    sampled = inverse_cdf(
        tf.constant(probabilities[rows], tf.float32),
        tf.constant(np.tile(uniforms, 3), tf.float32),
        block_size=64,
    ).numpy()
    assert (probabilities[rows, sampled] > 0).all()
    expected = np.searchsorted(np.cumsum(probabilities, axis=1)[0], uniforms, side="right")
    assert (sampled[:draws] != expected).mean() < 1e-3  # only float rounding at the edges
    for row in range(3):
        counts = np.bincount(sampled[rows == row], minlength=1000) / draws
        np.testing.assert_allclose(counts, probabilities[row], atol=2 / draws)


def test_greedy_rows_take_the_first_argmax_through_the_sampling_path():
    # Greedy rows go through softmax and the inverse CDF (temperature 2^-100, uniform 0): ties,
    # near-ties, banned words and large logits must still give exactly the first argmax.
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(6, 300)).astype(np.float32) * 4
    logits[0, [7, 250]] = logits[0].max() + 1.0  # a tie: the first one wins
    logits[1, 5] = np.nextafter(logits[1].max(), np.float32(np.inf))  # one ulp above the rest
    logits[2, :3] = -np.inf  # banned words
    logits[3] *= 1e6
    logits[4] = 0.0  # all equal: word 0
    logits[5, 299] = logits[5].max() + 1e-3
    count = len(logits)
    for filtering, top_k in [(False, 0), (True, 0), (True, 5)]:
        sampler = make_sampler(
            tf.zeros([count]), tf.fill([count], top_k), tf.ones([count]), filtering=filtering
        )
        uniforms = tf.constant(rng.random(count), tf.float32)  # ignored by greedy rows
        chosen = sampler(tf.constant(logits), uniforms).numpy()
        np.testing.assert_array_equal(chosen, np.argmax(logits, axis=1))
    assert not needs_filtering(tf.zeros([2]), tf.constant([5, 0]), tf.constant([1.0, 0.5]))
    assert needs_filtering(tf.constant([0.0, 1.0]), tf.constant([0, 0]), tf.constant([1.0, 0.5]))


def test_unigram_baseline_generates_through_the_same_code(corpus):
    counts = np.arange(len(corpus["vocabulary"]))
    generator = TextGenerator(
        build_unigram_lm(counts, SEQUENCE_LENGTH), corpus["vocabulary"], max_new_tokens=4
    )
    outputs = generator.generate(
        prompt=tf.constant(["this movie"]),
        max_tokens=tf.constant([4]),
        temperature=tf.constant([0.0]),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        seed=tf.constant([0], tf.int64),
    )
    assert outputs["token_ids"][0].numpy().tolist() == [len(corpus["vocabulary"]) - 1] * 4


def test_generator_rejects_a_vocabulary_off_the_convention(trained, corpus):
    vocabulary = corpus["vocabulary"]
    for bad in (vocabulary[1:], vocabulary[:-1] + ["the"], vocabulary[:-1] + ["two words"]):
        with pytest.raises(ValueError, match="vocabulary"):
            TextGenerator(trained[0], bad, max_new_tokens=4)
    with pytest.raises(
        ValueError, match=rf"max_new_tokens must be in \[0, {SEQUENCE_LENGTH - 1}\]"
    ):
        TextGenerator(trained[0], vocabulary, max_new_tokens=SEQUENCE_LENGTH)


# --- the exported signatures ---------------------------------------------------------------


def test_export_layout_and_limits(loaded, corpus):
    export_dir, model = loaded
    assert set(model.signatures) == set(contracts.contract_for("text_lm").signature_keys())
    sidecar = contracts.read_sidecar(export_dir)
    assert sidecar["model"] == "text_lm" and sidecar["signatures"] == sorted(model.signatures)
    assert sidecar["limits"]["max_new_tokens"] == MAX_NEW_TOKENS
    assert sidecar["limits"]["vocab_size"] == len(corpus["vocabulary"])
    assert "context_policy" in sidecar["info"]
    with open(os.path.join(export_dir, "assets", "vocabulary.txt")) as f:
        assert f.read().split("\n")[:-1] == corpus["vocabulary"][1:]


def test_generate_outputs_and_same_seed_same_text(loaded):
    _, model = loaded
    first = generate(model, ["This movie", "The film"], max_tokens=[5, 3], temperature=1.5, seed=3)
    again = generate(model, ["This movie", "The film"], max_tokens=[5, 3], temperature=1.5, seed=3)
    other = generate(model, ["This movie", "The film"], max_tokens=[5, 3], temperature=1.5, seed=4)
    assert first["token_ids"].shape == (2, 5)
    assert first["num_tokens"].tolist() == [5, 3]
    assert len(first["continuation"][1].split()) == 3
    assert first["text"][0] == b"This movie " + first["continuation"][0]
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert first["continuation"].tolist() != other["continuation"].tolist()


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.0),
        dict(temperature=1.5, seed=[3, 4, 5]),
        dict(temperature=0.8, top_k=5, seed=11, steps=4),
        dict(temperature=1.2, top_p=0.7, seed=[2**40, 7, 0], steps=MAX_NEW_TOKENS),
    ],
)
def test_word_by_word_signatures_give_the_words_of_generate(loaded, settings):
    _, model = loaded
    # Prompts of different lengths and different max_tokens: the longer prompts are fed word by
    # word through the steps while the shorter one already samples, as in `generate`'s loop.
    prompts = ["this movie was", "the", "the film was really not very"]
    max_tokens = [MAX_NEW_TOKENS, 4, 0 if settings.get("top_k") else 7]
    steps = settings.pop("steps", 1)
    expected = generate(model, prompts, max_tokens=max_tokens, **settings)
    continuations, ids, calls = generate_word_by_word(
        model, prompts, max_tokens=max_tokens, steps=steps, **settings
    )
    assert continuations == [c.decode() for c in expected["continuation"]]
    for row, count in enumerate(max_tokens):
        assert ids[row] == expected["token_ids"][row, :count].tolist()
    lengths = [len(p.split()) for p in prompts]
    # start, then `steps` positions a call from the shortest prompt's end to the last word
    positions = max(n + k for n, k in zip(lengths, max_tokens, strict=True)) - min(lengths) - 1
    assert calls == 1 + math.ceil(positions / steps)


def test_word_by_word_state_refuses_what_no_call_made(loaded):
    _, model = loaded
    settings = dict(max_tokens=[5], temperature=[1.0], top_k=[0], top_p=[1.0], seed=[1])
    settings = {name: np.asarray(v, dtype=t.dtype) for (name, v), t in
                zip(settings.items(), text_lm.SETTINGS, strict=True)}
    start = model.signatures["generate_start"](prompt=np.array([b"this movie"]), **settings)
    state = {t.name: start[t.name].numpy() for t in text_lm.STATE}
    assert state["keys"].shape[3] == state["position"][0] == 2
    one = np.array([1], np.int32)
    step = model.signatures["generate_step"](**settings, **state, steps=one)
    assert step["position"].numpy().tolist() == [3] and step["keys"].shape[3] == 3
    three = model.signatures["generate_step"](**settings, **state, steps=np.array([3], np.int32))
    assert three["position"].numpy().tolist() == [5] and three["word"].shape == (1, 3)
    # past the last word (5 after a 2-word prompt: position 6), a call stops there
    many = model.signatures["generate_step"](**settings, **state, steps=np.array([9], np.int32))
    assert many["position"].numpy().tolist() == [6] and many["done"].numpy().all()
    bad_states = {
        "keys": {"keys": state["keys"][:, :, :, :1]},
        "values": {"values": np.zeros_like(step["keys"].numpy())},
        "position": {"position": np.array([SEQUENCE_LENGTH - 1], np.int32)},
        "token": {"token": np.array([10**6], np.int32)},
        "prompt_length": {"prompt_length": np.array([0], np.int32)},
    }
    for name, change in bad_states.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            model.signatures["generate_step"](**settings, **{**state, **change}, steps=one)
        assert f"{name}: must" in error.value.message
    too_hot = {**settings, "temperature": np.array([-1.0], np.float32)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature: must be in"):
        model.signatures["generate_step"](**too_hot, **state, steps=one)
    for bad in ([0], [-3]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"steps: must be one value >= 1"):
            model.signatures["generate_step"](**settings, **state, steps=np.array(bad, np.int32))


def test_greedy_ignores_seed_and_equals_top_k_1(loaded):
    _, model = loaded
    prompts = ["this movie", "the acting was"]
    greedy = generate(model, prompts, temperature=0.0, seed=1)
    assert (
        greedy["text"].tolist()
        == generate(model, prompts, temperature=0.0, seed=99)["text"].tolist()
    )
    top_1 = generate(model, prompts, temperature=1.5, top_k=1, seed=5)
    assert top_1["token_ids"].tolist() == greedy["token_ids"].tolist()
    tiny_top_p = generate(model, prompts, temperature=1.5, top_p=1e-6, seed=5)
    assert tiny_top_p["token_ids"].tolist() == greedy["token_ids"].tolist()


def mean_surprisal(model, temperature, runs=4):
    """Mean -log p (under the model at temperature 1) of sampled words."""
    total, count = 0.0, 0
    for seed in range(runs):
        sampled = generate(
            model,
            ["the story"] * MAX_BATCH,
            temperature=temperature,
            seed=np.arange(MAX_BATCH) + 100 * seed,
        )
        prompt_score = model.signatures["score"](text=tf.constant(["the story"]))
        scores = model.signatures["score"](text=tf.constant(sampled["text"]))
        total -= float(tf.reduce_sum(scores["log_likelihood"])) - MAX_BATCH * float(
            prompt_score["log_likelihood"][0]
        )
        count += int(sampled["num_tokens"].sum())
    return total / count


def test_higher_temperature_means_higher_surprisal(loaded):
    _, model = loaded
    cold, warm, hot = (mean_surprisal(model, t) for t in (0.3, 1.0, 2.5))
    assert cold < warm < hot


def test_padding_and_unk_are_never_generated(loaded):
    _, model = loaded
    for batch in range(4):  # 32 hot samples in batches of the export's maximum of 8
        seeds = np.arange(8) + 8 * batch
        outputs = generate(model, ["this movie zzzunknownword"] * 8, temperature=5.0, seed=seeds)
        for row in range(8):
            ids = outputs["token_ids"][row, : outputs["num_tokens"][row]].tolist()
            assert len(ids) == MAX_NEW_TOKENS and not {PAD_ID, UNK_ID} & set(ids)
            assert "[UNK]" not in outputs["continuation"][row].decode()


def test_filters_restrict_sampling(loaded, corpus):
    _, model = loaded
    probabilities = model.signatures["serving_default"](prompt=tf.constant(["the story was"]))
    ranked = np.argsort(-probabilities["probabilities"].numpy()[0])

    def first_words(**filters):
        return {
            int(word)
            for run in range(3)
            for word in generate(
                model,
                ["the story was"] * MAX_BATCH,
                max_tokens=1,
                temperature=3.0,
                seed=np.arange(MAX_BATCH) + 8 * run,
                **filters,
            )["token_ids"][:, 0]
        }

    unfiltered = first_words()
    top_2 = set(ranked[:2].tolist())
    assert not unfiltered <= top_2 and first_words(top_k=2) <= top_2
    tempered = probabilities["probabilities"].numpy()[0] ** (1 / 3.0)  # top-p follows temperature
    top_mass = np.cumsum(tempered[ranked] / tempered.sum())
    nucleus = set(ranked[: int(np.searchsorted(top_mass, 0.5)) + 1].tolist())
    assert not unfiltered <= nucleus and first_words(top_p=0.5) <= nucleus


def test_mixed_batch_equals_each_example_alone(loaded):
    _, model = loaded
    settings = dict(  # 6 examples: the batch and the single examples attend differently
        prompts=[
            "this movie",
            "the plot was really boring and the",
            "funny",
            "the film",
            "the story was",
            "awful",
        ],
        max_tokens=[MAX_NEW_TOKENS, 4, 7, 0, MAX_NEW_TOKENS, 10],
        temperature=[0.0, 1.0, 0.7, 2.0, 1.2, 0.9],
        top_k=[0, 5, 0, 3, 0, 0],
        top_p=[1.0, 1.0, 0.8, 0.9, 1.0, 0.95],
        seed=[1, 2, 3, 4, 5, 6],
    )
    batch = generate(model, settings["prompts"], *[settings[k] for k in list(settings)[1:]])
    for row in range(6):
        alone = generate(model, *[[settings[k][row]] for k in settings])
        count = batch["num_tokens"][row]
        assert alone["num_tokens"][0] == count
        assert alone["token_ids"][0, :count].tolist() == batch["token_ids"][row, :count].tolist()
        assert alone["text"][0] == batch["text"][row]
    assert batch["text"][3] == b"the film" and batch["continuation"][3] == b""
    nothing = generate(model, ["This film!"], max_tokens=0)
    assert nothing["token_ids"].shape == (1, 0) and nothing["text"][0] == b"This film!"


def test_long_prompts_are_cut_from_the_left(loaded, corpus):
    _, model = loaded
    tail = "the film was very funny and the music was great this movie was so"
    noise = "awful boring not " * 10
    tail_words = tail.split()
    room = SEQUENCE_LENGTH - MAX_NEW_TOKENS
    assert len(tail_words) <= SEQUENCE_LENGTH < len((noise + tail).split())
    kept = " ".join(tail_words[-room:])
    long = generate(model, [noise + tail], temperature=0.8, seed=2)
    short = generate(model, [kept], temperature=0.8, seed=2)
    assert long["token_ids"].tolist() == short["token_ids"].tolist()
    next_word = model.signatures["serving_default"]
    np.testing.assert_allclose(
        next_word(prompt=tf.constant([noise + tail]))["probabilities"].numpy(),
        next_word(prompt=tf.constant([" ".join((noise + tail).split()[-SEQUENCE_LENGTH:])]))[
            "probabilities"
        ].numpy(),
        rtol=1e-5,
        atol=1e-7,
    )


def test_next_token_probabilities(loaded, trained, corpus):
    _, model = loaded
    prompts = ["this movie was", "the", "unknownword and the plot"]
    probabilities = model.signatures["serving_default"](prompt=tf.constant(prompts))[
        "probabilities"
    ].numpy()
    assert probabilities.shape == (3, len(corpus["vocabulary"]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    ids = encode(prompts[:1], corpus["vocabulary"])[0]
    expected = tf.nn.softmax(trained[0](np.array([ids]))[0, -1]).numpy()
    np.testing.assert_allclose(probabilities[0], expected, rtol=1e-4, atol=1e-6)
    vocabulary = corpus["vocabulary"]
    assert vocabulary[int(probabilities[0].argmax())] in ["very", "really", "so", "not"]


def test_score_agrees_with_masked_nll(loaded, trained, corpus):
    _, model = loaded
    texts = corpus["reviews"][1100:1108]
    scores = model.signatures["score"](text=tf.constant(texts))
    inputs, targets = language_model_pairs(encode(texts, corpus["vocabulary"]), SEQUENCE_LENGTH)
    assert max(len(ids) for ids in encode(texts, corpus["vocabulary"])) <= SEQUENCE_LENGTH + 1
    total, count = masked_nll(trained[0], tf.data.Dataset.from_tensors((inputs, targets)))
    assert int(scores["num_tokens"].numpy().sum()) == count
    assert -float(scores["log_likelihood"].numpy().sum()) == pytest.approx(total, rel=1e-4)
    per_text = np.exp(-scores["log_likelihood"].numpy() / scores["num_tokens"].numpy())
    np.testing.assert_allclose(scores["perplexity"].numpy(), per_text, rtol=1e-5)


BAD_INPUTS = [
    ("max_tokens", {"max_tokens": -1}, f"[0, {MAX_NEW_TOKENS}]"),
    ("max_tokens", {"max_tokens": MAX_NEW_TOKENS + 1}, f"[0, {MAX_NEW_TOKENS}]"),
    ("temperature", {"temperature": -0.1}, "[0, 5]"),
    ("temperature", {"temperature": 5.5}, "[0, 5]"),
    ("temperature", {"temperature": float("nan")}, "[0, 5]"),
    ("top_k", {"top_k": -1}, "[0, "),
    ("top_k", {"top_k": 10_000}, "[0, "),
    ("top_p", {"top_p": 0.0}, "(0, 1]"),
    ("top_p", {"top_p": 1.5}, "(0, 1]"),
    ("prompt", {"prompts": ["!!! ..."]}, "at least 1 word"),
    ("prompt", {"prompts": ["this movie"] * (MAX_BATCH + 1)}, f"[1, {MAX_BATCH}]"),
    ("prompt", {"prompts": []}, f"[1, {MAX_BATCH}]"),
]


@pytest.mark.parametrize("name, change, allowed", BAD_INPUTS)
def test_bad_generate_inputs_fail_with_the_input_name_and_range(loaded, name, change, allowed):
    _, model = loaded
    request = dict(prompts=["this movie"], max_tokens=3, temperature=1.0, top_k=0, top_p=1.0)
    request.update(change)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        generate(model, **request)
    assert f"{name}:" in error.value.message and allowed in error.value.message


def test_bad_inputs_of_other_signatures(loaded):
    _, model = loaded
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have one value per prompt"):
        model.signatures["generate"](
            prompt=tf.constant(["a", "b"]),
            max_tokens=tf.constant([1]),
            temperature=tf.constant([1.0, 1.0]),
            top_k=tf.constant([0, 0]),
            top_p=tf.constant([1.0, 1.0]),
            seed=tf.constant([0, 0], tf.int64),
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"text: .*at least 2 word"):
        model.signatures["score"](text=tf.constant(["fine text", "one"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"prompt: batch size .*\[1, 8\]"):
        model.signatures["serving_default"](prompt=tf.constant(["a"] * 9))


# --- the training callback -----------------------------------------------------------------


def test_sample_text_callback_writes_samples_each_epoch(corpus, tmp_path):
    model = build_lm(len(corpus["vocabulary"]), SEQUENCE_LENGTH, 16, 32, 2)
    compile_lm(model, learning_rate=3e-3)
    callback = SampleTextCallback(
        corpus["vocabulary"], str(tmp_path), prompt="this movie", max_tokens=6, seed=3
    )
    model.fit(
        corpus["inputs"][:100],
        corpus["targets"][:100],
        batch_size=50,
        epochs=2,
        verbose=0,
        callbacks=[callback],
    )
    assert [epoch for epoch, _ in callback.history] == [0, 1]
    assert list(callback.samples) == [0.2, 0.5, 0.7, 1.0, 1.5]
    for text in callback.samples.values():
        assert text.startswith("this movie ") and len(text.split()) == 2 + 6
    assert callback.generate_samples() == callback.samples
    tags = set()
    for path in glob.glob(str(tmp_path / "samples" / "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value}
    assert tags == {f"temperature_{t:g}" for t in (0.2, 0.5, 0.7, 1.0, 1.5)}
