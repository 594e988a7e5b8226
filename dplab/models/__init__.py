"""Deblurring networks of the book and a registry to build them by name.

| name | class | paper | input |
| --- | --- | --- | --- |
| ``dpdnet`` | :class:`DPDNet` | Abuolaim & Brown, ECCV 2020 | ``[left, right]``, 6 ch |
| ``dpdnet_single`` | :class:`DPDNet` | same, single image ("DPDNet (single)") | image, 3 ch |
| ``rdpd`` | :class:`RDPD` | Abuolaim et al., ICCV 2021, Sec. 4 | ``[left, right, radial]``, 7 ch, frames or sequences |
| ``rspd`` | :class:`RDPD` | same, supplement Table S3 | ``[view, radial]``, 4 ch |
| ``drbnet`` | :class:`DRBNet` | Ruan et al., CVPR 2022 | image, 3 ch |
| ``drbnet_dual`` | :class:`DRBNet` | same, dual-pixel model of the code | ``[left, right]``, 6 ch |
| ``mdp`` | :class:`MDP` | Abuolaim et al., WACV 2022 | image, 3 ch -> left, right, sharp |
| ``mdp_single_task`` | :class:`MDPSingleTask` | same, Table 3 baselines | image, 3 ch |

Every model takes and returns ``(B, C, H, W)`` float tensors in [0, 1] (dplab convention:
each DP view about half the brightness, ``combined = left + right``) and accepts any H and W
(padded inside to the multiple its poolings need, outputs cropped back).

Shipped, CPU-trained weights of reduced-width networks: ``pretrained("dpdnet")`` returns one
ready to run (:mod:`dplab.models.shipped`; ``list_pretrained()`` names them).

Counting parameters of the big networks is instant on the ``meta`` device::

    with torch.device("meta"):
        n = count_parameters(build("dpdnet"))
"""

from dplab.models.blocks import pad_to_multiple
from dplab.models.convlstm import ConvLSTM, ConvLSTMCell, LSTMState
from dplab.models.dpdnet import DPDNet
from dplab.models.drbnet import DRBNET_VARIANTS, DRBNet, DynamicResidualBlock, apply_pixel_kernels
from dplab.models.mdp import MDP, MDPOutput, MDPSingleTask
from dplab.models.rdpd import RDPD
from dplab.models.registry import REFERENCE_PARAMS, build, count_parameters, from_checkpoint, list_models, model_spec
from dplab.models.shipped import list_pretrained, pretrained

__all__ = [
    "build", "list_models", "count_parameters", "REFERENCE_PARAMS", "model_spec", "from_checkpoint",
    "pretrained", "list_pretrained",
    "DPDNet", "RDPD", "DRBNet", "MDP", "MDPSingleTask", "MDPOutput",
    "ConvLSTM", "ConvLSTMCell", "LSTMState", "DynamicResidualBlock", "apply_pixel_kernels",
    "pad_to_multiple", "DRBNET_VARIANTS",
]
