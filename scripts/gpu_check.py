"""GPU smoke check for maintainers, on the offline demo models (needs a CUDA GPU and bitsandbytes).

Loads the Chinese-Alpaca-2-7B stand-in in 4-bit, 8-bit and 16-bit with the transformers back end,
trains a QLoRA adapter for 30 steps and a 16-bit LoRA for 10, and checks that the streaming merge of
the QLoRA adapter reproduces PEFT's logits.

    python scripts/gpu_check.py
"""
import time
from pathlib import Path
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
import bitsandbytes, transformers, peft
print("bnb", bitsandbytes.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
from helpers.demo import use_demo_assets
demo = use_demo_assets("/tmp/demo")
from helpers.chat import load_backend
for q in ("4bit", "8bit", None):
    t0 = time.time()
    b = load_backend("chinese-alpaca-2-7b", backend="transformers", quantization=q)
    reply = b.chat("请详细介绍一下北京的名胜古迹。", max_new_tokens=16, temperature=0.0, do_sample=False)
    m = b.model
    print(f"[infer {q}] device={next(m.parameters()).device} dtype={next(m.parameters()).dtype} "
          f"linear={type(m.model.layers[0].self_attn.q_proj).__name__} reply={reply!r} {time.time()-t0:.1f}s", flush=True)
    del b, m; torch.cuda.empty_cache()
from helpers.train import FinetuneConfig, finetune
out = Path("/tmp/qlora")
cfg = FinetuneConfig(base=str(demo / "chinese-alpaca-2-7b"), data=str(demo / "data" / "sft_zh.json"), out=str(out),
                     max_steps=30, lr=2e-3, lora_r=8, lora_alpha=16, load_in_4bit=True, batch_size=4, grad_accum=1, save_steps=100)
r = finetune(cfg)
print(f"[qlora] steps={r.global_step} first_loss={r.first_loss:.3f} last_loss={r.last_loss:.3f} tok/s={r.tokens_per_second:.0f}", flush=True)
print("[qlora] files", sorted(p.name for p in out.iterdir()))
# merge the QLoRA adapter (fp16 base) and compare with PEFT on the fp32 base
from helpers.merge import MergeOptions, Recipe, merge
merge(Recipe(str(demo / "chinese-alpaca-2-7b"), [str(out)]), "/tmp/qlora-merged",
      MergeOptions(fmt="hf", progress=False))
from transformers import AutoModelForCausalLM
from peft import PeftModel
ids = torch.tensor([[1, 20, 30, 40, 50, 60, 70]])
base = AutoModelForCausalLM.from_pretrained(demo / "chinese-alpaca-2-7b", dtype=torch.float32)
ref = PeftModel.from_pretrained(base, out)
with torch.no_grad():
    a = ref(ids).logits; b = AutoModelForCausalLM.from_pretrained("/tmp/qlora-merged", dtype=torch.float32)(ids).logits
print(f"[qlora merge] rel err vs PEFT: {((a-b).norm()/a.norm()).item():.2e}")
cfg16 = FinetuneConfig(base=str(demo / "chinese-alpaca-2-7b"), data=str(demo / "data" / "sft_zh.json"), out="/tmp/lora16",
                       max_steps=10, lr=2e-3, lora_r=8, lora_alpha=16, load_in_4bit=False, batch_size=4, grad_accum=1)
r16 = finetune(cfg16)
print(f"[lora 16-bit GPU] steps={r16.global_step} first={r16.first_loss:.3f} last={r16.last_loss:.3f}")
