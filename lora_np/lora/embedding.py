"""LoraEmbedding: LoRA on the token embedding ``wte``, PEFT's ``lora.Embedding`` with its names and layouts.

With E (V, C) the frozen table, ``lora_embedding_A`` (r, V) and ``lora_embedding_B`` (C, r):

    ΔE = s · Aᵀ Bᵀ  (V, C)            y = E[idx] + s · (Aᵀ)[idx] Bᵀ

so a token's update is its column of A (r numbers) times Bᵀ. A starts at 0 and B ~ N(0, 1), the
reverse of a Linear's choice (loralib's: the lookup picks columns of A, B is shared). The backward
comes from the primitive ops (embedding's scatter-add into Aᵀ, a matmul, a transpose).

**The tied LM head.** GPT-2 computes its logits with the same E (``logits = h Eᵀ``). PEFT 0.21.2
adapts only the lookup: the LM head keeps the base E (its tying code knows ``embed_tokens`` and
``lm_head``, not GPT-2's ``wte``, so ``ensure_weight_tying`` has no effect here). This layer does the
same, because ``model.transformer.wte.weight`` stays the base Parameter that the head reads. PEFT's
``merge_adapter`` then writes E + ΔE into the shared weight, which changes the LM head too: the merged
model computes another function than the adapter did (peft#2777). ``merge_lora`` here refuses
instead of doing that silently.
"""

from .. import ops
from ..autograd import Parameter
from ..nn import Embedding, ParameterDict
from .init import check_embedding_init, embedding_factors
from .layer import AdaptedLayer


class LoraEmbedding(AdaptedLayer):
    def __init__(self, base):
        super().__init__()
        if not isinstance(base, Embedding):
            raise TypeError(f"LoraEmbedding wraps an Embedding; got {type(base).__name__}")
        self.num_embeddings, self.embedding_dim = base.num_embeddings, base.embedding_dim
        self._init_state(base)
        self.lora_embedding_A, self.lora_embedding_B = ParameterDict(), ParameterDict()

    @staticmethod
    def file_shapes(base, config):
        return {"lora_embedding_A": (config.r, base.num_embeddings), "lora_embedding_B": (base.embedding_dim, config.r)}

    @staticmethod
    def check_config(config):
        """DoRA, PiSSA and OLoRA are Linear-layer methods here: refused with what is accepted."""
        if config.use_dora:
            raise ValueError("use_dora=True applies to Linear layers (c_attn, c_proj, c_fc) in lora_np; the token "
                             "embedding 'wte' takes plain LoRA: drop 'wte' from target_modules or set use_dora=False")
        check_embedding_init(config.init_lora_weights)

    def add_adapter(self, name, config):
        self.check_config(config)
        a, b = embedding_factors(self.num_embeddings, self.embedding_dim, config.r, config.init_lora_weights,
                                 self.weight.dtype)
        self.lora_embedding_A[name], self.lora_embedding_B[name] = Parameter(a), Parameter(b)
        self.scaling[name], self.r[name] = config.scaling, config.r

    def delete_adapter(self, name):
        del self.lora_embedding_A[name], self.lora_embedding_B[name]
        del self.scaling[name], self.r[name]

    def adapter_parameters(self, name):
        return [self.lora_embedding_A[name], self.lora_embedding_B[name]]

    def file_tensors(self, name):
        return {"lora_embedding_A": self.lora_embedding_A[name], "lora_embedding_B": self.lora_embedding_B[name]}

    def factors(self, name):
        """(A (r, V), B (C, r), s): ΔE = s·AᵀBᵀ in E's (V, C) layout."""
        return self.lora_embedding_A[name].data, self.lora_embedding_B[name].data, self.scaling[name]

    def merge(self):
        if self.active_adapter is not None and self.merged_adapter is None:
            raise ValueError("merging a LoRA on 'wte' would also change GPT-2's tied LM head (it reads the same "
                             "weight), so the merged model would differ from the adapted one; PEFT 0.21.2 does this "
                             "silently. Keep the adapter unmerged (save_adapter), or train without 'wte' in "
                             "target_modules")

    def unmerge(self):
        pass

    def to_base(self):
        return Embedding.from_weight(self.weight)

    def forward_with(self, idx, name):
        y = ops.embedding(idx, self.weight)
        if name is None:
            return y
        a, b = self.lora_embedding_A[name], self.lora_embedding_B[name]
        return y + ops.matmul(ops.embedding(idx, ops.transpose(a)), ops.transpose(b)) * self.scaling[name]

    def extra_repr(self):
        return (f"{self.num_embeddings}, {self.embedding_dim}, adapters={self.lora_embedding_A.keys()}, "
                f"active={self.active_adapter!r}")
