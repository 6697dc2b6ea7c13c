"""GPU diagnostic: GatedAttention on CUDA (fp32, bf16; each SDPA backend) against the CPU math path."""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ssmkit.layers.gated_attention import GatedAttention


def rel(a, b):
    return float((a.float().cpu() - b).abs().max() / b.abs().max())


torch.manual_seed(0)
attn = GatedAttention(d_model=64, num_heads=4, causal=True)
x = torch.randn(2, 77, 64)
ref = attn(x).detach()
dev = torch.device("cuda")
for dtype in (torch.float32, torch.bfloat16):
    m = GatedAttention(d_model=64, num_heads=4, causal=True).to(dev, dtype)
    m.load_state_dict({k: v.to(dev, dtype) for k, v in attn.state_dict().items()})
    xd = x.to(dev, dtype)
    with torch.no_grad():
        print(dtype, "default", rel(m(xd), ref))
        for be in (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel(be):
                    print(dtype, be.name, rel(m(xd), ref))
            except RuntimeError as err:
                print(dtype, be.name, "n/a", str(err).splitlines()[0][:80])
