import sys, tempfile, pathlib, torch
sys.path.insert(0, "tests")
from gemma3_oracle import tiny_hf_gemma3, load_hf
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
import peft, inspect
d = pathlib.Path(tempfile.mkdtemp())
tiny_hf_gemma3(d / "base")
for kw in ({}, {"ensure_weight_tying": True}):
    m = load_hf(d / "base")
    p = get_peft_model(m, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["embed_tokens"], **kw))
    print([n for n, q in p.named_parameters() if q.requires_grad])
    with torch.no_grad():
        p.base_model.model.model.embed_tokens.modules_to_save["default"].weight.add_(1.0)
    print("head uses copy?", p.base_model.model.lm_head.weight.data_ptr() == p.base_model.model.model.embed_tokens.modules_to_save["default"].weight.data_ptr(), type(p.base_model.model.lm_head))
    p.save_pretrained(d / f"a{len(kw)}")
    with safe_open(d / f"a{len(kw)}" / "adapter_model.safetensors", "pt") as f:
        print({k: tuple(f.get_tensor(k).shape) for k in f.keys()})
    print(open(d / f"a{len(kw)}" / "adapter_config.json").read()[:2000])
