"""The memory estimate counts the parameters of the model a config describes: the family spec's
count (its tensor shapes, summed) equals the number of parameters of the model built from that config (and, for the
Llama family, of transformers' model of the same config.json), GPT-2 with and without biases, Llama
tied and untied with grouped-query attention, Qwen2's q/k/v biases, Qwen3's head_dim and q/k norms."""

import numpy as np
import pytest

from lora_np import GPT, GPTConfig
from lora_np.app.memory import parameter_count, run_bytes
from lora_np.models import Llama, LlamaConfig, family_of

GPT_CONFIGS = [GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=8),
               GPTConfig(vocab_size=37, block_size=16, n_layer=3, n_head=4, n_embd=16, bias=False)]
SMALL = dict(vocab_size=41, hidden_size=16, intermediate_size=24, num_hidden_layers=2, max_position_embeddings=32)
LLAMA_CONFIGS = {
    "llama tied, GQA": LlamaConfig(**SMALL, num_attention_heads=4, num_key_value_heads=2),
    "llama untied, MHA": LlamaConfig(**SMALL, num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False),
    "llama attention and mlp biases": LlamaConfig(**SMALL, num_attention_heads=4, num_key_value_heads=1,
                                                  qkv_bias=True, o_bias=True, mlp_bias=True),
    "qwen2": LlamaConfig(**SMALL, num_attention_heads=4, num_key_value_heads=2, qkv_bias=True,
                         tie_word_embeddings=False, model_type="qwen2"),
    "qwen3": LlamaConfig(**SMALL, num_attention_heads=4, num_key_value_heads=2, head_dim=6, qk_norm=True,
                         model_type="qwen3"),
}


def _built_count(model):
    return sum(p.data.size for p in model.parameters())


@pytest.mark.parametrize("config", GPT_CONFIGS, ids=["bias", "no bias"])
def test_gpt_count_equals_the_built_model(config):
    assert parameter_count(config) == _built_count(GPT(config))
    V, T, C, L = config.vocab_size, config.block_size, config.n_embd, config.n_layer
    if config.bias:
        closed_form = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    else:  # no Linear biases, LayerNorms with weights only
        closed_form = V * C + T * C + L * (12 * C * C + 2 * C) + C
    assert parameter_count(config) == closed_form  # GPT-2's count written out (memory.py's docstring)


@pytest.mark.parametrize("name", list(LLAMA_CONFIGS))
def test_llama_family_count_equals_the_built_model(name):
    config = LLAMA_CONFIGS[name]
    assert parameter_count(config) == _built_count(Llama(config))
    V, T, C, L = config.vocab_size, config.max_position_embeddings, config.hidden_size, config.num_hidden_layers
    assert parameter_count(config) != V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C  # GPT-2's, used before


def _hf_model(config):
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                  intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                  num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                  tie_word_embeddings=config.tie_word_embeddings, max_position_embeddings=32)
    if config.model_type == "qwen3":
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=config.head_dim))
    if config.model_type == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, head_dim=config.head_dim,
                                                                  attention_bias=config.qkv_bias,
                                                                  mlp_bias=config.mlp_bias))


@pytest.mark.parametrize("name", list(LLAMA_CONFIGS))
def test_llama_family_count_equals_transformers(name):
    """An independent oracle: transformers' own model of the same sizes (tied weights counted once)."""
    config = LLAMA_CONFIGS[name]
    assert family_of(config).parameter_count(config) == _hf_model(config).num_parameters()


def test_the_estimate_weighs_an_untied_head_and_wide_mlp():
    """run_bytes' weights term is the family's count in bytes of the dtype."""
    config = LLAMA_CONFIGS["qwen2"]
    for itemsize in (2, 4):
        assert run_bytes(config, 1, 8, 0, itemsize=itemsize)[1]["weights"] == _built_count(Llama(config)) * itemsize
    assert np.isclose(run_bytes(GPT_CONFIGS[0], 1, 8, 0)[1]["weights"], 4 * _built_count(GPT(GPT_CONFIGS[0])))
