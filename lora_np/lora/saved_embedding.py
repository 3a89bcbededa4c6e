"""SavedEmbedding: PEFT's ``modules_to_save`` on the token embedding, a trainable full copy per adapter.

    LoraConfig(r=8, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens"])

PEFT's ``ModulesToSaveWrapper``: the frozen table E (V, C) stays the model's, each adapter gets its
own copy E' (``modules_to_save.<adapter>.weight``, trainable, equal to E at the start) and the lookup
reads the active adapter's copy. The adapter file holds E' under the module's own name,
``base_model.model.model.embed_tokens.weight`` (PEFT drops ``.modules_to_save.<adapter>`` when it saves).

**The tied LM head** keeps reading the base E, as in PEFT 0.21 by default (``ensure_weight_tying``
False): only the lookup changes. Gemma's √C scale applies to the copy's rows as to the table's (the
model scales what the lookup returns). Merging would write E' into the table the head reads too, so it
is refused, as for LoRA on a tied table (``embedding.py``).

The backward is the lookup's (``ops.embedding``: the rows' gradients scatter-added into dE'), but the
gradient is a full (V, C) array, and AdamW keeps two more of that size: on Gemma 3's 262,144 × 640
table that is four tables' worth of memory beside the frozen one (README, Gemma 3).
"""

from .. import ops
from ..nn import Embedding, ModuleDict
from .layer import AdaptedLayer, LoraFactor


class SavedEmbedding(AdaptedLayer):
    def __init__(self, base):
        super().__init__()
        if not isinstance(base, Embedding):
            raise TypeError(f"SavedEmbedding wraps an Embedding; got {type(base).__name__}")
        self.num_embeddings, self.embedding_dim = base.num_embeddings, base.embedding_dim
        self._init_state(base)
        self.modules_to_save = ModuleDict()

    @staticmethod
    def file_shapes(base, config):
        return {"weight": (base.num_embeddings, base.embedding_dim)}

    def add_adapter(self, name, config):
        self.modules_to_save[name] = LoraFactor(self.weight.data.copy())
        self.scaling[name], self.r[name] = 1.0, None  # the names adapter_names() lists; no rank, no scale

    def delete_adapter(self, name):
        del self.modules_to_save[name]
        del self.scaling[name], self.r[name]

    def adapter_parameters(self, name):
        return [self.modules_to_save[name].weight]

    def file_tensors(self, name):
        return {"weight": self.modules_to_save[name].weight}

    def merge(self):
        if self.active_adapter is not None and self.merged_adapter is None:
            raise ValueError("merging a saved copy of the token embedding (modules_to_save) would also change the "
                             "tied LM head, which reads the base table, so the merged model would differ from the "
                             "adapted one. Keep the adapter unmerged (save_adapter)")

    def unmerge(self):
        pass

    def to_base(self):
        return Embedding.from_weight(self.weight)

    def forward_with(self, idx, name):
        return ops.embedding(idx, self.weight if name is None else self.modules_to_save[name].weight)

    def extra_repr(self):
        return (f"{self.num_embeddings}, {self.embedding_dim}, saved copies={list(self.modules_to_save.keys())}, "
                f"active={self.active_adapter!r}")
