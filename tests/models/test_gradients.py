"""Every parameter of DPDNet and RDPD receives a gradient (issue 7): nothing is disconnected."""

import pytest
import torch

from dplab.models import build


@pytest.mark.parametrize("name, channels, shape", [
    ("dpdnet", 6, (2, 6, 32, 32)),
    ("dpdnet_single", 3, (2, 3, 32, 32)),
    ("rdpd", 7, (2, 3, 7, 32, 32)),  # a sequence: the ConvLSTM's recurrent weights need t > 1
    ("rspd", 4, (2, 3, 4, 32, 32)),
])
def test_gradient_reaches_every_parameter(name, channels, shape):
    torch.manual_seed(0)
    model = build(name, widths=(4, 8, 8, 8)).train()
    if hasattr(model, "convlstm") or name in ("rdpd", "rspd"):
        model.eval()  # dropout masks could zero a whole gate input in such a tiny net
    out = model(torch.rand(*shape))
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"{name}: parameters without gradient: {missing}"
